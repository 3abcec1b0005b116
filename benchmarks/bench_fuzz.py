"""The fuzz campaign as a benchmark suite: ``python -m benchmarks fuzz [--cases N] [--seed S]
[--time SECONDS] [--http] …`` (see :mod:`benchmarks.fuzz`; ``--help`` lists the options).

The suite holds when no input made ``handle()`` raise, logged a traceback, got an answer outside
its endpoint's documented status table or was acknowledged and then lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from benchmarks import fuzz


def bench_fuzz(argv: Sequence[str] = ()) -> bool:
    """100,000 generated and mutated requests across every inbound endpoint (by default)."""
    return fuzz.main(list(argv)) == 0


SUITES: dict[str, Callable[..., bool]] = {"fuzz": bench_fuzz}
