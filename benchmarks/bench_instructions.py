"""Instructions per call of the turn candidates, counted by valgrind: ``python -m benchmarks
instructions [--calls 2000]``.

Timings on a small shared machine move by a few microseconds from run to run, which hides the
microsecond a change saves or costs. ``valgrind --tool=callgrind`` counts the instructions the
interpreter executes instead, the same count (to well under 1 %) for the same code and input
whatever else the machine is doing. Each candidate runs in its own interpreter under callgrind
twice, with 300 warm-up calls and then 0 or ``--calls`` more; the difference divided by
``--calls`` is its cost per call, free of the start-up and import costs. ``PYTHONHASHSEED`` is
fixed so dicts and sets lay out alike in both runs.

The candidates are those of the ``peers`` suite's turn rows (:mod:`benchmarks.turns`) and
``json.loads`` of the same body. Instructions are not time (the framework's code runs at fewer
instructions per cycle than ``json``'s C loop), so the ratios here are a little lower than the
timed ones; they say where the instructions go, and whether a change moved them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

CANDIDATES = ("json.loads", "handle", "handle no history", "handle no-op", "floor")
WARM_UP = 300


def _callable(name: str, calls: int) -> Callable[[], object]:
    """The candidate ``name``, prepared for ``calls`` calls (fresh bodies made up front)."""
    from benchmarks.turns import Bodies, floor_candidate, handle_candidate

    if name == "json.loads":
        bodies = Bodies()
        bodies.prepare(1)
        body = bodies.items[0]
        return lambda: json.loads(body)
    if name == "floor":
        candidate, _ = floor_candidate()
    else:
        candidate, _ = handle_candidate(
            noop=name == "handle no-op", history=0 if name == "handle no history" else 20
        )
    assert candidate.prepare is not None
    candidate.prepare(calls)
    return candidate.call


def _child(name: str, calls: int) -> None:
    call = _callable(name, WARM_UP + calls)
    for _ in range(WARM_UP + calls):
        call()


def _collected(name: str, calls: int) -> int:
    """Instructions callgrind counted for a whole child run."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.bench_instructions",
        "--child",
        name,
        str(calls),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run of {name!r} failed: {done.stderr[-2000:]}")
    return int(found.group(1))


def per_call(name: str, calls: int) -> float:
    """Instructions per call of ``name`` (two runs under callgrind)."""
    return (_collected(name, calls) - _collected(name, 0)) / calls


def bench_instructions(argv: Sequence[str] = ()) -> bool:
    """Instructions per call of the turn rows and ``json.loads`` (info; needs valgrind)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks instructions")
    parser.add_argument("--calls", type=int, default=2000, help="calls counted (2000)")
    args = parser.parse_args(list(argv))
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind); skipped")
        return True
    counts = {name: per_call(name, max(1, args.calls)) for name in CANDIDATES}
    floor = counts["json.loads"]
    print(f"instructions per call (valgrind callgrind, {args.calls} calls after {WARM_UP})")
    print(f"{'candidate':32} {'instructions':>13} {'vs json.loads':>14}")
    for name, count in counts.items():
        print(f"{name:32} {count:13,.0f} {count / floor:14.2f}")
    return True


SUITES: dict[str, Callable[..., bool]] = {"instructions": bench_instructions}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(0 if bench_instructions(sys.argv[1:]) else 1)
