"""Benchmark runner: prints side-by-side timings and ratios measured in one run.

Usage: ``python -m benchmarks [name ...]``. Suites: ``parse`` here, plus the ``SUITES`` dict of
every ``benchmarks/bench_*.py`` module (a suite is a function printing a table, returning
``True`` when its targets hold). Options after one suite's name go to that suite when it takes
them: ``python -m benchmarks fuzz --cases 10000 --seed 3``.
Absolute numbers depend on the machine; the ratios are what the targets are stated in.
"""

from __future__ import annotations

import gc
import inspect
import json
import sys
import timeit
from collections.abc import Callable, Sequence

from benchmarks.payloads import PAYLOADS
from benchmarks.timing import bound


def per_call_us(fn: Callable[[], object], *, repeat: int = 7, min_time: float = 0.2) -> float:
    """Best-of-``repeat`` microseconds per call (auto-ranged so each sample takes ``min_time``)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(number, int(number * min_time / 0.2))
    gc_was = gc.isenabled()
    gc.disable()
    try:
        best = min(timer.repeat(repeat=repeat, number=number))
    finally:
        if gc_was:
            gc.enable()
    return best / number * 1e6


def table(rows: Sequence[Sequence[str]], *, left: int = 0) -> str:
    """``rows`` in aligned columns: the first ``left`` columns (labels) left-aligned, the rest
    right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def bench_parse() -> bool:
    """``parse_event(bytes)`` vs ``json.loads(bytes)`` on the seed's three payloads."""
    from omnichannel import parse_event

    target = 1.6  # issue 16: with the runtime dependencies alone
    rows = [("payload", "json.loads µs", "parse_event µs", "ratio", f"target ≤ {target}")]
    ok = True
    for name, body in PAYLOADS.items():
        base = per_call_us(bound(json.loads, body))
        ours = per_call_us(bound(parse_event, body))
        ratio = ours / base
        ok &= ratio <= target
        rows.append(
            (
                name,
                f"{base:.2f}",
                f"{ours:.2f}",
                f"{ratio:.2f}",
                "ok" if ratio <= target else "MISS",
            )
        )
    print("parse_event vs json.loads (one run, best of 7)")
    print(table(rows))
    return ok


SUITES: dict[str, Callable[[], bool]] = {"parse": bench_parse}


def discover() -> dict[str, Callable[[], bool]]:
    """This module's suites plus ``SUITES`` of every ``benchmarks/bench_*.py``."""
    import importlib
    import pkgutil

    import benchmarks

    suites = dict(SUITES)
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            suites.update(module.SUITES)
    return suites


def main(argv: list[str]) -> int:
    suites = discover()
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first_option] or list(suites), argv[first_option:]
    unknown = [n for n in names if n not in suites]
    if unknown:
        print(f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(suites)}")
        return 2
    if options:
        if len(names) != 1 or not inspect.signature(suites[names[0]]).parameters:
            print("options are given to one suite that takes them: python -m benchmarks NAME --…")
            return 2
        suite: Callable[..., bool] = suites[names[0]]
        return 0 if suite(options) else 1
    results = []
    for name in names:
        results.append(suites[name]())
        print()
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
