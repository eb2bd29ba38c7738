"""What every round protocol hands the round engine, and what the engine hands it.

The engine (:mod:`consortium.orchestration.engine`) owns the journal, anchoring, receipts and
resume, whatever the protocol; a protocol owns what one round does between its parties. They
meet here: the engine opens a round with a :class:`RoundStart` (the job, the round, the base
model the chain or the previous intent names, the job's standing), and the protocol answers
with a :class:`RoundIntent` once every artifact it commits to is durable in its store: the
record leaves in tree order, the new model and the round metrics. The engine journals that
intent, anchors it, and hands each party its receipt through :meth:`RoundProtocol.deliver`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from consortium.crypto.digests import from_hex32, hex32
from consortium.errors import ConsortiumError
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Job
from consortium.protocol.messages import RoundReceipt
from consortium.store.artifacts import ArtifactStore
from consortium.timing import Timings

MAX_REASON = 500


def bounded(reason: str) -> str:
    """A refusal or failure reason short enough to anchor and journal: parties control its
    text."""
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


class RoundRefused(ConsortiumError):
    """The round cannot run: the chain would refuse its anchor, or no update was usable."""


@dataclass(frozen=True)
class Standing:
    """Which participants are active members and which datasets the job's consumer may use,
    as the chain says at the start of a round; read once per round, not once per update."""

    members: frozenset[str]
    usable_datasets: frozenset[int]

    @classmethod
    def unchanged(cls, job: Job) -> Standing:
        """Everything in order: what the contract's fast path vouches for when its last full
        check covered every participant."""
        return cls(frozenset(job.participants), frozenset(job.dataset_ids))

    @classmethod
    def read(cls, ledger: Ledger, job: Job, owners: Mapping[int, str]) -> Standing:
        """Reads membership and consent of the whole job from the chain in three calls, however
        many parties and datasets: the parties' and owners' records, the consumer's consents,
        and the latest block's time, by which a call of ``isConsentValid`` judges a window.
        A dataset is usable as ``anchorRound`` has it: the consumer's own, or consented to and
        owned by an active provider."""
        states = ledger.members.states([*job.participants, *owners.values()])
        borrowed = [d for d, owner in owners.items() if owner != job.consumer]
        consents = ledger.consents.many(borrowed, job.consumer, job.purpose)
        now = ledger.now()
        return cls(
            frozenset(p for p in job.participants if states[p].active),
            frozenset(
                d
                for d, owner in owners.items()
                if owner == job.consumer or (consents[d].holds(now) and states[owner].is_provider)
            ),
        )


@dataclass(frozen=True)
class RoundStart:
    """What the engine gives a protocol to run round ``round`` of ``job`` from the model
    ``base_model_digest``: the chain's head model, or the model of the round before whose
    anchor is still in flight."""

    job: Job
    round: int
    base_model_digest: bytes
    dataset_owners: Mapping[int, str]
    standing: Standing


@dataclass(frozen=True)
class RoundIntent:
    """What a round will anchor, journaled before anything is sent: the Merkle root over the
    signed records (leaves in tree order, each with the party it speaks for), the new model,
    the round metrics, and the parties left out with the reason. Every digest names an object
    already durable in the protocol's store. ``final`` marks the protocol's last round (its
    convergence rule met): the engine opens no round after it, in this run or a resumed one."""

    round: int
    root: bytes
    count: int
    model: bytes
    metrics: bytes
    records: tuple[bytes, ...]
    participants: tuple[str, ...]
    refused: Mapping[str, str] = field(default_factory=dict)
    final: bool = False

    def to_json(self) -> dict[str, Any]:
        """The journal's ``intent`` entry (without its kind and sequence number); ``final``
        only where it is set, so that the entries of protocols without an end read as before."""
        entry = {
            "round": self.round,
            "root": hex32(self.root),
            "count": self.count,
            "model": hex32(self.model),
            "metrics": hex32(self.metrics),
            "records": [hex32(d) for d in self.records],
            "participants": list(self.participants),
            "refused": dict(self.refused),
        }
        return {**entry, "final": True} if self.final else entry

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> RoundIntent:
        return cls(
            round=int(entry["round"]),
            root=from_hex32(entry["root"]),
            count=int(entry["count"]),
            model=from_hex32(entry["model"]),
            metrics=from_hex32(entry["metrics"]),
            records=tuple(from_hex32(d) for d in entry["records"]),
            participants=tuple(entry["participants"]),
            refused=dict(entry["refused"]),
            final=entry.get("final", False) is True,
        )


class RoundProtocol(Protocol):
    """One round protocol, as the engine drives it."""

    protocol_id: str
    store: ArtifactStore  # holds every object an intent names, the record leaves included

    def run_round(self, start: RoundStart, timings: Timings) -> RoundIntent:
        """Runs the round between the parties up to its intent, adding the seconds of its own
        phases to ``timings``; raises RoundRefused when no round can be anchored (every party
        refused, say)."""
        ...

    def deliver(self, party: str, receipt: RoundReceipt) -> None:
        """Hands ``party`` its receipt; a ConsortiumError is that party's failure, journaled."""
        ...
