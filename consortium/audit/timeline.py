"""The registries' and the job's events, read in bounded block ranges: for the ``events``
check and for the report's timeline, besides the gas of each anchoring transaction.

Membership and consent changes are only visible as events, so both the check that events and
state agree and the report's timeline scan logs. The scan is bounded on both sides and done in
fixed-size block ranges: it starts at the deployment block (never at block 0, which on the
embedded chain costs time quadratic in the number of events and on a public node means
millions of empty blocks) and stops at the job's last anchoring block. Each range costs one
``eth_getLogs`` call for the two registries and, for the timeline only, one for the ledger's
events of this job (filtered by the indexed job id on the node). The audit reads the registry
events once, forward, as its rounds advance (:class:`RegistryEvents`); the report reads its
timeline afterwards, and nothing it reads feeds the verdict.

Addresses come from the trusted ledger's immutables, not from the bundle, so a bundle cannot
make the audit or the timeline read another registry's history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract
from web3.exceptions import TransactionNotFound, Web3Exception

from consortium.chain.base import Chain
from consortium.errors import ConsortiumError
from consortium.ledger.roles import Role
from consortium.ledger.values import decode_purpose

LOG_CHUNK = 2_000
"""Blocks per ``eth_getLogs`` range: small enough for public nodes' range limits."""

MEMBERSHIP_EVENTS = ("MemberAdded", "MemberRemoved", "MemberLeft", "RolesChanged", "QuorumChanged")
CONSENT_EVENTS = (
    "DatasetRegistered",
    "SubjectsRootUpdated",
    "ConsentGranted",
    "ConsentRevoked",
    "SignedGrantsCancelled",
)
JOB_EVENTS = ("JobCreated", "RoundAnchored", "JobRevalidated", "JobClosed")

#: Exceptions a read from a node can end in: the report shows them instead of failing, and the
#: ``events`` check makes them an undecided result.
CHAIN_ERRORS = (Web3Exception, ValueError, OSError, ConsortiumError)


def first_line(exc: BaseException) -> str:
    """An error as one line: its message's first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReplayError(ConsortiumError):
    """The events cannot be replayed to the block asked for: the bundle's fault, not the node's
    (a deployment block the chain contradicts, rounds whose blocks go backwards)."""


@dataclass(frozen=True)
class ChainEvent:
    """One event of the timeline, already worded for people (the renderer escapes it)."""

    block: int
    log_index: int
    kind: str  # "membership", "consent" or "job"
    name: str  # the event's name in the contract
    detail: str
    transaction: str
    round: int | None = None  # for RoundAnchored: the round it anchored
    args: Mapping[str, Any] = field(default_factory=dict)  # decoded, for replaying state


@dataclass(frozen=True)
class AnchorGas:
    """What the chain says about a round's anchoring transaction."""

    gas_used: int
    block_number: int
    status: int


def anchor_gas(chain: Chain, tx_hash: str) -> AnchorGas | None:
    """The receipt facts of ``tx_hash``; None when the chain knows no such transaction."""
    try:
        receipt = chain.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        return None
    return AnchorGas(
        gas_used=int(receipt["gasUsed"]),
        block_number=int(receipt["blockNumber"]),
        status=int(receipt["status"]),
    )


def deployed_at(chain: Chain, address: str, block: int) -> bool | None:
    """Whether ``block`` is where the contract at ``address`` appeared: code there and none
    in the block before. None when the node cannot serve those blocks' state (no archive).

    The deployment block comes from the (untrusted) manifest and decides where the log scan
    starts, so it is checked before a scan is allowed to start there.
    """
    if block < 1:
        return False
    try:
        w3 = chain.w3
        target = to_checksum_address(address)
        return bool(w3.eth.get_code(target, block)) and not w3.eth.get_code(target, block - 1)
    except CHAIN_ERRORS:
        return None


def block_ranges(start: int, end: int, chunk: int = LOG_CHUNK) -> Iterator[tuple[int, int]]:
    """Inclusive ``(from, to)`` ranges of at most ``chunk`` blocks covering ``start..end``."""
    if chunk < 1:
        raise ValueError("chunk must be positive")
    for first in range(start, end + 1, chunk):
        yield first, min(first + chunk - 1, end)


