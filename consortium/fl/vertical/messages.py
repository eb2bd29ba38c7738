"""The messages of ``hetero-lr/1`` and their binary form, which is what the transcript commits to.

A message is a short canonical JSON header (RFC 8785) after its two-byte big-endian length,
then fixed-width big-endian integers: ciphertexts of ``2 * key_bytes`` bytes each (residues
modulo ``n^2``), plaintexts of ``key_bytes`` each. The header names the type, the round (the
epoch), the batch, the counts and the fixed-point exponent; nothing in it depends on data.
Since the header must be canonical and every width is fixed, a message has exactly one byte
form: :meth:`Message.digest` of a parsed message equals the SHA-256 of the bytes received, and
a party's transcript of digests is what it saw on the wire.

:meth:`Message.from_bytes` treats its input as hostile and refuses, each in one line: more
bytes than :class:`Limits` allow (before anything is parsed), a header that is not canonical
JSON of the type's exact fields, another type, round or batch than the receiver expects,
counts beyond the limits, a payload whose length is not exactly the counts' widths, and a
ciphertext outside ``[1, n^2)`` or not coprime to ``n``. The last check is not needed for
correctness (phe would compute with any residue), but a non-unit is never an honest
ciphertext (it would hand the receiver a factor of the arbiter's key), and its gcd costs about
13 us at 2048 bits, a few percent of what the receiver then spends on each ciphertext (an
encryption, or a multi-exponentiation over its features).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import gmpy2
from phe import EncryptedNumber, PaillierPublicKey

from consortium.crypto.canonical import jcs
from consortium.errors import ConsortiumError
from consortium.fl.vertical.paillier import slots
from consortium.fl.vertical.terms import GUEST, HOST, PROTOCOL, HeteroLRError, Party, Terms

LENGTH_BYTES = 2
MAX_HEADER = 512
MAX_EXPONENT_MAGNITUDE = 64
SCALARS = 2  # the host's sum of squared scores and squared weight norm


class MessageError(HeteroLRError):
    """A received message is refused; the message says which part, never a value."""


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts: the job's key size, the most rows of a batch and the most
    gradient values of one party (:meth:`for_terms`)."""

    key_bits: int
    rows: int
    values: int

    @classmethod
    def for_terms(cls, terms: Terms) -> Limits:
        return cls(
            key_bits=terms.key_bits,
            rows=min(terms.rows, terms.config.batch_size),
            values=max(terms.values(GUEST), terms.values(HOST)),
        )

    @property
    def key_bytes(self) -> int:
        return -(-self.key_bits // 8)

    @property
    def max_bytes(self) -> int:
        """The largest message: the host's scores, a ciphertext a row and its two scalars."""
        widest = max(self.rows + SCALARS, self.values, 3)
        return LENGTH_BYTES + MAX_HEADER + widest * 2 * self.key_bytes


@dataclass(frozen=True)
class Message:
    """Common to every message: its type, and the round (epoch) and batch it belongs to."""

    TYPE: ClassVar[str]
    FIELDS: ClassVar[Mapping[str, type]] = {}

    round: int
    batch: int

    def header(self) -> dict[str, Any]:
        """The type's own header fields (besides type, round and batch)."""
        return {}

    def payload(self) -> bytes:
        return b""

    def to_bytes(self) -> bytes:
        header = jcs({"type": self.TYPE, "round": self.round, "batch": self.batch, **self.header()})
        return len(header).to_bytes(LENGTH_BYTES, "big") + header + self.payload()

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: what a transcript records of this message."""
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        public_key: PaillierPublicKey | None,
        limits: Limits,
        *,
        round: int,
        batch: int,
    ) -> Self:
        """The message in ``data``, which must be of this type, round and batch and within
        ``limits``; ciphertexts are read under ``public_key`` (the job's key, of
        ``limits.key_bits``)."""
        what = f"{cls.TYPE} message"
        if not isinstance(data, bytes | bytearray):
            raise MessageError(f"{what}: not bytes but a {type(data).__name__}")
        if len(data) > limits.max_bytes:
            raise MessageError(
                f"{what}: {len(data):,} bytes, more than the {limits.max_bytes:,} allowed"
            )
        header, payload = _split(bytes(data), what)
        if header.get("type") != cls.TYPE:
            raise MessageError(f"{what}: the header names another type")
        _check_fields(header, {"type": str, "round": int, "batch": int, **cls.FIELDS}, what)
        if (header["round"], header["batch"]) != (round, batch):
            raise MessageError(
                f"{what}: round {header['round']} batch {header['batch']}, expected round "
                f"{round} batch {batch}"
            )
        return cls.decode(header, payload, _Reader(public_key, limits, what))

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        """The message from its checked header and its payload (each type's own part)."""
        raise NotImplementedError


def _split(data: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    """The header (canonical JSON of an object) and the payload after it."""
    if len(data) < LENGTH_BYTES:
        raise MessageError(f"{what}: truncated before its header")
    size = int.from_bytes(data[:LENGTH_BYTES], "big")
    if size > MAX_HEADER or len(data) < LENGTH_BYTES + size:
        raise MessageError(f"{what}: a header of {size} bytes is too long or truncated")
    raw = data[LENGTH_BYTES : LENGTH_BYTES + size]
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise MessageError(f"{what}: the header is not JSON") from None
    if not isinstance(header, dict):
        raise MessageError(f"{what}: the header is not a JSON object")
    try:
        canonical = jcs(header) == raw
    except ConsortiumError:
        canonical = False
    if not canonical:
        raise MessageError(f"{what}: the header is not canonical JSON (RFC 8785)")
    return header, data[LENGTH_BYTES + size :]


def _check_fields(header: dict[str, Any], fields: Mapping[str, type], what: str) -> None:
    if set(header) != set(fields):
        raise MessageError(f"{what}: header fields {sorted(header)}, expected {sorted(fields)}")
    for name, kind in fields.items():
        value = header[name]
        if kind is float:
            ok = type(value) in (int, float) and math.isfinite(value)
        elif kind is int:
            ok = type(value) is int and (value >= 0 or name == "exponent")
        else:
            ok = type(value) is kind
        if not ok:
            raise MessageError(f"{what}: header field {name!r} is not a valid {kind.__name__}")
    exponent = header.get("exponent", 0)
    if not -MAX_EXPONENT_MAGNITUDE <= exponent <= 0:
        raise MessageError(f"{what}: exponent {exponent} is out of range")


class _Reader:
    """Reads a payload's fixed-width integers under the receiver's key and limits."""

    def __init__(self, public_key: PaillierPublicKey | None, limits: Limits, what: str) -> None:
        self.public_key = public_key
        self.limits = limits
        self.what = what

    def key(self) -> PaillierPublicKey:
        key = self.public_key
        if key is None:
            raise MessageError(f"{self.what}: no public key to read its ciphertexts under")
        if key.n.bit_length() != self.limits.key_bits:
            raise MessageError(f"{self.what}: the public key is not of the job's key size")
        return key

    def count(self, count: int, limit: int, of: str) -> int:
        if count > limit:
            raise MessageError(f"{self.what}: {count:,} {of}, more than the {limit:,} allowed")
        return count

    def end(self, payload: bytes, length: int) -> None:
        if len(payload) != length:
            raise MessageError(
                f"{self.what}: a payload of {len(payload):,} bytes, expected {length:,}"
            )

    def integers(self, payload: bytes, count: int, width: int) -> list[int]:
        self.end(payload, count * width)
        return [
            int.from_bytes(payload[start : start + width], "big")
            for start in range(0, count * width, width)
        ]

    def ciphertexts(self, payload: bytes, count: int, exponent: int) -> list[EncryptedNumber]:
        """``count`` ciphertexts filling ``payload``, each a unit modulo ``n^2``."""
        key = self.key()
        n, nsquare = gmpy2.mpz(key.n), key.nsquare
        values = self.integers(payload, count, 2 * self.limits.key_bytes)
        for index, value in enumerate(values):
            if not (0 < value < nsquare and gmpy2.gcd(value, n) == 1):
                raise MessageError(f"{self.what}: ciphertext {index} is not a unit modulo n^2")
        return [EncryptedNumber(key, value, exponent) for value in values]

    def plaintexts(self, payload: bytes, count: int) -> list[int]:
        """``count`` plaintexts filling ``payload``, each below ``n``."""
        n = self.key().n
        values = self.integers(payload, count, self.limits.key_bytes)
        for index, value in enumerate(values):
            if value >= n:
                raise MessageError(f"{self.what}: plaintext {index} is not below n")
        return values

    def packed(self, values: int, slot_bits: int, count: int) -> None:
        """Refuses packed counts other than the ``values`` slots of ``slot_bits`` need."""
        self.count(values, self.limits.values, "gradient values")
        key = self.key()
        per = slots(key, slot_bits) if slot_bits >= 1 else 0
        if values < 1 or per < 1 or count != -(-values // per):
            raise MessageError(
                f"{self.what}: {count} packed integers cannot hold {values} values of "
                f"{slot_bits} bits"
            )


def _ciphertext_bytes(numbers: Sequence[EncryptedNumber]) -> bytes:
    """The raw ciphertexts, fixed width: ``2 * key_bytes`` each for their key."""
    if not numbers:
        return b""
    width = 2 * -(-numbers[0].public_key.n.bit_length() // 8)
    return b"".join(number.ciphertext(be_secure=False).to_bytes(width, "big") for number in numbers)


def _party(header: dict[str, Any], what: str) -> Party:
    party = header["party"]
    if party not in (GUEST, HOST):
        raise MessageError(f"{what}: the party is neither {GUEST!r} nor {HOST!r}")
    return GUEST if party == GUEST else HOST


# ---------------------------------------------------------------------------- the messages


@dataclass(frozen=True)
class KeyAnnouncement(Message):
    """Arbiter -> data parties, before the first round: the Paillier public key ``n`` and the
    DJN base ``h_s`` every encryptor under it uses (round and batch 0).

    ``from_bytes`` takes the key the job names as ``public_key`` when the receiver knows it
    already (then the announcement must carry that very key), or None.
    """

    TYPE = f"{PROTOCOL}/key"
    FIELDS: ClassVar[Mapping[str, type]] = {"bits": int}

    public_key: PaillierPublicKey
    hs: int

    def header(self) -> dict[str, Any]:
        return {"bits": self.public_key.n.bit_length()}

    def payload(self) -> bytes:
        key_bytes = -(-self.public_key.n.bit_length() // 8)
        return self.public_key.n.to_bytes(key_bytes, "big") + self.hs.to_bytes(2 * key_bytes, "big")

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        bits, key_bytes, what = reader.limits.key_bits, reader.limits.key_bytes, reader.what
        if header["bits"] != bits:
            raise MessageError(f"{what}: a {header['bits']}-bit key, the job names {bits} bits")
        reader.end(payload, 3 * key_bytes)
        n = int.from_bytes(payload[:key_bytes], "big")
        hs = int.from_bytes(payload[key_bytes:], "big")
        if n.bit_length() != bits or n % 2 == 0:
            raise MessageError(f"{what}: the modulus is not an odd {bits}-bit number")
        if reader.public_key is not None and reader.public_key.n != n:
            raise MessageError(f"{what}: the key is not the one the job names")
        if not (1 < hs < n * n - 1 and gmpy2.gcd(hs, n) == 1):
            raise MessageError(f"{what}: the DJN base is not a unit modulo n^2 other than 1, -1")
        key = reader.public_key or PaillierPublicKey(n)
        return cls(round=header["round"], batch=header["batch"], public_key=key, hs=hs)


@dataclass(frozen=True)
class HostScores(Message):
    """Host -> guest: ``[[u_h / 4]]`` for each row of the batch, then ``[[sum u_h^2]]`` and
    ``[[|w_h|^2]]`` (the host's parts of the Taylor loss and of its L2 penalty)."""

    TYPE = f"{PROTOCOL}/host-scores"
    FIELDS: ClassVar[Mapping[str, type]] = {"count": int, "exponent": int}

    quarter_scores: tuple[EncryptedNumber, ...]
    sum_of_squares: EncryptedNumber
    weight_norm: EncryptedNumber

    @property
    def exponent(self) -> int:
        return self.sum_of_squares.exponent

    def header(self) -> dict[str, Any]:
        return {"count": len(self.quarter_scores), "exponent": self.exponent}

    def payload(self) -> bytes:
        return _ciphertext_bytes([*self.quarter_scores, self.sum_of_squares, self.weight_norm])

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        count = reader.count(header["count"], reader.limits.rows, "rows")
        numbers = reader.ciphertexts(payload, count + SCALARS, header["exponent"])
        return cls(
            round=header["round"],
            batch=header["batch"],
            quarter_scores=tuple(numbers[:count]),
            sum_of_squares=numbers[count],
            weight_norm=numbers[count + 1],
        )


@dataclass(frozen=True)
class Residuals(Message):
    """Guest -> host: ``[[d]]`` for each row of the batch, randomized afresh by the guest."""

    TYPE = f"{PROTOCOL}/residuals"
    FIELDS: ClassVar[Mapping[str, type]] = {"count": int, "exponent": int}

    residuals: tuple[EncryptedNumber, ...]

    def header(self) -> dict[str, Any]:
        return {"count": len(self.residuals), "exponent": self.residuals[0].exponent}

    def payload(self) -> bytes:
        return _ciphertext_bytes(self.residuals)

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        count = reader.count(header["count"], reader.limits.rows, "rows")
        if count < 1:
            raise MessageError(f"{reader.what}: no residuals")
        numbers = reader.ciphertexts(payload, count, header["exponent"])
        return cls(round=header["round"], batch=header["batch"], residuals=tuple(numbers))


@dataclass(frozen=True)
class MaskedGradient(Message):
    """A data party -> arbiter: its ``values`` gradient sums ``X^T d`` (at ``exponent``), each
    plus the party's mask, packed ``slot_bits`` to a slot."""

    TYPE = f"{PROTOCOL}/masked-gradient"
    FIELDS: ClassVar[Mapping[str, type]] = {
        "party": str,
        "values": int,
        "slot_bits": int,
        "count": int,
        "exponent": int,
    }

    party: Party
    values: int
    slot_bits: int
    exponent: int
    packed: tuple[EncryptedNumber, ...]

    def header(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "values": self.values,
            "slot_bits": self.slot_bits,
            "count": len(self.packed),
            "exponent": self.exponent,
        }

    def payload(self) -> bytes:
        return _ciphertext_bytes(self.packed)

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        reader.packed(header["values"], header["slot_bits"], header["count"])
        return cls(
            round=header["round"],
            batch=header["batch"],
            party=_party(header, reader.what),
            values=header["values"],
            slot_bits=header["slot_bits"],
            exponent=header["exponent"],
            packed=tuple(reader.ciphertexts(payload, header["count"], 0)),
        )


@dataclass(frozen=True)
class EncryptedLoss(Message):
    """Guest -> arbiter: the batch's Taylor loss, penalty included, summed over its rows."""

    TYPE = f"{PROTOCOL}/loss"
    FIELDS: ClassVar[Mapping[str, type]] = {"exponent": int}

    loss: EncryptedNumber

    def header(self) -> dict[str, Any]:
        return {"exponent": self.loss.exponent}

    def payload(self) -> bytes:
        return _ciphertext_bytes([self.loss])

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        (loss,) = reader.ciphertexts(payload, 1, header["exponent"])
        return cls(round=header["round"], batch=header["batch"], loss=loss)


@dataclass(frozen=True)
class DecryptedGradient(Message):
    """Arbiter -> the data party that sent a :class:`MaskedGradient`: its packed plaintexts,
    still masked; only that party can take its masks off."""

    TYPE = f"{PROTOCOL}/decrypted-gradient"
    FIELDS: ClassVar[Mapping[str, type]] = {
        "party": str,
        "values": int,
        "slot_bits": int,
        "count": int,
    }

    party: Party
    values: int
    slot_bits: int
    plaintexts: tuple[int, ...]
    key_bytes: int

    def header(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "values": self.values,
            "slot_bits": self.slot_bits,
            "count": len(self.plaintexts),
        }

    def payload(self) -> bytes:
        return b"".join(p.to_bytes(self.key_bytes, "big") for p in self.plaintexts)

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        reader.packed(header["values"], header["slot_bits"], header["count"])
        return cls(
            round=header["round"],
            batch=header["batch"],
            party=_party(header, reader.what),
            values=header["values"],
            slot_bits=header["slot_bits"],
            plaintexts=tuple(reader.plaintexts(payload, header["count"])),
            key_bytes=reader.limits.key_bytes,
        )


@dataclass(frozen=True)
class Verdict(Message):
    """Arbiter -> data parties, after the epoch's last batch (``batch`` is the number of
    batches): the epoch's mean loss and whether the convergence rule ends the job."""

    TYPE = f"{PROTOCOL}/verdict"
    FIELDS: ClassVar[Mapping[str, type]] = {"loss": float, "converged": bool}

    loss: float
    converged: bool

    def header(self) -> dict[str, Any]:
        return {"loss": self.loss, "converged": self.converged}

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, reader: _Reader) -> Self:
        reader.end(payload, 0)
        return cls(
            round=header["round"],
            batch=header["batch"],
            loss=float(header["loss"]),
            converged=header["converged"],
        )
