"""Training jobs, round anchors and model uses on the TrainingLedger contract."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field
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

_ANCHOR_ABI_TYPES = [
    "(uint256,uint32,bytes32,uint32,uint256,bytes32,bytes32,bytes32,uint256,uint256)"
]
_JOB_STATUS = {1: "open", 2: "closed"}
SCORE = "score"
"""The use kind of scoring one applicant."""
REFERRAL = "referral"
"""The use kind of scoring a batch of shared, consented subjects into a referral list."""


def participant_mask(job_participants: Sequence[str], round_participants: Iterable[str]) -> int:
    """The mask ``anchorRound`` takes for a round of ``round_participants``: bit i set for the
    job's participant i, in the job's (the contract's) order.

    Raises:
        UsageError: for an address that is not one of the job's participants.
    """
    index = {member.lower(): i for i, member in enumerate(job_participants)}
    mask = 0
    for member in round_participants:
        if member.lower() not in index:
            raise UsageError(f"{member} is not a participant of the job")
        mask |= 1 << index[member.lower()]
    return mask


def mask_participants(job_participants: Sequence[str], mask: int) -> tuple[str, ...]:
    """The job's participants that ``mask`` names, in the job's order."""
    return tuple(p for i, p in enumerate(job_participants) if mask >> i & 1)


@dataclass(frozen=True)
class RoundAnchor:
    """Everything one round commits to on chain; field order is the contract's."""

    job_id: int
    round: int
    merkle_root: bytes
    participant_count: int
    participant_mask: int  # bit i: the job's participant i took part (the contract's order)
    model_digest: bytes
    metrics_digest: bytes
    previous_model_digest: bytes
    block_number: int
    timestamp: int

    def commitment(self) -> bytes:
        """keccak256 of the ABI-encoded fields, exactly as ``computeRoundCommitment``."""
        return keccak(encode(_ANCHOR_ABI_TYPES, [astuple(self)]))


@dataclass(frozen=True)
class ModelUse:
    """One use of a job's model as the chain recorded it: a ``ModelUsed`` event and its block."""

    job_id: int
    use_index: int  # counts from 1 within the job
    caller: ChecksumAddress
    model_digest: bytes
    kind: str  # SCORE, REFERRAL, or another short label
    query_commitment: bytes
    result_commitment: bytes
    subjects: int
    block_number: int
    timestamp: int
    # The hash of the transaction that recorded it: where a user looks the use up, not part of
    # what the use is, so two reads of one use compare equal whether or not they carry it.
    transaction: str | None = field(default=None, compare=False)


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
    model_use_count: int
    head_model_digest: bytes
    checked_participants: int  # the mask of the participants the last full check covered
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
    checked_participants: int  # the mask of the participants the last full check covered
    check_still_holds: bool  # an anchor by those participants may skip the full check


class Jobs:
    """Job creation, round anchoring and job reads of one :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._contract = ledger.training
        self._participants: dict[int, tuple[ChecksumAddress, ...]] = {}

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
        participant_mask: int,
        model_digest: bytes,
        metrics_digest: bytes,
    ) -> tuple[RoundAnchor, TxReceipt]:
        """Anchors a round of the participants of ``participant_mask`` (:func:`participant_mask`)
        and returns the anchor as the chain recorded it."""
        transactor = self._ledger.transactor
        signed = self.sign_anchor(
            job_id, round_number, merkle_root, participant_mask, model_digest, metrics_digest
        )
        receipt = transactor.confirm(transactor.broadcast(signed))
        return self.anchor_in(receipt), receipt

    def sign_anchor(
        self,
        job_id: int,
        round_number: int,
        merkle_root: bytes,
        participant_mask: int,
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
            participant_mask,
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

    def _block_time(self, event: Any, timestamp: Any) -> int:
        """The time of ``event``'s block: ``timestamp`` where the node sent it, else the block's."""
        if timestamp is None:
            timestamp = self._ledger.chain.w3.eth.get_block(event["blockNumber"])["timestamp"]
        return _integer(timestamp)

    def _anchor_of(self, event: Any, timestamp: Any = None) -> RoundAnchor:
        """The anchor a ``RoundAnchored`` event records, with its block's number and time."""
        args = event["args"]
        return RoundAnchor(
            job_id=args["jobId"],
            round=args["round"],
            merkle_root=bytes(args["merkleRoot"]),
            participant_count=args["participantCount"],
            participant_mask=args["participantMask"],
            model_digest=bytes(args["modelDigest"]),
            metrics_digest=bytes(args["metricsDigest"]),
            previous_model_digest=bytes(args["previousModelDigest"]),
            block_number=event["blockNumber"],
            timestamp=self._block_time(event, timestamp),
        )

    def _job_logs(
        self, event_name: str, job_id: int, first_block: int, last_block: int, chunk: int
    ) -> Iterator[Any]:
        """The job's ``event_name`` logs between two blocks, oldest first, read in ranges of
        ``chunk`` blocks, since nodes cap a range and the embedded chain's cost grows with it."""
        event = self._contract.events[event_name]()
        for start in range(first_block, last_block + 1, chunk):
            end = min(start + chunk - 1, last_block)
            yield from event.get_logs(
                from_block=start, to_block=end, argument_filters={"jobId": job_id}
            )

    def logged_anchors(
        self, job_id: int, first_block: int, last_block: int, chunk: int = 2_000
    ) -> dict[int, tuple[RoundAnchor, str]]:
        """The job's ``RoundAnchored`` events between two blocks, by round, each with the hash
        of the transaction that anchored it; for rebuilding what a coordinator lost, not for
        any round's critical path."""
        found: dict[int, tuple[RoundAnchor, str]] = {}
        for log in self._job_logs("RoundAnchored", job_id, first_block, last_block, chunk):
            anchor = self._anchor_of(log)
            found[anchor.round] = (anchor, log["transactionHash"].to_0x_hex())
        return found

    def record_model_use(
        self,
        job_id: int,
        model_digest: str | bytes,
        kind: str,
        query_commitment: str | bytes,
        result_commitment: str | bytes,
        subjects: int,
    ) -> ModelUse:
        """Records that the signer (the job's consumer or coordinator) used the job's head
        model on ``subjects`` data subjects, committing to the query and its result, and
        returns the use as the chain recorded it. The contract refuses it once the job's
        consents no longer hold."""
        if not 0 <= subjects < 2**32:
            raise UsageError(f"subjects must be a count below 2**32, got {subjects}")
        fn = self._contract.functions.recordModelUse(
            job_id,
            bytes32(model_digest, "model digest"),
            encode_purpose(kind, "use kind"),
            bytes32(query_commitment, "query commitment"),
            bytes32(result_commitment, "result commitment"),
            subjects,
        )
        receipt = self._ledger.send(fn)
        (event,) = self._ledger.events(self._contract, "ModelUsed", receipt)
        return self._use_of(event, receipt.get("blockTimestamp"))

    def model_uses(self, job_id: int, chunk: int = 2_000) -> list[ModelUse]:
        """Every recorded use of the job's model in use order, read from the ``ModelUsed``
        events between the job's creation and the latest block; for an auditor's listing, not
        for a scoring's critical path. An unknown job is a ChainRevert ``UnknownJob``."""
        first_block = self.get(job_id).created_block
        last_block = self._ledger.chain.w3.eth.block_number
        logs = self._job_logs("ModelUsed", job_id, first_block, last_block, chunk)
        return [self._use_of(log) for log in logs]

    def model_use_count(self, job_id: int) -> int:
        """How many uses of the job's model were recorded: the last use index."""
        return int(self._ledger.call(self._contract.functions.modelUseCount(job_id)))

    def _use_of(self, event: Any, timestamp: Any = None) -> ModelUse:
        """The use a ``ModelUsed`` event records, with its block's number and time."""
        args = event["args"]
        return ModelUse(
            job_id=args["jobId"],
            use_index=args["useIndex"],
            caller=to_checksum_address(args["caller"]),
            model_digest=bytes(args["modelDigest"]),
            kind=decode_purpose(bytes(args["useKind"])),
            query_commitment=bytes(args["queryCommitment"]),
            result_commitment=bytes(args["resultCommitment"]),
            subjects=args["subjects"],
            block_number=event["blockNumber"],
            timestamp=self._block_time(event, timestamp),
            transaction=event["transactionHash"].to_0x_hex(),
        )

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
            use_count,
            head_model,
            checked_participants,
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
            model_use_count=use_count,
            head_model_digest=bytes(head_model),
            checked_participants=checked_participants,
            consumer=to_checksum_address(consumer),
            created_at=created_at,
            created_block=created_block,
            purpose=decode_purpose(bytes(purpose)),
            model_spec_digest=bytes(spec),
            initial_model_digest=bytes(initial_model),
            participants=tuple(to_checksum_address(p) for p in participants),
            dataset_ids=tuple(dataset_ids),
        )

    def participants(self, job_id: int) -> tuple[ChecksumAddress, ...]:
        """The job's participants in its order; read once, since ``createJob`` fixes them."""
        if job_id not in self._participants:
            self._participants[job_id] = self.get(job_id).participants
        return self._participants[job_id]

    def progress(self, job_id: int) -> JobProgress:
        """Where the job stands before its next round: the contract's ``jobProgress``, which
        also tells which participants the job's last full check of membership and consent
        covered, and whether it still holds (no change anywhere since, and now inside the
        consents' common window)."""
        status, last_round, head, checked, holds = self._ledger.call(
            self._contract.functions.jobProgress(job_id)
        )
        return JobProgress(_JOB_STATUS[status], last_round, bytes(head), checked, bool(holds))

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
