"""The coordinator's checks of one submitted update (step 3 of a round), one function each.

A failed check refuses that update with :class:`UpdateRefused`, whose message says exactly
what was wrong; the round goes on without it, and the refusal is recorded in the round's
metrics (which are anchored) and in the coordinator's journal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consortium.crypto.eip712 import Domain
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ConsortiumError
from consortium.fl.model import InvalidUpdate, Model, validate_update
from consortium.ledger.jobs import Job
from consortium.protocol.base import Standing
from consortium.protocol.messages import UpdateSubmission, unpack_objects
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import get_model


class UpdateRefused(ConsortiumError):
    """An update failed a check and is left out of the round."""


UPDATE_SLACK_BYTES = 64 * 1024
"""What an update may carry beyond the size of its base model: its metrics object, and digits
that a manifest or tensor header of the same model cannot really add."""


@dataclass(frozen=True)
class RoundContext:
    """What every update of one round is checked against."""

    job: Job
    round: int
    base_model_digest: bytes
    base_model: Model
    domain: Domain
    dataset_owners: dict[int, str]
    standing: Standing
    max_update_bytes: int  # see update_allowance


def update_allowance(base_objects: Mapping[bytes, bytes]) -> int:
    """The most bytes of objects an update of this base model can need: an update has the base
    model's tensors, shapes and dtype, so its manifest and blobs are the base model's size."""
    return sum(len(data) for data in base_objects.values()) + UPDATE_SLACK_BYTES


def check_signature(record: SignedUpdateRecord, context: RoundContext) -> None:
    try:
        record.verify(context.domain)
    except ConsortiumError as exc:
        raise UpdateRefused(f"bad signature: {exc}") from None


def check_round(record: SignedUpdateRecord, context: RoundContext) -> None:
    r = record.record
    if (r.job_id, r.round) != (context.job.id, context.round):
        raise UpdateRefused(
            f"record is for job {r.job_id} round {r.round}, "
            f"not job {context.job.id} round {context.round}"
        )


def check_participant(record: SignedUpdateRecord, context: RoundContext) -> None:
    participant = record.record.participant
    if participant not in context.job.participants:
        raise UpdateRefused(f"{participant} is not a participant of job {context.job.id}")
    reason = context.standing.member_problem(participant)
    if reason is not None:
        raise UpdateRefused(reason)


def check_consent(record: SignedUpdateRecord, context: RoundContext) -> None:
    """Each dataset the participant contributes must still be usable by the job's consumer."""
    reason = context.standing.dataset_problem(
        record.record.participant, context.job, context.dataset_owners
    )
    if reason is not None:
        raise UpdateRefused(reason)


def check_base_model(record: SignedUpdateRecord, context: RoundContext) -> None:
    if record.record.base_model_digest != context.base_model_digest:
        raise UpdateRefused(
            f"trained from base model {record.record.base_model_digest.hex()}, "
            f"not {context.base_model_digest.hex()}"
        )


def check_size(submission: UpdateSubmission, context: RoundContext) -> None:
    """Refuses oversized objects before anything of them is stored: a participant cannot fill
    the coordinator's store with what no update needs."""
    size = sum(len(data) for data in submission.objects.values())
    if size > context.max_update_bytes:
        raise UpdateRefused(
            f"sent {size} bytes of objects, more than the {context.max_update_bytes} an update "
            "of this model can need"
        )


def check_update(
    submission: UpdateSubmission, context: RoundContext, store: ArtifactStore
) -> Model:
    """The update's bytes match the digests the record signs, and it is a usable model."""
    record = submission.record.record
    try:
        unpack_objects(store, submission.objects)
        update = get_model(store, record.update_digest)
        metrics = store.get_json(record.metrics_digest)
    except ConsortiumError as exc:
        raise UpdateRefused(f"update does not match its record: {exc}") from None
    try:
        validate_update(update, context.base_model)
    except InvalidUpdate as exc:
        raise UpdateRefused(f"unusable update: {exc}") from None
    if not isinstance(metrics, dict):
        raise UpdateRefused(f"metrics {record.metrics_digest.hex()} are not a JSON object")
    claimed = metrics.get("numExamples")
    if record.num_examples < 1 or type(claimed) is not int or claimed != record.num_examples:
        raise UpdateRefused(
            f"numExamples {record.num_examples} is not positive or disagrees with the metrics"
        )
    return update


def check_submission(
    submission: UpdateSubmission, context: RoundContext, store: ArtifactStore
) -> Model:
    """Runs every check in order; returns the update if all pass, else UpdateRefused."""
    record = submission.record
    check_signature(record, context)
    check_round(record, context)
    check_participant(record, context)
    check_consent(record, context)
    check_base_model(record, context)
    check_size(submission, context)
    return check_update(submission, context, store)
