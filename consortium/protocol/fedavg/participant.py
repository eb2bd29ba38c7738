"""A participant: trains on its own data, signs what it sends, and checks its receipt on chain.

Its data never leaves it; what leaves is the update (the locally trained model), its local
metrics and the signed record committing to both. Everything it sends is first stored in its
own artifact store, so it can always show what it contributed. Its receipt is not taken on the
coordinator's word: the participant reads the round's commitment from the chain itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from consortium.crypto.eip712 import Domain
from consortium.crypto.update_record import UpdateRecord, sign_update_record
from consortium.fl.data import LabeledTable
from consortium.fl.model import local_train
from consortium.ledger.client import Ledger
from consortium.protocol.messages import (
    RoundOpen,
    RoundReceipt,
    UpdateSubmission,
    pack_objects,
    unpack_objects,
)
from consortium.protocol.receipts import check_receipt
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.store.models import get_model, model_objects, put_model


@dataclass(frozen=True)
class TrainingPlan:
    """Local training hyperparameters, the same for every participant of a job."""

    epochs: int = 1
    learning_rate: float = 0.1
    batch_size: int = 32
    seed: int = 0

    def round_seed(self, round_number: int, participant_name: str) -> int:
        """A seed per round and participant, so a re-run round repeats exactly. It depends on
        the participant's name, not its key, so runs with fresh keys train alike."""
        name = int.from_bytes(hashlib.sha256(participant_name.encode()).digest()[:4])
        return (self.seed * 1_000_003 + round_number) * 2**32 + name


class Participant:
    """One member training in a job, with its own key, data and store."""

    def __init__(
        self,
        name: str,
        account: LocalAccount,
        data: LabeledTable,
        store: ArtifactStore,
        journal: Journal,
        ledger: Ledger,
        plan: TrainingPlan,
    ) -> None:
        self.name = name
        self.account = account
        self.data = data
        self.store = store
        self.journal = journal
        self.ledger = ledger
        self.plan = plan
        self.domain = Domain(ledger.chain.chain_id, ledger.deployment.ledger)

    @property
    def address(self) -> str:
        return self.account.address

    def train(self, message: RoundOpen) -> UpdateSubmission:
        """Trains one round from the base model the coordinator sent, and signs the result."""
        unpack_objects(self.store, message.objects)
        base = get_model(self.store, message.base_model_digest)
        seed = self.plan.round_seed(message.round, self.name)
        update, num_examples, train_loss = local_train(
            base, self.data.X, self.data.y, seed=seed,
            epochs=self.plan.epochs, learning_rate=self.plan.learning_rate,
            batch_size=self.plan.batch_size,
        )  # fmt: skip
        update_digest = put_model(self.store, update)
        metrics_digest = self.store.put_json(
            {"numExamples": num_examples, "trainLogLoss": train_loss}
        )
        record = UpdateRecord(
            job_id=message.job_id,
            round=message.round,
            participant=self.address,
            update_digest=update_digest,
            base_model_digest=message.base_model_digest,
            num_examples=num_examples,
            metrics_digest=metrics_digest,
        )
        signed = sign_update_record(self.account, self.domain, record)
        record_digest = self.store.put_json(signed.to_json())
        self.journal.append(
            "sent", jobId=message.job_id, round=message.round, record=record_digest.hex()
        )
        objects = [*model_objects(self.store, update_digest), metrics_digest]
        return UpdateSubmission(signed, pack_objects(self.store, objects))

    def check_receipt(self, receipt: RoundReceipt) -> None:
        """Checks the receipt against the chain, which this participant reads itself; a
        failed check is an alarm (:class:`~consortium.protocol.receipts.ReceiptAlarm`)."""
        anchor = receipt.anchor
        sent = self.journal.last("sent", jobId=anchor.job_id, round=anchor.round)
        record = None if sent is None else self.store.get(bytes.fromhex(sent["record"]))
        check_receipt(receipt, self.ledger, record, self.name)
