"""Training jobs and round anchors on the TrainingLedger contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from eth_abi import encode
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from web3.types import TxReceipt

from consortium.chain.transact import SignedTransaction
from consortium.errors import UsageError
from consortium.ledger.values import address, bytes32, decode_purpose, encode_purpose

if TYPE_CHECKING:
    from consortium.ledger.client import Ledger

_ANCHOR_ABI_TYPES = ["(uint256,uint32,bytes32,uint32,bytes32,bytes32,bytes32,uint256,uint256)"]
_JOB_STATUS = {1: "open", 2: "closed"}


@dataclass(frozen=True)
class RoundAnchor:
    """Everything one round commits to on chain; field order is the contract's."""

    job_id: int
    round: int
    merkle_root: bytes
    participant_count: int
    model_digest: bytes
    metrics_digest: bytes
    previous_model_digest: bytes
    block_number: int
    timestamp: int

    def commitment(self) -> bytes:
        """keccak256 of the ABI-encoded fields, exactly as ``computeRoundCommitment``."""
        return keccak(encode(_ANCHOR_ABI_TYPES, [astuple(self)]))


@dataclass(frozen=True)
class Job:
    """A training job as recorded on chain."""

    id: int
    coordinator: ChecksumAddress
    status: str
    last_round: int
    last_anchor_block: int
    checked_membership_epoch: int
    checked_consent_epoch: int
    consent_window: tuple[int, int]
    head_model_digest: bytes
    consumer: ChecksumAddress
    created_at: int
    created_block: int
    purpose: str
    model_spec_digest: bytes
    initial_model_digest: bytes
    participants: tuple[ChecksumAddress, ...]
    dataset_ids: tuple[int, ...]


@dataclass(frozen=True)
class JobProgress:
    """What changes of a job between rounds, read in one call before each round."""

    status: str
    last_round: int
    head_model_digest: bytes
    check_still_holds: bool  # the next anchor may skip the full membership and consent check


