"""The coordinator's write-ahead journal: what it is about to do, written before it does it.

One canonical-JSON object per line, each flushed and fsynced before the action it announces.
A crash can only tear the last line; on open, a torn tail is cut off (it announced nothing
that happened, since the action waits for the fsync), while damage anywhere else is refused,
because then the journal can no longer be trusted to say what was done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consortium.crypto.canonical import jcs
from consortium.errors import ConsortiumError


class CorruptJournal(ConsortiumError):
    """A journal line other than the last does not parse: the journal cannot be trusted."""


class Journal:
    """An append-only, fsynced log of JSON entries, each with a ``kind`` and a ``seq``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._entries = self._load()
        self._file = path.open("ab")

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        entries: list[dict[str, Any]] = []
        offset = 0
        for number, line in enumerate(lines, start=1):
            is_tail = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            if line:
                try:
                    entry = json.loads(line)
                    if not isinstance(entry, dict) or entry.get("seq") != len(entries):
                        raise ValueError("out of sequence")
                except ValueError:
                    if not is_tail:
                        raise CorruptJournal(
                            f"{self.path}: line {number} is damaged; the journal cannot be "
                            "trusted and was left as it is"
                        ) from None
                    self._truncate(offset)
                    break
                entries.append(entry)
            offset += len(line) + 1
        return entries

    def _truncate(self, size: int) -> None:
        """Cuts a torn last line written by a process that died mid-write."""
        with self.path.open("r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Writes one entry and returns once it is on disk."""
        entry = {"seq": len(self._entries), "kind": kind, **fields}
        self._file.write(jcs(entry) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._entries.append(entry)
        return entry

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._entries))

    def find(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """Every entry of ``kind`` whose fields equal ``match``, oldest first."""
        return [
            e
            for e in self._entries
            if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())
        ]

    def last(self, kind: str, **match: Any) -> dict[str, Any] | None:
        """The newest entry of ``kind`` matching ``match``, if any."""
        found = self.find(kind, **match)
        return found[-1] if found else None

    def close(self) -> None:
        self._file.close()
