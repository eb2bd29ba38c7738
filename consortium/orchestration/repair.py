"""Rebuilding a damaged coordinator journal from the chain and the coordinator's store.

A journal can be damaged past what :class:`~consortium.store.journal.Journal` cuts
on open (a torn last line): a disk error, an editor, or two writers before locking existed.
Nothing of an anchored job is lost with it, because what the journal says about an anchored
round is also on chain (the ``RoundAnchored`` event and its transaction) and in the store (the
signed records, the round metrics naming the accepted and refused participants). Repair:

1. takes the journal's writer lock, so no coordinator runs meanwhile;
2. salvages every line that still parses, whatever its sequence number;
3. for each round the chain has anchored, keeps the salvaged ``intent`` and ``anchored``
   entries only if they agree with the chain and the store, and otherwise rebuilds them from
   the chain's event and the stored records (refusing the round if the store cannot give the
   anchored root);
4. for rounds beyond the chain's, keeps what announces work (``opened``, ``intent`` whose
   records are stored, ``signed``, so a lost anchor is sent again) and drops what claims an
   anchor the chain does not hold;
5. writes the result beside the journal and renames it into place, after keeping the damaged
   file under ``<name>.damaged-<time>``. Nothing is deleted, and a repair of a sound journal
   changes nothing, so it is safe to re-run.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium.crypto.canonical import jcs
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ConsortiumError, UsageError
from consortium.files import write_text_atomically
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import Job, RoundAnchor
from consortium.lockfile import ExclusiveLock
from consortium.orchestration import journal_entries
from consortium.orchestration.journal_entries import (
    INTENT,
    AnchorMined,
    AnchorSigned,
    JobBinding,
    MalformedEntry,
    RoundDelivered,
    RoundOpened,
    as_line,
    intent_from_json,
)
from consortium.protocol.base import RoundIntent
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import CorruptJournal, JournalReader

# A signed update record is well under this; larger objects (tensors) are not records.
MAX_RECORD_BYTES = 64 * 1024
MAX_JOURNAL_BYTES = 1 << 30
_WORK_KINDS = (RoundOpened.KIND, INTENT, AnchorSigned.KIND)


class RepairFailed(ConsortiumError):
    """The journal cannot be rebuilt: the chain or the store lacks what a round needs."""


@dataclass
class RepairReport:
    """What a repair did; ``changed`` is False when the journal was already sound (then it
    was left untouched)."""

    path: Path
    entries: int
    damaged_lines: list[int] = field(default_factory=list)
    rebuilt_rounds: list[int] = field(default_factory=list)
    dropped_entries: int = 0
    kept_copy: Path | None = None

    @property
    def changed(self) -> bool:
        return self.kept_copy is not None


def repair_journal(path: Path, store: ArtifactStore, ledger: Ledger, job_id: int) -> RepairReport:
    """Rebuilds the coordinator journal at ``path`` for job ``job_id`` of ``ledger``."""
    if not path.is_file():
        raise UsageError(f"no journal at {path}")
    lock = ExclusiveLock(path, f"the journal {path}")
    try:
        raw = _read_bounded(path)
        salvaged, damaged = _salvage(raw)
        job = ledger.jobs.get(job_id)
        binding = _job_entry(salvaged, ledger, job_id)
        sound = {
            number: _sound_round(salvaged, store, ledger, job_id, number)
            for number in range(1, job.last_round + 1)
        }
        well_formed = all(map(_well_formed, salvaged))
        if not damaged and well_formed and _opens(path) and None not in sound.values():
            return RepairReport(path, len(salvaged))
        entries = [binding]
        rebuilt = _anchored_rounds(sound, store, ledger, job, entries)
        entries += _unanchored_rounds(salvaged, store, job.last_round)
        numbered = [{**entry, "seq": seq} for seq, entry in enumerate(entries)]
        report = RepairReport(path, len(numbered), damaged, rebuilt)
        report.dropped_entries = len(salvaged) - _count_kept(salvaged, numbered)
        report.kept_copy = _replace(path, b"".join(jcs(entry) + b"\n" for entry in numbered))
        return report
    finally:
        lock.release()


def _opens(path: Path) -> bool:
    """Whether the journal opens as it is (at most a torn last line, which opening cuts)."""
    try:
        JournalReader(path)
    except CorruptJournal:
        return False
    return True


def journaled_deployment(path: Path) -> Deployment | None:
    """The deployment a (possibly damaged) journal's job entry records, if one survived."""
    salvaged, _ = _salvage(_read_bounded(path))
    for entry in salvaged:
        if entry["kind"] == JobBinding.KIND:
            recorded = JobBinding.from_json(entry).recorded_deployment(f"{path}: its job entry")
            if recorded is not None:
                return recorded
    return None


