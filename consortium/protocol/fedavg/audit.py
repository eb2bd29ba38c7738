"""FedAvg's audit checks: what an auditor re-derives of a FedAvg round beyond the checks every
protocol's rounds get (anchors, records, signatures, Merkle tree, standing).

For each round the auditor (:mod:`consortium.audit.verifier`) dispatches here on the job's
protocol id, :data:`~consortium.protocol.fedavg.round.PROTOCOL_ID`: every record was trained
from the previous round's model, its example count (the FedAvg weight) is its participant's
own metrics', re-running FedAvg over the bundled updates gives the anchored model bit for
bit, and the anchored round metrics list exactly the accepted records and the refusals.

=================  ===============================================================
``base-model``     each record was trained from the previous round's model
``update``         each record's example count is its participant metrics'
``aggregation``    FedAvg over the bundled updates gives the anchored model bit for bit
``round-metrics``  the anchored round metrics list exactly the records and refusals
=================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from consortium.crypto.digests import model_digest
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ConsortiumError
from consortium.fl.aggregation import fedavg
from consortium.protocol.audit import (
    AuditedRound,
    CheckResult,
    Model,
    ObjectReader,
    Scope,
    check_base_model,
)
from consortium.protocol.fedavg.round import PROTOCOL_ID

CHECK_NAMES = ("base-model", "update", "aggregation", "round-metrics")


def check_update(
    scope: Scope, signed: SignedUpdateRecord, update: Model | None, metrics: Any | None
) -> CheckResult:
    """The signed update is in the bundle and its example count (the FedAvg weight) is the
    one the participant's own metrics report."""
    record = signed.record
    if update is None or metrics is None:
        return scope.failed(
            "update", f"the update {record.update_digest.hex()} or its metrics are not readable"
        )
    claimed = metrics.get("numExamples") if isinstance(metrics, dict) else None
    ok = record.num_examples >= 1 and type(claimed) is int and claimed == record.num_examples
    return scope.outcome(
        "update",
        ok,
        f"update {record.update_digest.hex()} trained on {record.num_examples} examples",
        f"numExamples {record.num_examples} is not positive or disagrees with the "
        f"participant's metrics ({claimed!r})",
    )


def check_aggregation(
    scope: Scope, updates: Sequence[tuple[str, Model | None, int]], anchored: bytes
) -> CheckResult:
    """FedAvg (examples-weighted, participant address ascending, float64) over the bundled
    updates reproduces the anchored model digest bit for bit."""
    missing = [participant for participant, model, _ in updates if model is None]
    if not updates or missing:
        reason = f"the updates of {', '.join(missing)} are missing" if missing else "no updates"
        return scope.failed("aggregation", f"cannot re-run FedAvg: {reason}")
    try:
        model = fedavg([(p, m, n) for p, m, n in updates if m is not None])
        digest = model_digest(model)
    except ConsortiumError as exc:
        return scope.failed("aggregation", f"FedAvg over the bundled updates fails: {exc}")
    examples = sum(n for _, _, n in updates)
    return scope.outcome(
        "aggregation",
        digest == anchored,
        f"FedAvg over {len(updates)} updates ({examples} examples) gives the anchored model "
        f"{anchored.hex()} bit for bit",
        f"FedAvg over the {len(updates)} bundled updates gives model {digest.hex()}, the "
        f"anchor says {anchored.hex()}",
    )


def check_round_metrics(scope: Scope, metrics: Any | None, audited: AuditedRound) -> CheckResult:
    """The anchored round metrics name this round, list exactly the records' participants as
    accepted (in leaf order) and their examples, and the round entry's refusals; accepted and
    refused together are the job's participants."""
    if not isinstance(metrics, dict):
        return scope.failed("round-metrics", "the round metrics object is not readable")
    accepted = [None if r is None else r.record.participant for r in audited.records]
    examples = sum(r.record.num_examples for _, r in audited.signed)
    refused = metrics.get("refused")
    problems = []
    if metrics.get("round") != audited.round:
        problems.append(f"they are for round {metrics.get('round')!r}")
    if metrics.get("accepted") != accepted:
        problems.append(f"they accept {metrics.get('accepted')!r}, the records are {accepted}")
    if metrics.get("examples") != examples:
        problems.append(f"they count {metrics.get('examples')!r} examples, the records {examples}")
    if refused != audited.refused:
        problems.append(f"they refuse {refused!r}, the manifest {dict(audited.refused)}")
    if isinstance(refused, dict) and not problems:
        everyone = sorted([*accepted, *refused], key=lambda a: str(a).lower())
        if everyone != sorted(audited.participants, key=str.lower):
            problems.append("accepted and refused together are not the job's participants")
    return scope.outcome(
        "round-metrics",
        not problems,
        f"the anchored metrics accept the {len(accepted)} records ({examples} examples) and "
        f"refuse {len(audited.refused)}",
        "the anchored round metrics disagree: " + "; ".join(problems),
    )


@dataclass(frozen=True)
class FedAvgObjects:
    """What a FedAvg round's checks read from the bundle: each readable record's update and
    participant metrics (by leaf position), and the round metrics the anchor names."""

    updates: dict[int, Model | None]
    participant_metrics: dict[int, Any | None]
    round_metrics: Any | None


class FedAvgAudit:
    """FedAvg's checks, as the auditor's protocol registry holds them."""

    protocol_id = PROTOCOL_ID
    check_names = CHECK_NAMES

    def read_model(self, objects: ObjectReader, digest: bytes, scope: Scope, what: str) -> Any:
        """A FedAvg model is a tensor manifest: every tensor is read and verified."""
        return objects.model(digest, scope, what)

    def prefetch(self, audited: AuditedRound) -> list[bytes]:
        """The updates and the global model: most of what an audit reads, hashed while the
        chain is read."""
        return [*(r.record.update_digest for _, r in audited.signed), audited.anchor.model_digest]

    def read(self, audited: AuditedRound, objects: ObjectReader) -> FedAvgObjects:
        scope = audited.scope
        # The global model is read for the objects check; aggregation compares its digest.
        self.read_model(objects, audited.anchor.model_digest, scope, "global model")
        updates, metrics = {}, {}
        for position, signed in audited.signed:
            at = scope.at(signed.record.participant)
            updates[position] = objects.model(signed.record.update_digest, at, "update")
            metrics[position] = objects.json(
                signed.record.metrics_digest, at, "participant metrics"
            )
        round_metrics = objects.json(audited.anchor.metrics_digest, scope, "round metrics")
        return FedAvgObjects(updates, metrics, round_metrics)

    def check(self, audited: AuditedRound, read: FedAvgObjects) -> Iterator[CheckResult]:
        scope = audited.scope
        for position, signed in audited.signed:
            at = scope.at(signed.record.participant)
            yield check_base_model(at, signed, audited.previous_model, audited.previous_source)
            yield check_update(
                at, signed, read.updates[position], read.participant_metrics[position]
            )
        yield check_aggregation(
            scope,
            [
                (r.record.participant, read.updates[i], r.record.num_examples)
                for i, r in audited.signed
            ],
            audited.anchor.model_digest,
        )
        yield check_round_metrics(scope, read.round_metrics, audited)


AUDIT = FedAvgAudit()