class TimelineReader:
    """Reads the membership, consent and job events of one job in bounded block ranges.

    ``registry``, ``consents`` and ``ledger`` are the contracts (bound to the trusted
    addresses); ``datasets`` limits consent events to the job's datasets (other datasets'
    consents say nothing about this job), while every membership change is kept, as any of
    them can matter to who may take part.
    """

    def __init__(
        self,
        chain: Chain,
        *,
        registry: Contract,
        consents: Contract,
        ledger: Contract,
        job_id: int,
        datasets: Iterable[int],
        chunk: int = LOG_CHUNK,
    ) -> None:
        self.chain = chain
        self.job_id = job_id
        self.datasets = frozenset(datasets)
        self.chunk = chunk
        self._registries: dict[bytes, tuple[str, Any]] = {}
        for contract, names, kind in (
            (registry, MEMBERSHIP_EVENTS, "membership"),
            (consents, CONSENT_EVENTS, "consent"),
        ):
            for name in names:
                event = contract.events[name]()
                self._registries[_topic(event)] = (kind, event)
        self._jobs = {_topic(e): e for e in (ledger.events[n]() for n in JOB_EVENTS)}
        self._registry_addresses: list[ChecksumAddress] = [registry.address, consents.address]
        self._ledger_address: ChecksumAddress = ledger.address
        self.queries = 0  # eth_getLogs calls made, for tests and the report's footnote

    def read(self, start: int, end: int) -> list[ChainEvent]:
        """The events of blocks ``start..end`` (inclusive), ordered by block and log index."""
        events: list[ChainEvent] = []
        for first, last in block_ranges(start, end, self.chunk):
            events += self.registry_events(first, last)
            events += self.job_events(first, last)
        events.sort(key=_order)
        return events

    def registry_events(self, first: int, last: int) -> list[ChainEvent]:
        """Membership events and the job's datasets' consent events of blocks ``first..last``,
        in order: one ``eth_getLogs`` call, so the range must be a bounded one."""
        events = []
        for log in self._logs(first, last, self._registry_addresses, [_topics(self._registries)]):
            kind, event = self._registries[bytes(log["topics"][0])]
            decoded = event.process_log(log)
            args = decoded["args"]
            if kind == "consent" and int(args["datasetId"]) not in self.datasets:
                continue
            events.append(_event(kind, decoded["event"], args, log))
        events.sort(key=_order)
        return events

    def job_events(self, first: int, last: int) -> list[ChainEvent]:
        """The ledger's events of this job in blocks ``first..last``: one ``eth_getLogs`` call."""
        topics = [_topics(self._jobs), "0x" + self.job_id.to_bytes(32, "big").hex()]
        events = []
        for log in self._logs(first, last, [self._ledger_address], topics):
            decoded = self._jobs[bytes(log["topics"][0])].process_log(log)
            events.append(_event("job", decoded["event"], decoded["args"], log))
        return events

    def _logs(
        self, first: int, last: int, addresses: Sequence[ChecksumAddress], topics: list[Any]
    ) -> list[Any]:
        self.queries += 1
        return list(
            self.chain.w3.eth.get_logs(
                {"fromBlock": first, "toBlock": last, "address": list(addresses), "topics": topics}
            )
        )


class RegistryEvents:
    """The registry events from block ``start`` on, handed out in block order as far as each
    call asks: every block range is read once per audit, however many rounds there are.

    Ranges are read ahead up to ``horizon`` (the job's last anchoring block), so a job whose
    rounds sit in one range costs one ``eth_getLogs`` call; only the events not yet handed out
    are kept. The audit asks for ever later blocks; asking for an earlier one is refused,
    since its events have been handed out already.
    """

    def __init__(self, reader: TimelineReader, start: int, horizon: int) -> None:
        self.reader = reader
        self.start = start
        self.horizon = horizon
        self.through = start - 1  # events of blocks up to here have been handed out
        self._read_through = start - 1
        self._pending: deque[ChainEvent] = deque()

    def until(self, block: int) -> list[ChainEvent]:
        """The events of blocks ``through + 1 .. block`` (none if ``block`` is ``through``).

        Raises:
            ReplayError: ``block`` is before blocks already handed out.
            Web3Exception, ValueError, OSError: the node did not answer a range.
        """
        if block < self.through:
            raise ReplayError(
                f"block {block} comes before block {self.through}, up to which the events "
                "have been replayed already (the rounds are out of block order)"
            )
        end = max(block, self.horizon)
        while self._read_through < block:
            first = self._read_through + 1
            last = min(first + self.reader.chunk - 1, end)
            self._pending.extend(self.reader.registry_events(first, last))
            self._read_through = last
        handed: list[ChainEvent] = []
        while self._pending and self._pending[0].block <= block:
            handed.append(self._pending.popleft())
        self.through = block
        return handed


