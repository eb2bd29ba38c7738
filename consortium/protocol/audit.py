"""What a protocol's audit checks are given and what they give back, so that the auditor
(:mod:`consortium.audit`) can run the common checks of every job and then the checks of the
job's own protocol, which live with the protocol (``consortium.protocol.<name>.audit``).

The auditor sits above the protocols (audit -> protocol -> fl, store, ledger): a protocol's
checks import this module, never the auditor. They receive an :class:`AuditedRound` (the
round as the common checks established it: its anchor, its signed records in leaf order, the
model it must start from) and read the objects they need through an :class:`ObjectReader`,
which verifies each against its name and keeps what is missing or damaged for the auditor's
``objects`` check. They answer with :class:`CheckResult` values built through a
:class:`Scope`, worded like every other result of the audit.

A result is one of three things: the check held, it did not (evidence of a fault), or it
could not be decided (the node cannot serve the state it needs). An audit that could not
decide something does not pass: a regulator must not read "could not check" as "checked".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from eth_typing import ChecksumAddress

from consortium.crypto.update_record import SignedUpdateRecord
from consortium.ledger.jobs import RoundAnchor

PASS = "pass"
FAIL = "fail"
UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one named check for one subject.

    ``round`` is None for checks of the job as a whole (deployment, code, job record,
    completeness); ``participant`` names the member (or, for code checks, the contract
    address) the result is about, or is None. ``message`` is a full sentence naming the job,
    the round and the participant, so that it can be read on its own in a log.
    """

    name: str
    round: int | None
    participant: str | None
    ok: bool
    message: str
    unverifiable: bool = False

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``unverifiable``."""
        if self.ok:
            return PASS
        return UNVERIFIABLE if self.unverifiable else FAIL

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``consortium audit --json`` prints for each result."""
        return {
            "check": self.name,
            "round": self.round,
            "participant": self.participant,
            "ok": self.ok,
            "status": self.status,
            "message": self.message,
        }


@dataclass(frozen=True)
class Scope:
    """Who a result is about; builds results whose messages name job, round and participant.

    Check functions receive a scope rather than formatting the prefix themselves, so every
    message across the verifier is worded the same way and always says where it belongs.
    """

    job_id: int
    round: int | None = None
    participant: str | None = None

    def at(self, participant: str | None) -> Scope:
        """The same job and round, about ``participant``."""
        return Scope(self.job_id, self.round, participant)

    def describe(self) -> str:
        parts = [f"job {self.job_id}"]
        if self.round is not None:
            parts.append(f"round {self.round}")
        if self.participant is not None:
            parts.append(f"participant {self.participant}")
        return ", ".join(parts)

    def passed(self, name: str, text: str) -> CheckResult:
        return CheckResult(name, self.round, self.participant, True, f"{self.describe()}: {text}")

    def failed(self, name: str, text: str) -> CheckResult:
        return CheckResult(name, self.round, self.participant, False, f"{self.describe()}: {text}")

    def undecided(self, name: str, text: str) -> CheckResult:
        """A result for a check the chain cannot answer (e.g. pruned historical state)."""
        return CheckResult(
            name, self.round, self.participant, False, f"{self.describe()}: {text}", True
        )

    def outcome(self, name: str, ok: bool, good: str, bad: str) -> CheckResult:
        """``passed(name, good)`` if ``ok`` else ``failed(name, bad)``."""
        return self.passed(name, good) if ok else self.failed(name, bad)


Model = dict[str, np.ndarray]
"""A model as read from a bundle: tensors of any dtype, which the protocol's checks judge."""


class ObjectReader(Protocol):
    """Reads a round's objects from the bundle, each verified against its name once; what is
    missing or damaged is kept for the auditor's ``objects`` check, and the caller gets None."""

    def json(self, digest: bytes, scope: Scope, what: str) -> Any | None:
        """The canonical JSON object ``digest`` names, or None."""
        ...

    def model(self, digest: bytes, scope: Scope, what: str) -> Model | None:
        """The model whose manifest object is ``digest``, every tensor verified, or None."""
        ...


@dataclass(frozen=True)
class AuditedRound:
    """One round as the auditor's common checks have it, for the protocol's checks.

    ``records`` are the bundle's signed records in leaf order (None for one that could not be
    read; the ``record`` check says why); ``participants`` and ``consumer`` are the job's, as
    the chain has them; ``previous_model`` is the model the round must start from (None when
    the round before could not be read), which ``previous_source`` names; ``spec`` is the job's
    model spec object (None if unreadable) and ``last_round`` the last round the chain has
    anchored (None if the chain has no such job), for protocols whose rounds depend on them.
    """

    scope: Scope
    anchor: RoundAnchor
    refused: Mapping[str, str]
    records: tuple[SignedUpdateRecord | None, ...]
    participants: tuple[ChecksumAddress, ...]
    previous_model: bytes | None
    previous_source: str
    consumer: ChecksumAddress
    spec: Any | None
    last_round: int | None

    @property
    def round(self) -> int:
        return self.anchor.round if self.scope.round is None else self.scope.round

    @property
    def signed(self) -> list[tuple[int, SignedUpdateRecord]]:
        """The readable records, each with its position in the leaves."""
        return [(i, r) for i, r in enumerate(self.records) if r is not None]


def check_base_model(
    scope: Scope, signed: SignedUpdateRecord, expected: bytes | None, source: str
) -> CheckResult:
    """The record says it trained from ``expected``, the previous round's model."""
    base = signed.record.base_model_digest
    if expected is None:
        return scope.failed("base-model", f"cannot check: {source} is unknown")
    return scope.outcome(
        "base-model",
        base == expected,
        f"trained from {source} {expected.hex()}",
        f"trained from {base.hex()}, not {source} {expected.hex()}",
    )


class ProtocolAudit(Protocol):
    """A protocol's audit checks, as the auditor dispatches on the job's protocol id.

    The auditor reads the job's initial model with :meth:`read_model` (what a model object is
    differs between protocols: FedAvg's is a tensor manifest, hetero-lr/1's a JSON object of
    commitments). For each round, after its common checks have read the records, it calls
    :meth:`prefetch` (models worth hashing in the background), then :meth:`read` (the
    protocol's objects, the round's model included, through the round's reader, before the
    round's ``objects`` check), then :meth:`check` with what :meth:`read` returned.
    """

    protocol_id: str
    check_names: Sequence[str]  # the names :meth:`check` reports, in order

    def read_model(self, objects: ObjectReader, digest: bytes, scope: Scope, what: str) -> Any: ...

    def prefetch(self, audited: AuditedRound) -> list[bytes]: ...

    def read(self, audited: AuditedRound, objects: ObjectReader) -> Any: ...

    def check(self, audited: AuditedRound, read: Any) -> Iterator[CheckResult]: ...
