"""The coordinator journal's entries as types: what each kind holds, written and read back.

The round engine journals a job in six kinds of entry (DESIGN.md, step 5): ``job`` binds the
journal to its job, ledger and chain; ``opened`` starts a round from a base model; ``intent``
(:class:`~consortium.protocol.base.RoundIntent`) says what the round will anchor; ``signed``
records an anchor transaction before it is sent; ``anchored`` the anchor as mined; and
``delivered`` the receipts handed out. Each type here writes exactly the fields journals on
disk hold, so journals written before these types existed read the same.

A journal is hostile input when read back: it can be edited, or restored from a copy, by hand.
So every field is checked on the way in, and a wrong one is a one-line :class:`MalformedEntry`
naming the entry's kind and round, not a KeyError three calls further on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from eth_utils import is_address, keccak
from hexbytes import HexBytes

from consortium.chain.transact import SignedTransaction
from consortium.crypto.digests import from_hex32, hex32
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import RoundAnchor
from consortium.protocol.base import RoundIntent
from consortium.protocol.messages import anchor_from_json, anchor_to_json
from consortium.store.journal import CorruptJournal, Journal

INTENT = "intent"  # RoundIntent's kind: that type belongs to the protocols and knows none
REPAIR = "`consortium journal repair` rebuilds it from the chain and the store"
_SHOWN = 60  # characters of a wrong value quoted in an error: a hostile one may be huge
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
_RAW = re.compile(r"0x(?:[0-9a-f]{2})+")

T = TypeVar("T")


class MalformedEntry(CorruptJournal):
    """A journal entry that parses as JSON holds a field that is missing or wrong."""


class _Wrong(Exception):
    """What is wrong with one field; :func:`_reading` names the entry around it."""


@dataclass(frozen=True)
class JobBinding:
    """The journal's first entry: the job, ledger and chain its rounds belong to, and the
    whole deployment, so that the journal alone says where to export from. The deployment is
    kept as written and parsed by whoever needs it, since its errors name the file it is in;
    journals begun before the entry carried it, and ledger-less runs, have none."""

    KIND: ClassVar[str] = "job"

    job_id: int
    ledger: str | None
    chain_id: int | None
    deployment: Mapping[str, Any] | None = None

    @classmethod
    def for_ledger(cls, ledger: Ledger, job_id: int) -> JobBinding:
        """The binding of job ``job_id`` of ``ledger``'s deployment."""
        deployment = ledger.deployment
        return cls(job_id, deployment.ledger, ledger.chain.chain_id, deployment.to_json())

    def identity(self) -> tuple[int, str | None, int | None]:
        """What two bindings of one job share: job, ledger and chain."""
        return (self.job_id, self.ledger, self.chain_id)

    def recorded_deployment(self, source: str) -> Deployment | None:
        """The deployment recorded, if any; ``source`` names the entry in errors."""
        if self.deployment is None:
            return None
        return Deployment.from_json(dict(self.deployment), source=source)

    def to_json(self) -> dict[str, Any]:
        recorded = {} if self.deployment is None else {"deployment": dict(self.deployment)}
        return {"jobId": self.job_id, "ledger": self.ledger, "chainId": self.chain_id, **recorded}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> JobBinding:
        with _reading(cls.KIND, entry):
            ledger = _get(entry, "ledger")
            if ledger is not None and not (isinstance(ledger, str) and is_address(ledger)):
                raise _Wrong(f"ledger must be an address or null, not {_shown(ledger)}")
            chain_id = None if _get(entry, "chainId") is None else _integer(entry, "chainId", 0)
            deployment = entry.get("deployment")
            if "deployment" in entry and not isinstance(deployment, dict):
                raise _Wrong(f"deployment must be an object, not {_shown(deployment)}")
            return cls(_integer(entry, "jobId", 0), ledger, chain_id, deployment)


@dataclass(frozen=True)
class RoundOpened:
    """A round begun from ``base``: the chain's head model, or the previous round's intent's
    model while that round's anchor is in flight."""

    KIND: ClassVar[str] = "opened"

    round: int
    base: bytes

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "base": hex32(self.base)}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> RoundOpened:
        with _reading(cls.KIND, entry):
            return cls(_round(entry), _digest(entry, "base"))


@dataclass(frozen=True)
class AnchorSigned:
    """One attempt at a round's anchor, signed and journaled before it is sent: a coordinator
    that crashed after sending it finds it here and looks it up instead of signing again."""

    KIND: ClassVar[str] = "signed"

    round: int
    transaction: SignedTransaction

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "txHash": self.transaction.tx_hash.to_0x_hex(),
            "raw": self.transaction.raw.to_0x_hex(),
            "nonce": self.transaction.nonce,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> AnchorSigned:
        with _reading(cls.KIND, entry):
            tx_hash, raw = _hex(entry, "txHash", _TX_HASH), _hex(entry, "raw", _RAW)
            if keccak(raw) != tx_hash:
                raise _Wrong("txHash is not the hash of raw")
            transaction = SignedTransaction(tx_hash, raw, _integer(entry, "nonce", 0))
            return cls(_round(entry), transaction)


