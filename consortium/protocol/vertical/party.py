"""A data party of a vertical job (the guest or the host) as the round engine meets it.

Its features, labels and weights never leave it; what leaves is the protocol's encrypted
messages and, each round, a signed record committing to its round contribution: the digests of
every message it sent and received, and a salted commitment to its weights. It stores the
opening of each commitment (salt and weights) in its own store and journals it, so it can
resume from any round's model and, if it chooses, disclose its weights to an auditor. Its
receipt is checked against the chain it reads itself, as in every protocol.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from eth_account.signers.local import LocalAccount
from numpy.typing import NDArray

from consortium.crypto.eip712 import Domain
from consortium.crypto.update_record import SignedUpdateRecord, UpdateRecord, sign_update_record
from consortium.errors import ConsortiumError
from consortium.fl.vertical.roles import Guest, Host, Transcript, weight_commitment
from consortium.fl.vertical.terms import PROTOCOL
from consortium.ledger.client import Ledger
from consortium.protocol.messages import RoundReceipt
from consortium.protocol.receipts import check_receipt
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.store.models import get_model, put_model

SALT_BYTES = 32


class CommitmentUnknown(ConsortiumError):
    """A party was asked to go on from weights it never committed to."""


@dataclass(frozen=True)
class Contribution:
    """What a data party hands the coordinator for one round: its signed record and the
    objects the record names (the contribution and the party's round metrics), as JSON."""

    record: SignedUpdateRecord
    objects: Mapping[bytes, object]


def commitment_opening(
    name: str, store: ArtifactStore, journal: Journal, commitment: bytes
) -> tuple[bytes, dict[str, NDArray[np.float64]]]:
    """The salt and the weights behind one of party ``name``'s own commitments, from its
    journal and store (a :class:`~consortium.store.journal.JournalReader` serves: nothing is
    written): what it discloses to open the commitment."""
    entry = journal.last("committed", commitment=commitment.hex())
    if entry is None:
        raise CommitmentUnknown(
            f"{name} never committed to weights {commitment.hex()[:16]}…: it cannot "
            "go on from that model"
        )
    opening = store.get_json(bytes.fromhex(entry["opening"]))
    return bytes.fromhex(opening["salt"]), get_model(store, bytes.fromhex(opening["weights"]))


def committed_weights(
    name: str, store: ArtifactStore, journal: Journal, commitment: bytes
) -> dict[str, NDArray[np.float64]]:
    """The weights behind one of party ``name``'s own commitments: what it goes on from in a
    round, and what it scores with once the job is done."""
    return commitment_opening(name, store, journal, commitment)[1]


class VerticalParty:
    """The guest or the host of one job, with its own key, store, journal and chain view."""

    def __init__(
        self,
        name: str,
        account: LocalAccount,
        role: Guest | Host,
        store: ArtifactStore,
        journal: Journal,
        ledger: Ledger,
    ) -> None:
        self.name = name
        self.account = account
        self.role = role
        self.store = store
        self.journal = journal
        self.ledger = ledger
        self.domain = Domain(ledger.chain.chain_id, ledger.deployment.ledger)

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def kind(self) -> str:
        """``"guest"`` or ``"host"``: the party's part in the protocol."""
        return self.role.PARTY

    def commit(self, round_number: int) -> bytes:
        """Commits to the party's weights as they are after round ``round_number`` (0: the
        initial weights, before the job is created), with a fresh salt; stores and journals
        the opening first, so that the commitment can always be opened (and resumed from)."""
        weights = self.role.weights()
        salt = secrets.token_bytes(SALT_BYTES)
        commitment = weight_commitment(weights, salt)
        opening = self.store.put_json(
            {"salt": salt.hex(), "weights": put_model(self.store, weights).hex()}
        )
        self.journal.append(
            "committed", round=round_number, commitment=commitment.hex(), opening=opening.hex()
        )
        return commitment

    def weights_of(self, commitment: bytes) -> dict[str, NDArray[np.float64]]:
        """The weights behind one of this party's own commitments."""
        return committed_weights(self.name, self.store, self.journal, commitment)

    def contribute(
        self, job_id: int, round_number: int, base_model: bytes, transcript: Transcript
    ) -> Contribution:
        """Commits to the weights the round ended with and signs the round's record."""
        commitment = self.commit(round_number)
        contribution = {
            "protocol": PROTOCOL,
            "party": self.kind,
            "round": round_number,
            "weights": commitment.hex(),
            **transcript.to_json(),
        }
        metrics = {"round": round_number, "rows": self.role.terms.rows}
        contribution_digest = self.store.put_json(contribution)
        metrics_digest = self.store.put_json(metrics)
        record = UpdateRecord(
            job_id=job_id,
            round=round_number,
            participant=self.address,
            update_digest=contribution_digest,
            base_model_digest=base_model,
            num_examples=self.role.terms.rows,
            metrics_digest=metrics_digest,
        )
        signed = sign_update_record(self.account, self.domain, record)
        record_digest = self.store.put_json(signed.to_json())
        self.journal.append("sent", jobId=job_id, round=round_number, record=record_digest.hex())
        return Contribution(signed, {contribution_digest: contribution, metrics_digest: metrics})

    def check_receipt(self, receipt: RoundReceipt) -> None:
        anchor = receipt.anchor
        sent = self.journal.last("sent", jobId=anchor.job_id, round=anchor.round)
        record = None if sent is None else self.store.get(bytes.fromhex(sent["record"]))
        check_receipt(receipt, self.ledger, record, self.name)
