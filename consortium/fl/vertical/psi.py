"""ECDH private set intersection over Curve25519: which businesses both parties hold.

Before a bank (guest) and a logistics platform (host) train a vertical model they must agree on
the rows they share without either learning the other's ids outside the intersection. This is
the Meadows / Huberman-Franklin-Hogg protocol that SecretFlow's ECDH-PSI runs, with X25519 from
``cryptography``:

1. Each party hashes every id, domain-separated by :data:`PROTOCOL` and the job's context
   string, to a 32-byte u-coordinate ``H(x)``, blinds it with its ephemeral scalar ``a``
   (``X25519PrivateKey.exchange``) and sends the set of ``a·H(x)`` in sorted order: the order
   is then a function of tokens the receiver sees anyway, so it reveals nothing (a shuffle).
2. Each party blinds the other's tokens again and returns them in the order received.
3. X25519 is an x-only Montgomery ladder, so ``a·(b·P)`` and ``b·(a·P)`` have the same
   u-coordinate: equal ids give equal double-blinded tokens, and each party matches the reply
   for its own ids against its double blinding of the other's.

What it reveals, in the semi-honest model (both follow the protocol and try to learn more from
what they see): each party learns the other's set size, the intersection (as positions in its
own id list) and so its size; nothing about the ids outside it. Both parties learn the same.
Anyone who reads both replies can count their common tokens, so the channel must be
confidential. The commitment anchored on chain is a root over tokens that depend on both
parties' ephemeral keys, so it tells the chain's readers nothing about the ids. A malicious
party can make the result wrong (send garbage, or probe for chosen ids, as with any PSI); the
commitment both sides anchor shows only that they agree.

The hash is used as the u-coordinate directly, as SecretFlow's Curve25519 PSI does, rather than
hashed onto the curve (Elligator 2): about half the points lie on the quadratic twist, where
X25519 is defined and Curve25519 is secure by design, and blinding commutes there as well.
Clamped scalars are multiples of the cofactor, so a point with a small-order component teaches
a hostile sender nothing about our scalar; a point of small order blinds to zero, which
``exchange`` refuses and which we report as a hostile token.

Tokens travel as raw 32-byte strings within a process; :meth:`Tokens.to_json` gives each as 64
lowercase hex digits for transcripts, and :meth:`Tokens.from_json` parses hostile text within
bounds. At about 40 us per exchange a party does two per id, so the lists are built with
comprehensions and no object is made per id beyond its bytes; ``workers`` spreads the
blinding over processes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ClassVar, Self

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from consortium.crypto.merkle import MerkleTree
from consortium.errors import UsageError

PROTOCOL = "ecdh-psi-x25519/1"
TOKEN_BYTES = 32
MAX_TOKENS = 10_000_000
"""The most tokens a party accepts in one message unless configured otherwise."""
CHUNKS_PER_WORKER = 4
"""Chunks per worker process, so that one slow chunk does not leave the others idle."""

_HEX = re.compile(r"[0-9a-f]*")


class PsiError(UsageError):
    """PSI input or a received message is refused; the message says where, never which id."""


@dataclass(frozen=True)
class Tokens:
    """A list of 32-byte X25519 u-coordinates one party sends the other (never mutated).

    The JSON form is ``{"type": TYPE, "tokens": ["<64 lowercase hex digits>", ...]}``.
    """

    TYPE: ClassVar[str]
    tokens: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "tokens": [token.hex() for token in self.tokens]}

    @classmethod
    def from_json(cls, obj: Any, *, max_tokens: int = MAX_TOKENS) -> Self:
        """The message in ``obj``, checked as :func:`check_tokens` does before it is decoded.

        Raises:
            PsiError: if ``obj`` is not such a message or holds more than ``max_tokens`` tokens,
                a token that is not 64 lowercase hex digits, or one token twice.
        """
        what = f"{cls.TYPE!r} message"
        if not isinstance(obj, Mapping) or obj.get("type") != cls.TYPE:
            raise PsiError(f"not a {what}")
        texts = obj.get("tokens")
        if not isinstance(texts, list):
            raise PsiError(f"{what} lacks a list of tokens")
        _check_count(len(texts), max_tokens, what)
        if set(map(type, texts)) - {str} or set(map(len, texts)) - {2 * TOKEN_BYTES}:
            position = next(i for i, t in enumerate(texts) if not _is_hex_token(t))
            raise PsiError(f"{what}: token {position} is not {2 * TOKEN_BYTES} hex digits")
        joined = "".join(texts)
        if not _HEX.fullmatch(joined):
            position = next(i for i, t in enumerate(texts) if not _is_hex_token(t))
            raise PsiError(f"{what}: token {position} is not lowercase hex")
        message = cls(_split(bytes.fromhex(joined)))
        check_tokens(message.tokens, max_tokens, what)
        return message


class BlindedSet(Tokens):
    """A party's own ids, hashed and blinded once with its scalar, in sorted order."""

    TYPE = "psi-blinded-set"