@dataclass(frozen=True)
class AnchorMined:
    """A round's anchor as mined, with its transaction and the gas it used: what an anchorer
    returns, and what the journal's ``anchored`` entry records. A round resumed after the node
    lost its anchor may have a second one, mined in another block, which supersedes it."""

    KIND: ClassVar[str] = "anchored"

    anchor: RoundAnchor
    tx_hash: str
    gas_used: int

    @property
    def round(self) -> int:
        return self.anchor.round

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "anchor": anchor_to_json(self.anchor),
            "txHash": self.tx_hash,
            "gasUsed": self.gas_used,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> AnchorMined:
        with _reading(cls.KIND, entry):
            number = _round(entry)
            written = _get(entry, "anchor")
            if not isinstance(written, dict):
                raise _Wrong(f"anchor must be an object, not {_shown(written)}")
            try:
                anchor = anchor_from_json(written)
            except KeyError as exc:
                raise _Wrong(f"its anchor has no {exc.args[0]}") from None
            except UsageError as exc:
                raise _Wrong(f"its anchor's {exc}") from None
            if anchor.round != number:
                raise _Wrong(f"its anchor is of round {anchor.round}")
            tx_hash = _hex(entry, "txHash", _TX_HASH).to_0x_hex()
            return cls(anchor, tx_hash, _integer(entry, "gasUsed", 0))


@dataclass(frozen=True)
class RoundDelivered:
    """A round's receipts handed out: the parties whose delivery failed, with the reason.
    ``rebuilt`` marks a round a repair rebuilt from the chain, whose receipts may not all have
    been delivered; each participant can check its anchor against the chain at any time."""

    KIND: ClassVar[str] = "delivered"

    round: int
    failures: Mapping[str, str] = field(default_factory=dict)
    rebuilt: bool = False

    def to_json(self) -> dict[str, Any]:
        marked = {"rebuilt": True} if self.rebuilt else {}
        return {"round": self.round, "failures": dict(self.failures), **marked}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> RoundDelivered:
        with _reading(cls.KIND, entry):
            rebuilt = entry.get("rebuilt", False)
            if not isinstance(rebuilt, bool):
                raise _Wrong(f"rebuilt must be true or false, not {_shown(rebuilt)}")
            return cls(_round(entry), _reasons(entry, "failures"), rebuilt)


JournalEntry = JobBinding | RoundOpened | RoundIntent | AnchorSigned | AnchorMined | RoundDelivered


def intent_from_json(entry: Mapping[str, Any]) -> RoundIntent:
    """A journaled ``intent``, its fields checked first: :meth:`RoundIntent.from_json` takes
    them as the protocol wrote them."""
    with _reading(INTENT, entry):
        _round(entry)
        _integer(entry, "count", 0)
        for name in ("root", "model", "metrics"):
            _digest(entry, name)
        records = _get(entry, "records")
        if not isinstance(records, list):
            raise _Wrong(f"records must be a list, not {_shown(records)}")
        for index, digest in enumerate(records):
            _hex32(digest, f"records[{index}]")
        participants = _get(entry, "participants")
        if not isinstance(participants, list) or not all(isinstance(p, str) for p in participants):
            raise _Wrong(f"participants must be a list of strings, not {_shown(participants)}")
        _reasons(entry, "refused")
        if entry.get("final", False) not in (True, False):
            raise _Wrong(f"final must be true or false, not {_shown(entry['final'])}")
        return RoundIntent.from_json(entry)


def parse(entry: Mapping[str, Any]) -> JournalEntry | None:
    """The typed form of any coordinator journal entry; None for a kind it does not write."""
    parser = _PARSERS.get(entry.get("kind"))
    return None if parser is None else parser(entry)


def _kind(entry: JournalEntry) -> str:
    """The kind an entry is journaled as."""
    return INTENT if isinstance(entry, RoundIntent) else entry.KIND


def as_line(entry: JournalEntry) -> dict[str, Any]:
    """The entry as a journal line holds it, kind included, without its sequence number."""
    return {"kind": _kind(entry), **entry.to_json()}


def record(journal: Journal, entry: JournalEntry) -> None:
    """Appends ``entry`` to ``journal`` and returns once it is on disk."""
    journal.append(_kind(entry), **entry.to_json())


# ------------------------------------------------------------------------ reading a journal


def job_binding(journal: Journal) -> JobBinding | None:
    """The journal's binding to its job, if it has one."""
    return _newest(journal, JobBinding.from_json, journal.find(JobBinding.KIND))


