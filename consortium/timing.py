"""Phase timings of a round: what a round's result reports and the benchmarks add up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

Timings = dict[str, float]


@contextmanager
def timed(timings: Timings, phase: str) -> Iterator[None]:
    """Adds the seconds the block takes to ``timings[phase]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
