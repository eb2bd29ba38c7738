"""A party's write-ahead journal: what it is about to do, written before it does it.

The coordinator's journal is what lets it resume a job after a crash; a participant's records
what it sent. It lives beside the artifact store because it is the same kind of thing: a
party's own durable state, read back after a crash.

One canonical-JSON object per line, each flushed and fsynced before the action it announces.
A crash can only tear the last line; on open, a torn tail is cut off (it announced nothing
that happened, since the action waits for the fsync), while damage anywhere else is refused,
because then the journal can no longer be trusted to say what was done.

A journal has one writer at a time: :class:`Journal` holds an exclusive lock on it while
open (:mod:`consortium.lockfile`), so that a second coordinator, or a second ``--resume`` on
the same directory, is refused instead of interleaving its lines with the first one's.
Readers (:class:`JournalReader`, the exporter) take no lock and write nothing. A journal
damaged anyway is rebuilt from the chain and the store by
:func:`consortium.orchestration.repair.repair_journal`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consortium.crypto.canonical import jcs
from consortium.errors import ConsortiumError, UsageError
from consortium.lockfile import ExclusiveLock


class CorruptJournal(ConsortiumError):
    """A journal line other than the last does not parse: the journal cannot be trusted."""


class Journal:
    """An append-only, fsynced log of JSON entries, each with a ``kind`` and a ``seq``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = ExclusiveLock(path, f"the journal {path}")
        self._appending = threading.Lock()  # a pipelined engine appends from two threads
        try:
            self._load()
            self._file = path.open("ab")
        except BaseException:
            self._lock.release()
            raise

    def _load(self) -> None:
        """Reads every entry into memory and the index, cutting a torn last line."""
        self._entries: list[dict[str, Any]] = []
        self._index: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        offset = 0
        for number, line in enumerate(lines, start=1):
            is_tail = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            if line:
                try:
                    entry = json.loads(line)
                    if not isinstance(entry, dict) or entry.get("seq") != len(self._entries):
                        raise ValueError("out of sequence")
                    if not isinstance(entry.get("kind"), str):
                        raise ValueError("no kind")
                except (ValueError, RecursionError):
                    if not is_tail:
                        raise CorruptJournal(
                            f"{self.path}: line {number} is damaged; the journal cannot be "
                            "trusted and was left as it is (`consortium journal repair` "
                            "rebuilds it from the chain and the store)"
                        ) from None
                    self._truncate(offset)
                    break
                self._add(entry)
            offset += len(line) + 1

    def _truncate(self, size: int) -> None:
        """Cuts a torn last line written by a process that died mid-write."""
        with self.path.open("r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Writes one entry and returns once it is on disk."""
        with self._appending:
            entry = {"seq": len(self._entries), "kind": kind, **fields}
            self._file.write(jcs(entry) + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._add(entry)
        return entry

    def _add(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)
        self._index.setdefault((entry["kind"], None), []).append(entry)
        number = entry.get("round")
        if isinstance(number, int) and not isinstance(number, bool):
            self._index.setdefault((entry["kind"], number), []).append(entry)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._entries))

    def find(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """Every entry of ``kind`` whose fields equal ``match``, oldest first. Entries are
        indexed by kind and round, so a look-up of one round costs the same at round 1,000 as
        at round 1."""
        key = (kind, match.pop("round")) if "round" in match else (kind, None)
        candidates = self._index.get(key, [])
        return [e for e in candidates if all(e.get(k) == v for k, v in match.items())]

    def last(self, kind: str, **match: Any) -> dict[str, Any] | None:
        """The newest entry of ``kind`` matching ``match``, if any."""
        found = self.find(kind, **match)
        return found[-1] if found else None

    def newest_per_round(self, kind: str) -> list[dict[str, Any]]:
        """The newest entry of ``kind`` for each round, in round order: a round resumed after
        the node lost its anchor has a second ``anchored`` entry, which supersedes the first."""
        newest = {entry["round"]: entry for entry in self.find(kind)}
        return [newest[number] for number in sorted(newest)]

    def close(self) -> None:
        """Closes the file and gives the writer's lock up."""
        self._file.close()
        self._lock.release()


class JournalReader(Journal):
    """A journal read as it is and never written.

    :class:`Journal` is opened by the journal's one writer: it takes the lock, cuts a torn
    last line and opens the file for appending. A reader (the exporter) is not that writer,
    and the writer may be appending right now, so a last line that does not parse (possibly
    being written at this moment) is skipped, not cut, and nothing is locked or opened for
    writing. Damage anywhere before the last line is refused as :class:`Journal` refuses it.
    """

    def __init__(self, path: Path) -> None:  # not Journal's: that one locks and appends
        self.path = path
        self._load()

    def _truncate(self, size: int) -> None:
        """Leaves a torn last line to the writer, which cuts it when it next opens."""

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        raise UsageError(f"{self.path} is read-only here: a reader never writes it")

    def close(self) -> None:
        """Nothing was opened."""
