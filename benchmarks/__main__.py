"""``python -m benchmarks``."""

import sys

from benchmarks.run import main

raise SystemExit(main(sys.argv[1:]))
