"""One FedAvg round on the coordinator's side (DESIGN.md, steps 1-4): open the round, collect
and check every participant's update, aggregate the accepted ones, store the model and the
round metrics, and hand the engine the intent to anchor.

Training is deterministic, so a round redone after a crash produces the same records, root and
model as the lost attempt would have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord, sort_key
from consortium.errors import ConsortiumError
from consortium.faults import crash_point
from consortium.fl.aggregation import fedavg
from consortium.fl.data import LabeledTable
from consortium.fl.metrics import binary_metrics
from consortium.fl.model import Model, predict_proba
from consortium.protocol.base import RoundIntent, RoundRefused, RoundStart, bounded
from consortium.protocol.fedavg.checks import (
    RoundContext,
    UpdateRefused,
    check_submission,
    update_allowance,
)
from consortium.protocol.messages import RoundOpen, RoundReceipt, UpdateSubmission, pack_objects
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import get_model, model_objects, put_model
from consortium.timing import Timings, timed

PROTOCOL_ID = "fedavg/1"


class Transport(Protocol):
    """How the coordinator reaches participants; it sends nothing but protocol messages.

    A round is opened for every participant at once, so that a transport over a network sends
    all the messages before it waits for any answer; a participant that gives none is named
    with the reason (a :class:`~consortium.errors.ConsortiumError`) instead of a submission.
    """

    def open_rounds(
        self, participants: Sequence[str], message: RoundOpen
    ) -> Mapping[str, UpdateSubmission | ConsortiumError]: ...

    def deliver(self, participant: str, receipt: RoundReceipt) -> None: ...


class FedAvgRound:
    """The coordinator's part of a FedAvg round, over ``transport`` to the participants."""

    protocol_id = PROTOCOL_ID

    def __init__(
        self, store: ArtifactStore, transport: Transport, validation: LabeledTable, domain: Domain
    ) -> None:
        self.store = store
        self.transport = transport
        self.validation = validation
        self.domain = domain

    def run_round(self, start: RoundStart, timings: Timings) -> RoundIntent:
        """Collects, checks and aggregates the round's updates; everything the intent names is
        durable in the store when this returns. Adds its phases (train, verify, aggregate) to
        ``timings``."""
        job, round_number = start.job, start.round
        base = get_model(self.store, start.base_model_digest)
        message = RoundOpen(
            job.id, round_number, start.base_model_digest,
            pack_objects(self.store, model_objects(self.store, start.base_model_digest)),
        )  # fmt: skip
        submissions: dict[str, UpdateSubmission] = {}
        refused: dict[str, str] = {}
        # Whoever is out of good standing takes no part: it is not even sent the model.
        for participant in job.participants:
            reason = start.standing.problem(participant, job, start.dataset_owners)
            if reason is not None:
                refused[participant] = bounded(f"not asked to train: {reason}")
        asked = [p for p in job.participants if p not in refused]
        with timed(timings, "train"):
            answers = self.transport.open_rounds(asked, message)
        for participant in asked:
            answer = answers.get(participant)
            if isinstance(answer, UpdateSubmission):
                submissions[participant] = answer
            else:
                refused[participant] = bounded(f"no update: {answer or 'no answer'}")
        context = RoundContext(
            job, round_number, start.base_model_digest, base, self.domain,
            dict(start.dataset_owners), start.standing, update_allowance(message.objects),
        )  # fmt: skip
        accepted: list[tuple[SignedUpdateRecord, Model]] = []
        with timed(timings, "verify"):
            for participant, submission in submissions.items():
                try:
                    if submission.record.record.participant != participant:
                        raise UpdateRefused(
                            f"sent a record of {submission.record.record.participant}"
                        )
                    update = check_submission(submission, context, self.store)
                except UpdateRefused as exc:
                    refused[participant] = bounded(str(exc))
                    continue
                accepted.append((submission.record, update))
        if not accepted:
            raise RoundRefused(f"round {round_number}: no usable update ({refused})")
        crash_point("collected", round_number)
        with timed(timings, "aggregate"):
            return self._aggregate(round_number, accepted, refused)

    def _aggregate(
        self,
        round_number: int,
        accepted: list[tuple[SignedUpdateRecord, Model]],
        refused: dict[str, str],
    ) -> RoundIntent:
        accepted.sort(key=lambda item: sort_key(item[0]))
        model = fedavg([(r.record.participant, u, r.record.num_examples) for r, u in accepted])
        model_digest = put_model(self.store, model)
        records = [self.store.put_json(r.to_json()) for r, _ in accepted]
        tree = MerkleTree(self.store.get(d) for d in records)
        validation = binary_metrics(self.validation.y, predict_proba(model, self.validation.X))
        participants = [r.record.participant for r, _ in accepted]
        metrics_digest = self.store.put_json(
            {
                "round": round_number,
                "validation": validation.to_json(),
                "accepted": participants,
                "examples": sum(r.record.num_examples for r, _ in accepted),
                "refused": refused,
            }
        )
        return RoundIntent(
            round_number, tree.root, tree.size, model_digest, metrics_digest, tuple(records),
            tuple(participants), refused,
        )  # fmt: skip

    def deliver(self, party: str, receipt: RoundReceipt) -> None:
        self.transport.deliver(party, receipt)
