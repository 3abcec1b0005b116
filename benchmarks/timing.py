"""Interleaved timing of in-process candidates: each round times every candidate once and the
best of the rounds is kept, so a noisy neighbour slows them all alike."""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable
from typing import Any


def bound(fn: Callable[[Any], object], arg: object) -> Callable[[], object]:
    """``fn(arg)`` as a call of no arguments, one Python frame per call like a lambda's
    (``functools.partial`` would skip that frame and so shift every figure)."""

    def call() -> object:
        return fn(arg)

    return call


class Candidate:
    """A callable timed per call; ``prepare(n)`` (untimed) runs before each sample of ``n``
    calls (e.g. to make ``n`` fresh bodies)."""

    def __init__(
        self,
        call: Callable[[], object],
        prepare: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.call = call
        self.prepare = prepare
        self.clock = clock
        self.number = 1
        self.best = float("inf")

    def sample(self, number: int) -> float:
        """Seconds per call over ``number`` calls."""
        if self.prepare is not None:
            self.prepare(number)
        call, clock = self.call, self.clock
        loop = itertools.repeat(None, number)
        start = clock()
        for _ in loop:
            call()
        return (clock() - start) / number

    def calibrate(self, min_time: float) -> None:
        """Find the number of calls that takes about ``min_time``."""
        number = 1
        while True:
            took = self.sample(number) * number
            if took >= min_time / 4:
                self.number = max(1, int(number * min_time / took))
                return
            number *= 4


def interleaved(
    candidates: dict[str, Candidate], *, repeat: int = 7, min_time: float = 0.1
) -> dict[str, float]:
    """Best µs per call of each candidate over ``repeat`` rounds, every candidate once a round."""
    for candidate in candidates.values():
        candidate.calibrate(min_time)
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            for candidate in candidates.values():
                candidate.best = min(candidate.best, candidate.sample(candidate.number))
    finally:
        if gc_was:
            gc.enable()
    return {name: c.best * 1e6 for name, c in candidates.items()}