def _order(event: ChainEvent) -> tuple[int, int]:
    return event.block, event.log_index


def _topic(event: Any) -> bytes:
    """An event's signature hash (web3 gives it as hex text)."""
    return bytes(HexBytes(event.topic))


def _topics(events: dict[bytes, Any]) -> list[str]:
    """An OR-list of event signatures, as ``eth_getLogs`` takes it."""
    return ["0x" + topic.hex() for topic in events]


def _event(kind: str, name: str, args: Any, log: Any) -> ChainEvent:
    detail, round_number = _describe(name, args)
    return ChainEvent(
        block=int(log["blockNumber"]),
        log_index=int(log["logIndex"]),
        kind=kind,
        name=name,
        detail=detail,
        transaction=HexBytes(log["transactionHash"]).to_0x_hex(),
        round=round_number,
        args=dict(args),
    )


def _time(seconds: int) -> str:
    """A chain timestamp as UTC text (the raw number if it is out of the calendar's range)."""
    try:
        return f"{datetime.fromtimestamp(int(seconds), UTC):%Y-%m-%d %H:%M:%S} UTC"
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _roles(value: int) -> str:
    return Role(value).describe() or "none"


def _describe(name: str, a: Any) -> tuple[str, int | None]:
    """A sentence for an event's arguments (and the round, for a RoundAnchored)."""
    if name == "MemberAdded":
        return f"{a['account']} ({a['name']!r}) joined with roles {_roles(a['roles'])}", None
    if name == "MemberRemoved":
        return f"{a['account']} was removed by vote", None
    if name == "MemberLeft":
        return f"{a['account']} left", None
    if name == "RolesChanged":
        return (
            f"{a['account']}: roles {_roles(a['previousRoles'])} -> {_roles(a['roles'])}",
            None,
        )
    if name == "QuorumChanged":
        return f"quorum {a['previousQuorumBps']} -> {a['quorumBps']} bps", None
    if name == "DatasetRegistered":
        return f"dataset {a['datasetId']} ({a['name']!r}) registered by {a['owner']}", None
    if name == "SubjectsRootUpdated":
        return (
            f"dataset {a['datasetId']}: data subjects root version {a['version']} is "
            f"{bytes(a['subjectsRoot']).hex()}",
            None,
        )
    if name == "ConsentGranted":
        return (
            f"dataset {a['datasetId']}: consent for {decode_purpose(bytes(a['purpose']))!r} "
            f"granted to {a['grantee']}, valid from {_time(a['validFrom'])} until "
            f"{_time(a['validUntil'])}",
            None,
        )
    if name == "ConsentRevoked":
        return (
            f"dataset {a['datasetId']}: consent for {decode_purpose(bytes(a['purpose']))!r} "
            f"of {a['grantee']} revoked",
            None,
        )
    if name == "SignedGrantsCancelled":
        return (
            f"dataset {a['datasetId']}: signed grants of the consent for "
            f"{decode_purpose(bytes(a['purpose']))!r} to {a['grantee']} cancelled, the next "
            f"one carries nonce {a['nonce']}",
            None,
        )
    if name == "JobCreated":
        return (
            f"job {a['jobId']} created by {a['coordinator']} for {a['consumer']}: "
            f"{len(a['participants'])} participants, datasets "
            f"{', '.join(str(d) for d in a['datasetIds'])}",
            None,
        )
    if name == "RoundAnchored":
        return (
            f"round {a['round']} anchored: {a['participantCount']} participants, model "
            f"{bytes(a['modelDigest']).hex()}",
            int(a["round"]),
        )
    if name == "JobRevalidated":
        return (
            f"membership (epoch {a['membershipEpoch']}) and consents (epoch "
            f"{a['consentEpoch']}) re-checked, consents valid from {_time(a['windowStart'])} "
            f"until {_time(a['windowEnd'])}",
            None,
        )
    if name == "JobClosed":
        return (
            f"job closed after round {a['lastRound']}, final model {bytes(a['modelDigest']).hex()}",
            None,
        )
    return name, None  # pragma: no cover - every subscribed event is worded above
