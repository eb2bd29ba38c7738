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
from consortium.ledger.jobs import Job, mask_participants
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
    # Participants the contract's last full check left out (their standing was not read now).
    left_out: frozenset[str] = frozenset()

    def problem(self, participant: str, job: Job, owners: Mapping[int, str]) -> str | None:
        """Why ``participant`` may take no part in a round, or None: it is no longer an active
        member, or a dataset it owns (``owners``: each dataset's owner) may no longer be used by
        the job's consumer. Such a participant is not even sent the round's model."""
        if participant in self.left_out:
            return (
                f"{participant} took no part since the contract's last full check (its membership "
                "or a consent of its data was not in order then), and nothing changed since"
            )
        return self.member_problem(participant) or self.dataset_problem(participant, job, owners)

    def member_problem(self, participant: str) -> str | None:
        if participant not in self.members:
            return f"{participant} is no longer an active member"
        return None

    def dataset_problem(self, participant: str, job: Job, owners: Mapping[int, str]) -> str | None:
        for dataset_id, owner in owners.items():
            if owner == participant and dataset_id not in self.usable_datasets:
                return (
                    f"consent for dataset {dataset_id} to {job.consumer} for {job.purpose!r} "
                    "is no longer valid"
                )
        return None

    @classmethod
    def unchanged(cls, job: Job, checked: int, owners: Mapping[int, str]) -> Standing:
        """What the contract's fast path vouches for: its last full check covered the
        participants of the mask ``checked`` and their datasets, and nothing changed since.
        The participants it left out were out of good standing then, and, nothing having
        changed, still are; their datasets with them (``owners``: each dataset's owner)."""
        members = frozenset(mask_participants(job.participants, checked))
        left_out = frozenset(job.participants) - members
        usable = (d for d in job.dataset_ids if owners.get(d) not in left_out)
        return cls(members, frozenset(usable), left_out)

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
