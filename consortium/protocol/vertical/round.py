"""One ``hetero-lr/1`` round on the coordinator's side: one epoch of the encrypted exchange
between the guest, the host and the arbiter (the coordinator), then each data party's signed
record of what it sent, received and now holds, and the intent the engine anchors.

The round's model is the object naming both data parties' weight commitments; its metrics hold
the arbiter's loss, the convergence verdict and the arbiter's own transcript. A round whose
verdict says converged is final: the engine opens none after it. Redone after a crash, a round
starts from the weights its base model commits to (each party opens its own commitment) and
computes the same weights again: the encrypted arithmetic is exact, only the ciphertexts and
salts differ, and nothing of the lost attempt was anchored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord, sort_key
from consortium.errors import ConsortiumError
from consortium.fl.vertical.hetero_lr import run_epoch
from consortium.fl.vertical.roles import Arbiter
from consortium.fl.vertical.terms import PROTOCOL
from consortium.protocol.base import RoundIntent, RoundRefused, RoundStart
from consortium.protocol.messages import RoundReceipt
from consortium.protocol.vertical.party import Contribution, VerticalParty
from consortium.store.artifacts import ArtifactStore
from consortium.timing import Timings, timed

PROTOCOL_ID = PROTOCOL


def joint_model(
    round_number: int, commitments: Mapping[str, bytes], loss: float | None
) -> dict[str, Any]:
    """The model object of a round: each data party's weight commitment, by address, and the
    loss of the epoch that produced them (None for the initial model), which the arbiter's
    convergence rule compares the next epoch's with."""
    return {
        "protocol": PROTOCOL_ID,
        "round": round_number,
        "weights": {address: c.hex() for address, c in sorted(commitments.items())},
        "loss": loss,
    }


class HeteroLRRound:
    """The coordinator's part of a hetero-lr/1 round: the arbiter, and the two data parties
    reached in this process (a transport to other processes takes their place later)."""

    protocol_id = PROTOCOL_ID

    def __init__(
        self,
        store: ArtifactStore,
        guest: VerticalParty,
        host: VerticalParty,
        arbiter: Arbiter,
        domain: Domain,
    ) -> None:
        self.store = store
        self.parties = {guest.address: guest, host.address: host}
        self.guest, self.host, self.arbiter = guest, host, arbiter
        self.domain = domain

    def run_round(self, start: RoundStart, timings: Timings) -> RoundIntent:
        """Runs epoch ``round - 1`` from the base model's weights and stores everything the
        intent names; adds its phases (train, verify, aggregate) to ``timings``."""
        job, round_number = start.job, start.round
        if sorted(job.participants) != sorted(self.parties):
            raise RoundRefused(f"job {job.id}'s participants are not this round's two parties")
        for party in (self.guest, self.host):
            reason = start.standing.problem(party.address, job, start.dataset_owners)
            if reason is not None:  # each holds half the features: none trains without both
                raise RoundRefused(
                    f"round {round_number} refused: {reason}; a vertical round needs both the "
                    "guest and the host"
                )
        self._resume_from(start.base_model_digest)
        with timed(timings, "train"):
            outcome = run_epoch(self.guest.role, self.host.role, self.arbiter, round_number - 1)
            contributions = [
                party.contribute(
                    job.id, round_number, start.base_model_digest, outcome.transcripts[party.kind]
                )
                for party in (self.guest, self.host)
            ]
        with timed(timings, "verify"):
            for party, contribution in zip((self.guest, self.host), contributions, strict=True):
                self._check(contribution, party, job.id, round_number, start.base_model_digest)
        with timed(timings, "aggregate"):
            records = sorted((c.record for c in contributions), key=sort_key)
            for contribution in contributions:
                for digest, value in contribution.objects.items():
                    if self.store.put_json(value) != digest:
                        raise RoundRefused(f"round {round_number}: an object is not its digest")
            leaves = [self.store.put_json(r.to_json()) for r in records]
            tree = MerkleTree(self.store.get(d) for d in leaves)
            commitments = {
                r.record.participant: bytes.fromhex(
                    self.store.get_json(r.record.update_digest)["weights"]
                )
                for r in records
            }
            model = self.store.put_json(joint_model(round_number, commitments, outcome.loss))
            metrics = self.store.put_json(
                {
                    "round": round_number,
                    "loss": outcome.loss,
                    "converged": outcome.converged,
                    "rows": self.arbiter.terms.rows,
                    "arbiter": outcome.transcripts["arbiter"].to_json(),
                }
            )
        return RoundIntent(
            round_number, tree.root, tree.size, model, metrics, tuple(leaves),
            tuple(r.record.participant for r in records), {}, final=outcome.converged,
        )  # fmt: skip

    def deliver(self, party: str, receipt: RoundReceipt) -> None:
        self.parties[party].check_receipt(receipt)

    def _resume_from(self, base_model: bytes) -> None:
        """Puts each party, and the arbiter's convergence rule, where the base model left
        them: the same weights in a run that goes on, the only ones after a crash."""
        model = self.store.get_json(base_model)
        for party in (self.guest, self.host):
            commitment = bytes.fromhex(model["weights"][party.address])
            party.role.restore(party.weights_of(commitment))
        self.arbiter.restore(model["loss"])

    def _check(
        self,
        contribution: Contribution,
        party: VerticalParty,
        job_id: int,
        round_number: int,
        base_model: bytes,
    ) -> None:
        """The record must be the party's, for this job, round and base model, and name the
        contribution it came with."""
        signed: SignedUpdateRecord = contribution.record
        try:
            signed.verify(self.domain)
        except ConsortiumError as exc:
            raise RoundRefused(f"round {round_number}: {party.name}'s record: {exc}") from None
        record = signed.record
        if (record.participant, record.job_id, record.round, record.base_model_digest) != (
            party.address, job_id, round_number, base_model,
        ) or record.update_digest not in contribution.objects:  # fmt: skip
            raise RoundRefused(f"round {round_number}: {party.name}'s record is not of this round")