class DoubleBlinded(Tokens):
    """The other party's blinded set blinded again, in the order it was received."""

    TYPE = "psi-double-blinded"


@dataclass(frozen=True)
class OwnBlinding:
    """What :meth:`PsiParty.blind_own` makes: the message to send, and which id each token is.

    ``order[j]`` is the position in the party's id list of ``message.tokens[j]``; it stays with
    the party.
    """

    message: BlindedSet
    order: list[int]


@dataclass(frozen=True)
class PsiOutcome:
    """What one party learns: its rows in the intersection, aligned with the other party's.

    ``positions[k]`` is the index in this party's id list of row k of the aligned table; row k
    of both parties is the same id, because both order the intersection by its double-blinded
    ``tokens``. ``commitment`` is the RFC 6962 root over ``tokens``, equal on both sides, which
    is anchored with the job.
    """

    positions: list[int]
    tokens: list[bytes]
    commitment: bytes
    own_size: int
    their_size: int


class PsiParty:
    """One side of a PSI: its distinct ids, the job's context and its ephemeral key.

    The party never changes after it is made; each step is a function of the messages it is
    given, so the steps can run on two machines or, through :func:`intersect`, in one process.
    """

    def __init__(
        self,
        ids: Sequence[str],
        context: str,
        *,
        key: X25519PrivateKey | None = None,
        workers: int = 1,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        """``key`` defaults to a fresh one, as it should be for every job; ``max_tokens`` bounds
        what the party accepts from the other.

        Raises:
            PsiError: if the context is empty or an id repeats (naming both positions).
        """
        if not context:
            raise PsiError("the PSI context must not be empty: use the job's id")
        twice = _first_repeat(ids)
        if twice:
            raise PsiError(
                f"id at position {twice[1]} repeats the id at position {twice[0]}; "
                "ids must be distinct"
            )
        self.ids = ids
        self._prefix = _hash_prefix(context)
        self._key = key or X25519PrivateKey.generate()
        self.workers = workers
        self.max_tokens = max_tokens

    def blind_own(self) -> OwnBlinding:
        """Hashes and blinds the party's ids; the message is sorted, so that order says nothing."""
        prefix, sha256 = self._prefix, hashlib.sha256
        points = [sha256(prefix + i.encode()).digest() for i in self.ids]
        tokens = _blind(self._key, points, "the hash of the id at position", self.workers)
        order = sorted(range(len(tokens)), key=tokens.__getitem__)
        return OwnBlinding(BlindedSet([tokens[j] for j in order]), order)

    def blind_theirs(self, theirs: BlindedSet) -> DoubleBlinded:
        """The other party's blinded set blinded again, to send back to it in the same order.

        Raises:
            PsiError: if the set is too large, a token is not 32 bytes, repeats, or is a point
                of small order, or two tokens blind to the same point.
        """
        what = "blinded set received"
        check_tokens(theirs.tokens, self.max_tokens, what)
        double = _blind(self._key, theirs.tokens, f"{what}: token", self.workers)
        twice = _first_repeat(double)
        if twice:
            raise PsiError(f"{what}: tokens {twice[0]} and {twice[1]} blind to the same point")
        return DoubleBlinded(double)

    def finish(self, own: OwnBlinding, reply: DoubleBlinded, theirs: DoubleBlinded) -> PsiOutcome:
        """The intersection, from the other party's ``reply`` to our ``own`` blinded set and our
        own double blinding of theirs (:meth:`blind_theirs`'s result).

        Raises:
            PsiError: if the reply does not hold one distinct 32-byte token per token sent.
        """
        what = "double-blinded reply"
        check_tokens(reply.tokens, self.max_tokens, what)
        if len(reply.tokens) != len(own.order):
            raise PsiError(
                f"{what} has {len(reply.tokens)} tokens for the {len(own.order)} this party sent"
            )
        common = set(theirs.tokens)
        hits = [j for j, token in enumerate(reply.tokens) if token in common]
        hits.sort(key=reply.tokens.__getitem__)
        tokens = [reply.tokens[j] for j in hits]
        return PsiOutcome(
            positions=[own.order[j] for j in hits],
            tokens=tokens,
            commitment=MerkleTree(tokens).root,
            own_size=len(own.order),
            their_size=len(theirs.tokens),
        )


def intersect(
    guest_ids: Sequence[str],
    host_ids: Sequence[str],
    context: str,
    *,
    keys: tuple[X25519PrivateKey, X25519PrivateKey] | None = None,
    workers: int = 1,
) -> tuple[PsiOutcome, PsiOutcome]:
    """Both parties' outcomes (guest's, host's), running both in this process; ``keys`` are
    the guest's and the host's (fresh ones by default)."""
    guest_key, host_key = keys or (None, None)
    guest = PsiParty(guest_ids, context, key=guest_key, workers=workers)
    host = PsiParty(host_ids, context, key=host_key, workers=workers)
    guest_own, host_own = guest.blind_own(), host.blind_own()
    guest_double = guest.blind_theirs(host_own.message)
    host_double = host.blind_theirs(guest_own.message)
    return (
        guest.finish(guest_own, host_double, guest_double),
        host.finish(host_own, guest_double, host_double),
    )


def double_blinded(
    ids: Sequence[str], context: str, keys: tuple[X25519PrivateKey, X25519PrivateKey]
) -> list[bytes]:
    """The tokens both parties' PSI gives ``ids`` under the guest's and the host's keys (in
    the order of ``ids``): what an auditor handed both ephemeral keys recomputes, since the
    sorted tokens of the intersection are the leaves of its commitment.

    Raises:
        PsiError: if an id hashes to a point of small order (for SHA-256, never in practice).
    """
    prefix, sha256 = _hash_prefix(context), hashlib.sha256
    points = [sha256(prefix + i.encode()).digest() for i in ids]
    once = _blind(keys[0], points, "the hash of the id at position", 1)
    return _blind(keys[1], once, "the once-blinded id at position", 1)


def check_tokens(tokens: Sequence[bytes], max_tokens: int, what: str) -> None:
    """Refuses a token list from the other party unless it holds at most ``max_tokens``
    distinct 32-byte strings; the message names ``what`` and the first bad position."""
    _check_count(len(tokens), max_tokens, what)
    if set(map(type, tokens)) - {bytes} or set(map(len, tokens)) - {TOKEN_BYTES}:
        position = next(
            i for i, t in enumerate(tokens) if type(t) is not bytes or len(t) != TOKEN_BYTES
        )
        raise PsiError(f"{what}: token {position} is not {TOKEN_BYTES} bytes")
    twice = _first_repeat(tokens)
    if twice:
        raise PsiError(f"{what}: token {twice[1]} repeats token {twice[0]}")


def _check_count(count: int, max_tokens: int, what: str) -> None:
    if count > max_tokens:
        raise PsiError(f"{what} holds {count:,} tokens, more than the {max_tokens:,} allowed")


def _first_repeat(items: Sequence[Any]) -> tuple[int, int] | None:
    """The positions of the first item seen twice and of its first occurrence, or None; a
    message names positions, never the item (an id must not end up in a log)."""
    if len(set(items)) == len(items):
        return None
    first: dict[Any, int] = {}
    for position, item in enumerate(items):
        earlier = first.setdefault(item, position)
        if earlier != position:
            return earlier, position
    return None


def _is_hex_token(text: Any) -> bool:
    return isinstance(text, str) and len(text) == 2 * TOKEN_BYTES and bool(_HEX.fullmatch(text))


def _hash_prefix(context: str) -> bytes:
    """What precedes every id in its hash: the protocol and the length-prefixed context, so
    that ids of one job can never be matched against another's, even under one key."""
    encoded = context.encode()
    return PROTOCOL.encode() + b"\x00" + len(encoded).to_bytes(4, "big") + encoded


def _split(joined: bytes) -> list[bytes]:
    return [joined[i : i + TOKEN_BYTES] for i in range(0, len(joined), TOKEN_BYTES)]


def _blind(key: X25519PrivateKey, points: Sequence[bytes], what: str, workers: int) -> list[bytes]:
    """``key``'s X25519 exchange with every point, in order, over ``workers`` processes.

    Each worker gets its chunk as one joined bytes string (pickling a million small strings
    costs more than joining them) and the raw key, which never leaves this machine.
    """
    if workers <= 1 or len(points) < workers * CHUNKS_PER_WORKER:
        return _blind_in_process(key, points, what, 0)
    size = -(-len(points) // (workers * CHUNKS_PER_WORKER))
    starts = range(0, len(points), size)
    chunks = (b"".join(points[start : start + size]) for start in starts)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = pool.map(
            _blind_joined, repeat(key.private_bytes_raw()), chunks, repeat(what), starts
        )
        return [token for joined in results for token in _split(joined)]


def _blind_joined(raw_key: bytes, joined: bytes, what: str, offset: int) -> bytes:
    """A worker's chunk: the joined points blinded with the raw key, joined again."""
    key = X25519PrivateKey.from_private_bytes(raw_key)
    return b"".join(_blind_in_process(key, _split(joined), what, offset))


def _blind_in_process(
    key: X25519PrivateKey, points: Sequence[bytes], what: str, offset: int
) -> list[bytes]:
    """The exchanges in one comprehension; only when one fails is the culprit looked for.

    ``exchange`` raises ValueError when the result is zero, that is for a point of small
    order; ``offset`` is the position of ``points[0]`` in the whole list.
    """
    exchange, load = key.exchange, X25519PublicKey.from_public_bytes
    try:
        return [exchange(load(point)) for point in points]
    except ValueError:
        for position, point in enumerate(points):
            try:
                exchange(load(point))
            except ValueError:
                raise PsiError(f"{what} {offset + position} is a point of small order") from None
        raise
