"""The protocols a piece of code knows, by id: what the bundle writer and the auditor each look a
job's protocol up in, and refuse, naming the ids they know, when it is not there."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol, TypeVar


class ForProtocol(Protocol):
    """Anything that belongs to one protocol."""

    @property
    def protocol_id(self) -> str: ...


T = TypeVar("T", bound=ForProtocol)


def by_protocol(*entries: T) -> Mapping[str, T]:
    """``entries`` by their protocol id, read-only."""
    return MappingProxyType({entry.protocol_id: entry for entry in entries})


def lookup(entries: Mapping[str, T], protocol_id: str, refuse: Callable[[str], Exception]) -> T:
    """The entry of ``protocol_id``; else raises what ``refuse`` makes of the known ids."""
    try:
        return entries[protocol_id]
    except KeyError:
        raise refuse(", ".join(sorted(entries))) from None