# ------------------------------------------------------------------------ salvaging


def _read_bounded(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_JOURNAL_BYTES:
        raise UsageError(
            f"{path} holds {size:,} bytes, more than a journal may ({MAX_JOURNAL_BYTES:,})"
        )
    return path.read_bytes()


def _salvage(raw: bytes) -> tuple[list[dict[str, Any]], list[int]]:
    """Every line that parses as an entry (an object with a ``kind``), without its ``seq``,
    exact repeats dropped; and the numbers of the lines that do not."""
    entries: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    damaged: list[int] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            damaged.append(number)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            damaged.append(number)
            continue
        entry.pop("seq", None)
        key = jcs(entry)
        if key not in seen:
            seen.add(key)
            entries.append(entry)
    return entries, damaged


def _job_entry(salvaged: list[dict[str, Any]], ledger: Ledger, job_id: int) -> dict[str, Any]:
    """The journal's binding to its job; rebuilt from the ledger when it was lost, and refused
    when it names another job, ledger or chain."""
    binding = JobBinding.for_ledger(ledger, job_id)
    for entry in salvaged:
        if entry["kind"] == JobBinding.KIND:
            named = JobBinding.from_json(entry)
            if named.identity() != binding.identity():
                raise UsageError(
                    f"the journal belongs to job {named.job_id} of ledger {named.ledger} "
                    f"on chain {named.chain_id}, not job {job_id} of ledger "
                    f"{binding.ledger} on chain {binding.chain_id}"
                )
            return entry
    return as_line(binding)


# ------------------------------------------------------------------------ anchored rounds


def _anchored_rounds(
    sound: dict[int, list[dict[str, Any]] | None],
    store: ArtifactStore,
    ledger: Ledger,
    job: Job,
    entries: list[dict[str, Any]],
) -> list[int]:
    """Appends the entries of every round the chain holds, the sound ones as salvaged and the
    others rebuilt; returns the rounds rebuilt."""
    lost = [number for number, kept in sound.items() if kept is None]
    logged = (
        ledger.jobs.logged_anchors(job.id, job.created_block, job.last_anchor_block) if lost else {}
    )
    records = _stored_records(store, job.id, set(lost)) if lost else {}
    for number, kept in sound.items():
        if kept is not None:
            entries += kept
            continue
        if number not in logged:
            raise RepairFailed(
                f"round {number} of job {job.id} is anchored, but the chain returned no "
                "RoundAnchored event for it"
            )
        entries += _rebuilt_round(store, ledger, *logged[number], records.get(number, {}))
    return lost


def _sound_round(
    salvaged: list[dict[str, Any]], store: ArtifactStore, ledger: Ledger, job_id: int, number: int
) -> list[dict[str, Any]] | None:
    """The salvaged entries of an anchored round, if its newest ``anchored`` entry is the
    chain's anchor and its newest ``intent`` gives that anchor's root from stored records."""
    of_round = [e for e in salvaged if e.get("round") == number and _well_formed(e)]
    anchored = [e for e in of_round if e["kind"] == AnchorMined.KIND]
    intents = [e for e in of_round if e["kind"] == INTENT]
    if not anchored or not intents:
        return None
    try:
        anchor = AnchorMined.from_json(anchored[-1]).anchor
        if anchor.job_id != job_id or anchor.commitment() != ledger.jobs.round_commitment(
            job_id, number
        ):
            return None
        if _intent_root(store, intent_from_json(intents[-1])) != anchor.merkle_root:
            return None
    except (ConsortiumError, KeyError, TypeError, ValueError):
        return None
    delivered = [e for e in of_round if e["kind"] == RoundDelivered.KIND]
    newest = {id(intents[-1]), id(anchored[-1]), *(id(e) for e in delivered[-1:])}
    work = (RoundOpened.KIND, AnchorSigned.KIND)
    kept = [e for e in of_round if e["kind"] in work or id(e) in newest]
    if not delivered and not any(e["kind"] == AnchorSigned.KIND for e in kept):
        # Without its transaction a resumed coordinator could not tell this anchor its own.
        kept.append(_delivered_marker(number))
    return kept


def _delivered_marker(number: int) -> dict[str, Any]:
    """Marks a rebuilt round done: its receipts may not all have been delivered, but each
    participant can check the anchor against the chain itself at any time."""
    return as_line(RoundDelivered(number, rebuilt=True))


def _well_formed(entry: dict[str, Any]) -> bool:
    """Whether a salvaged entry's fields are all as the coordinator writes them: one that is
    not would stop a resumed coordinator, so a repair leaves it out."""
    try:
        journal_entries.parse(entry)
    except MalformedEntry:
        return False
    return True


def _intent_root(store: ArtifactStore, intent: RoundIntent) -> bytes:
    return MerkleTree(store.get(d) for d in intent.records).root


def _stored_records(
    store: ArtifactStore, job_id: int, rounds: set[int]
) -> dict[int, dict[str, bytes]]:
    """The digests of the signed update records of ``rounds`` in the store, by round and
    participant (one record per participant and round: a redone round signs the same)."""
    found: dict[int, dict[str, bytes]] = {}
    for digest in store.digests():
        if store.path(digest).stat().st_size > MAX_RECORD_BYTES:
            continue
        try:
            record = SignedUpdateRecord.from_json(store.get_json(digest)).record
        except (ConsortiumError, KeyError, TypeError, ValueError):
            continue
        if record.job_id == job_id and record.round in rounds:
            found.setdefault(record.round, {})[record.participant] = digest
    return found


def _rebuilt_round(
    store: ArtifactStore,
    ledger: Ledger,
    anchor: RoundAnchor,
    tx_hash: str,
    records: dict[str, bytes],
) -> list[dict[str, Any]]:
    """A round's ``intent``, ``anchored`` and ``delivered`` entries, from the chain's event,
    the round metrics (which name the accepted participants in leaf order, and the refused)
    and the stored records."""
    where = f"round {anchor.round} of job {anchor.job_id}"
    try:
        metrics = store.get_json(anchor.metrics_digest)
        accepted = [str(p) for p in metrics["accepted"]]
        refused = dict(metrics["refused"])
        leaves = [records[participant] for participant in accepted]
    except (ConsortiumError, KeyError, TypeError, ValueError) as exc:
        raise RepairFailed(f"{where}: the store cannot give its records ({exc})") from None
    if MerkleTree(store.get(d) for d in leaves).root != anchor.merkle_root:
        raise RepairFailed(f"{where}: the stored records do not give the anchored root")
    receipt = ledger.chain.w3.eth.get_transaction_receipt(tx_hash)
    intent = RoundIntent(
        anchor.round, anchor.merkle_root, anchor.participant_count, anchor.model_digest,
        anchor.metrics_digest, tuple(leaves), tuple(accepted), refused,
    )  # fmt: skip
    return [
        as_line(intent),
        as_line(AnchorMined(anchor, tx_hash, int(receipt["gasUsed"]))),
        _delivered_marker(anchor.round),
    ]


# ------------------------------------------------------------------------ later rounds


def _unanchored_rounds(
    salvaged: list[dict[str, Any]], store: ArtifactStore, last_round: int
) -> list[dict[str, Any]]:
    """The work announced for rounds the chain has not anchored, in journal order."""
    kept = []
    for entry in salvaged:
        number = entry.get("round")
        if not isinstance(number, int) or number <= last_round:
            continue
        if entry["kind"] not in _WORK_KINDS or not _well_formed(entry):
            continue
        if entry["kind"] == INTENT and not _records_stored(store, intent_from_json(entry)):
            continue
        kept.append(entry)
    return kept


def _records_stored(store: ArtifactStore, intent: RoundIntent) -> bool:
    try:
        return all(store.has(d) for d in intent.records)
    except ConsortiumError:
        return False


def _count_kept(salvaged: list[dict[str, Any]], written: list[dict[str, Any]]) -> int:
    keys = {jcs({k: v for k, v in entry.items() if k != "seq"}) for entry in written}
    return sum(1 for entry in salvaged if jcs(entry) in keys)


# ------------------------------------------------------------------------ writing


def _replace(path: Path, text: bytes) -> Path:
    """Keeps the old journal under a new name, then puts ``text`` in its place atomically."""
    copy = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    suffix = 0
    while copy.exists():
        suffix += 1
        copy = copy.with_name(f"{copy.name.split('~')[0]}~{suffix}")
    os.link(path, copy)
    write_text_atomically(path, text.decode("utf-8"), mode=stat.S_IMODE(path.stat().st_mode))
    return copy