class Jobs:
    """Job creation, round anchoring and job reads of one :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._contract = ledger.training

    def create(
        self,
        *,
        purpose: str,
        model_spec_digest: str | bytes,
        initial_model_digest: str | bytes,
        consumer: str,
        participants: Sequence[str],
        dataset_ids: Sequence[int],
    ) -> int:
        """Creates a job coordinated by the signer; participants are sorted here, as the
        contract requires, but a duplicate is the caller's mistake and is refused."""
        ordered = sorted((address(p) for p in participants), key=lambda a: int(a, 16))
        duplicates = sorted({a for a, b in pairwise(ordered) if a == b})
        if duplicates:
            raise UsageError(f"participants listed more than once: {', '.join(duplicates)}")
        fn = self._contract.functions.createJob(
            encode_purpose(purpose),
            bytes32(model_spec_digest, "model spec digest"),
            bytes32(initial_model_digest, "initial model digest"),
            address(consumer),
            ordered,
            list(dataset_ids),
        )
        receipt = self._ledger.send(fn)
        (event,) = self._ledger.events(self._contract, "JobCreated", receipt)
        return int(event["args"]["jobId"])

    def anchor(
        self,
        job_id: int,
        round_number: int,
        merkle_root: bytes,
        participant_count: int,
        model_digest: bytes,
        metrics_digest: bytes,
    ) -> tuple[RoundAnchor, TxReceipt]:
        """Anchors a round and returns the anchor as the chain recorded it."""
        transactor = self._ledger.transactor
        signed = self.sign_anchor(
            job_id, round_number, merkle_root, participant_count, model_digest, metrics_digest
        )
        receipt = transactor.confirm(transactor.broadcast(signed))
        return self.anchor_in(receipt), receipt

    def sign_anchor(
        self,
        job_id: int,
        round_number: int,
        merkle_root: bytes,
        participant_count: int,
        model_digest: bytes,
        metrics_digest: bytes,
        *,
        gas: int | None = None,
    ) -> SignedTransaction:
        """The signed ``anchorRound`` transaction, not yet sent: a coordinator journals it
        first so that after a crash it can resend exactly this transaction. A round the
        contract would refuse raises ChainRevert here, unless ``gas`` (a limit known from an
        earlier anchor on the job's fast path) spares the estimate that would find it."""
        fn = self._contract.functions.anchorRound(
            job_id,
            round_number,
            bytes32(merkle_root, "merkle root"),
            participant_count,
            bytes32(model_digest, "model digest"),
            bytes32(metrics_digest, "metrics digest"),
        )
        return self._ledger.transactor.sign(fn, gas=gas)

    def anchor_in(self, receipt: TxReceipt) -> RoundAnchor:
        """The round anchor that the ``anchorRound`` transaction of ``receipt`` recorded. The
        block's time comes from the receipt where the node puts it there (``blockTimestamp``,
        as anvil and reth do), else from the block."""
        (event,) = self._ledger.events(self._contract, "RoundAnchored", receipt)
        return self._anchor_of(event, receipt.get("blockTimestamp"))

    def _anchor_of(self, event: Any, timestamp: Any = None) -> RoundAnchor:
        """The anchor a ``RoundAnchored`` event records, with its block's number and time."""
        args = event["args"]
        if timestamp is None:
            timestamp = self._ledger.chain.w3.eth.get_block(event["blockNumber"])["timestamp"]
        return RoundAnchor(
            job_id=args["jobId"],
            round=args["round"],
            merkle_root=bytes(args["merkleRoot"]),
            participant_count=args["participantCount"],
            model_digest=bytes(args["modelDigest"]),
            metrics_digest=bytes(args["metricsDigest"]),
            previous_model_digest=bytes(args["previousModelDigest"]),
            block_number=event["blockNumber"],
            timestamp=_integer(timestamp),
        )

    def logged_anchors(
        self, job_id: int, first_block: int, last_block: int, chunk: int = 2_000
    ) -> dict[int, tuple[RoundAnchor, str]]:
        """The job's ``RoundAnchored`` events between two blocks, by round, each with the hash
        of the transaction that anchored it. Logs are read in ranges of ``chunk`` blocks, since
        nodes cap a range and the embedded chain's cost grows with it; for rebuilding what a
        coordinator lost, not for any round's critical path."""
        event = self._contract.events.RoundAnchored()
        found: dict[int, tuple[RoundAnchor, str]] = {}
        for start in range(first_block, last_block + 1, chunk):
            end = min(start + chunk - 1, last_block)
            logs = event.get_logs(
                from_block=start, to_block=end, argument_filters={"jobId": job_id}
            )
            for log in logs:
                anchor = self._anchor_of(log)
                found[anchor.round] = (anchor, log["transactionHash"].to_0x_hex())
        return found

    def close(self, job_id: int) -> TxReceipt:
        """Closes the job; no further round can be anchored."""
        return self._ledger.send(self._contract.functions.closeJob(job_id))

    def get(self, job_id: int) -> Job:
        raw = self._ledger.call(self._contract.functions.getJob(job_id))
        (
            coordinator,
            last_round,
            status,
            last_anchor_block,
            membership_epoch,
            consent_epoch,
            window_start,
            window_end,
            head_model,
            consumer,
            created_at,
            created_block,
            purpose,
            spec,
            initial_model,
            participants,
            dataset_ids,
        ) = raw
        return Job(
            id=job_id,
            coordinator=to_checksum_address(coordinator),
            status=_JOB_STATUS[status],
            last_round=last_round,
            last_anchor_block=last_anchor_block,
            checked_membership_epoch=membership_epoch,
            checked_consent_epoch=consent_epoch,
            consent_window=(window_start, window_end),
            head_model_digest=bytes(head_model),
            consumer=to_checksum_address(consumer),
            created_at=created_at,
            created_block=created_block,
            purpose=decode_purpose(bytes(purpose)),
            model_spec_digest=bytes(spec),
            initial_model_digest=bytes(initial_model),
            participants=tuple(to_checksum_address(p) for p in participants),
            dataset_ids=tuple(dataset_ids),
        )

    def progress(self, job_id: int) -> JobProgress:
        """Where the job stands before its next round: the contract's ``jobProgress``, which
        also tells whether the job's last full check of membership and consent still holds
        (no change anywhere since, and now inside the consents' common window)."""
        status, last_round, head, holds = self._ledger.call(
            self._contract.functions.jobProgress(job_id)
        )
        return JobProgress(_JOB_STATUS[status], last_round, bytes(head), bool(holds))

    def count(self) -> int:
        return int(self._ledger.call(self._contract.functions.jobCount()))

    def round_commitment(self, job_id: int, round_number: int) -> bytes:
        """The commitment stored for a round; an unanchored round is a ChainRevert."""
        fn = self._contract.functions.roundCommitment(job_id, round_number)
        return bytes(self._ledger.call(fn))

    def verify(self, anchor: RoundAnchor) -> bool:
        """Whether the chain holds exactly ``anchor`` for its job and round."""
        return bool(self._ledger.call(self._contract.functions.verifyRound(astuple(anchor))))


def _integer(value: Any) -> int:
    """A quantity as a node may send it outside web3's formatters: an int or a hex string."""
    return int(value, 16) if isinstance(value, str) else int(value)
