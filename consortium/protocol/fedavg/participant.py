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
from consortium.crypto.merkle import verify_inclusion
from consortium.crypto.update_record import UpdateRecord, sign_update_record
from consortium.errors import ChainRevert, ConsortiumError
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
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.store.models import get_model, model_objects, put_model


class ReceiptAlarm(ConsortiumError):
    """A receipt does not prove that this participant's record is in the anchored round."""


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
        """Checks the receipt against the chain; a failed check is an alarm (ReceiptAlarm).

        The anchor in the receipt must hash to the commitment the chain stores for the round,
        which this participant reads itself; then its own record must be in the anchored tree.
        """
        anchor = receipt.anchor
        if (
            max(anchor.round, anchor.participant_count) >= 2**32
            or max(anchor.job_id, anchor.block_number, anchor.timestamp) >= 2**256
        ):  # the contract's uint32 and uint256 fields
            raise ReceiptAlarm(f"{self.name}: the receipt's anchor fields are out of range")
        try:
            on_chain = self.ledger.jobs.round_commitment(anchor.job_id, anchor.round)
        except ChainRevert as exc:  # no such job or round: the receipt claims a false anchor
            raise ReceiptAlarm(
                f"{self.name}: the receipt is for job {anchor.job_id} round {anchor.round}, "
                f"which the chain has not anchored ({exc.name})"
            ) from None
        if anchor.commitment() != on_chain:
            raise ReceiptAlarm(
                f"{self.name}: the receipt for job {anchor.job_id} round {anchor.round} does not "
                "match the commitment on chain"
            )
        if receipt.refusal is not None:
            return  # left out of the round, and told why; nothing of ours to find in the tree
        sent = self.journal.last("sent", jobId=anchor.job_id, round=anchor.round)
        if sent is None or receipt.leaf_index is None:
            raise ReceiptAlarm(
                f"{self.name}: a receipt for round {anchor.round} of job {anchor.job_id} "
                "names an update this participant did not send, or lacks its proof"
            )
        leaf = self.store.get(bytes.fromhex(sent["record"]))  # stored as its JCS bytes
        try:
            verify_inclusion(
                leaf, receipt.leaf_index, anchor.participant_count,
                receipt.proof, anchor.merkle_root,
            )  # fmt: skip
        except ConsortiumError as exc:
            raise ReceiptAlarm(
                f"{self.name}: round {anchor.round} does not include our record: {exc}"
            ) from None
