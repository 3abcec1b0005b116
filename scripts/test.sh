#!/bin/sh
# The whole test suite on a fresh machine: makes .venv, installs the package with its test,
# lint and docs extras, then runs lint, types, tests, the docs build and the notebook.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/ruff check omnichannel tests benchmarks examples
.venv/bin/ruff format --check omnichannel tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
.venv/bin/mkdocs build --strict --quiet --site-dir "${TMPDIR:-/tmp}/omnichannel-site"
echo "all checks passed"
