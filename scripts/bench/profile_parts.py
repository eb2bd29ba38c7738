"""Shared by the benchmarks: splitting a cProfile run into named parts of the project.

A part is a function (by path suffix and name), optionally counted only where a given caller
calls it, so that "the gas estimate made while signing the anchor" and "every other estimate"
are told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Key = tuple[str, int, str]  # cProfile's (file, line, function)


@dataclass(frozen=True)
class ProfileLine:
    """One named part of a profiled run."""

    what: str
    calls: int
    seconds: float


def matches(key: Key, where: tuple[str, str]) -> bool:
    """Whether profile ``key`` is the function ``where`` = (path suffix, name)."""
    return key[0].replace("\\", "/").endswith(where[0]) and key[2] == where[1]


def cumulative(
    stats: dict[Key, Any], callee: tuple[str, str], caller: tuple[str, str] | None
) -> tuple[int, float]:
    """Calls and cumulative seconds of ``callee`` (only those from ``caller`` if given)."""
    calls, seconds = 0, 0.0
    for key, (_, ncalls, _, cumtime, callers) in stats.items():
        if not matches(key, callee):
            continue
        if caller is None:
            calls, seconds = calls + ncalls, seconds + cumtime
            continue
        for from_key, entry in callers.items():
            if matches(from_key, caller):
                calls, seconds = calls + entry[0], seconds + entry[3]
    return calls, seconds