def last_opened(journal: Journal, round_number: int) -> RoundOpened | None:
    return _newest(
        journal, RoundOpened.from_json, journal.find(RoundOpened.KIND, round=round_number)
    )


def last_intent(journal: Journal, round_number: int) -> RoundIntent | None:
    return _newest(journal, intent_from_json, journal.find(INTENT, round=round_number))


def signed_attempts(journal: Journal, round_number: int) -> list[AnchorSigned]:
    """Every journaled attempt at the round's anchor, oldest first."""
    found = journal.find(AnchorSigned.KIND, round=round_number)
    return _parsed(journal, AnchorSigned.from_json, found)


def last_anchored(journal: Journal, round_number: int) -> AnchorMined | None:
    """The round's newest journaled anchor: the one the chain holds, once the round is done."""
    found = journal.find(AnchorMined.KIND, round=round_number)
    return _newest(journal, AnchorMined.from_json, found)


def all_anchored(journal: Journal) -> list[AnchorMined]:
    """Every journaled anchor, superseded ones included, in journal order."""
    return _parsed(journal, AnchorMined.from_json, journal.find(AnchorMined.KIND))


def newest_anchored(journal: Journal) -> list[AnchorMined]:
    """The newest journaled anchor of each round, in round order."""
    newest = {anchored.round: anchored for anchored in all_anchored(journal)}
    return [newest[number] for number in sorted(newest)]


def last_delivered(journal: Journal, round_number: int) -> RoundDelivered | None:
    found = journal.find(RoundDelivered.KIND, round=round_number)
    return _newest(journal, RoundDelivered.from_json, found)


def _newest(
    journal: Journal, parser: Callable[[Mapping[str, Any]], T], found: list[dict[str, Any]]
) -> T | None:
    return _parsed(journal, parser, found[-1:])[0] if found else None


def _parsed(
    journal: Journal, parser: Callable[[Mapping[str, Any]], T], found: list[dict[str, Any]]
) -> list[T]:
    """``found`` parsed; an error names the journal's file and how to mend it."""
    try:
        return [parser(entry) for entry in found]
    except MalformedEntry as exc:
        raise MalformedEntry(f"{journal.path}: {exc}; {REPAIR}") from None


_PARSERS: dict[str, Callable[[Mapping[str, Any]], JournalEntry]] = {
    JobBinding.KIND: JobBinding.from_json,
    RoundOpened.KIND: RoundOpened.from_json,
    INTENT: intent_from_json,
    AnchorSigned.KIND: AnchorSigned.from_json,
    AnchorMined.KIND: AnchorMined.from_json,
    RoundDelivered.KIND: RoundDelivered.from_json,
}


# ------------------------------------------------------------------------ checking fields


@contextmanager
def _reading(kind: str, entry: Mapping[str, Any]) -> Iterator[None]:
    """Turns a wrong field met inside into the one-line error naming the entry."""
    try:
        yield
    except _Wrong as exc:
        number = entry.get("round")
        where = "" if kind == JobBinding.KIND else f" of round {_shown(number)}"
        raise MalformedEntry(f'the journal\'s "{kind}" entry{where} is malformed: {exc}') from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _get(entry: Mapping[str, Any], name: str) -> Any:
    if name not in entry:
        raise _Wrong(f"it has no {name}")
    return entry[name]


def _integer(entry: Mapping[str, Any], name: str, minimum: int) -> int:
    value = _get(entry, name)
    # bool is an int subclass, but True is no round, nonce or amount of gas.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        least = "a positive" if minimum == 1 else "a non-negative"
        raise _Wrong(f"{name} must be {least} integer, not {_shown(value)}")
    return value


def _round(entry: Mapping[str, Any]) -> int:
    return _integer(entry, "round", 1)


def _digest(entry: Mapping[str, Any], name: str) -> bytes:
    return _hex32(_get(entry, name), name)


def _hex32(value: Any, what: str) -> bytes:
    try:
        return from_hex32(value, what=what)
    except UsageError as exc:
        raise _Wrong(str(exc)) from None


def _hex(entry: Mapping[str, Any], name: str, form: re.Pattern[str]) -> HexBytes:
    value = _get(entry, name)
    if not isinstance(value, str) or not form.fullmatch(value):
        raise _Wrong(f"{name} must be lowercase hex after 0x, not {_shown(value)}")
    return HexBytes(value)


def _reasons(entry: Mapping[str, Any], name: str) -> dict[str, str]:
    """An object of parties and the reason each was refused or failed."""
    value = _get(entry, name)
    if not isinstance(value, dict) or not all(isinstance(r, str) for r in value.values()):
        raise _Wrong(f"{name} must be an object of reasons, not {_shown(value)}")
    return dict(value)
