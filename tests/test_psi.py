"""Tests of the ECDH private set intersection: exact and aligned results on both sides, domain
separation, the intersection's commitment, and hostile input and messages refused in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.errors import ConsortiumError
from consortium.fl.vertical.psi import (
    BlindedSet,
    DoubleBlinded,
    PsiError,
    PsiOutcome,
    PsiParty,
    intersect,
)

CONTEXT = "job 7 / sme-credit"
P = 2**255 - 19
# The u-coordinates of the points of small order on Curve25519 and its twist, and non-canonical
# encodings of them (u >= p, or the top bit set, which X25519 ignores).
SMALL_ORDER = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
    P,
    P + 1,
    2**255,
    2**255 + 1,
]


def key(seed: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def run(
    guest_ids: list[str], host_ids: list[str], *, guest_context: str = CONTEXT, keys: bool = False
) -> tuple[PsiOutcome, PsiOutcome]:
    """Both outcomes, the parties' steps run one by one; with ``keys``, under fixed keys."""
    guest = PsiParty(guest_ids, guest_context, key=key(1) if keys else None)
    host = PsiParty(host_ids, CONTEXT, key=key(2) if keys else None)
    guest_own, host_own = guest.blind_own(), host.blind_own()
    guest_double, host_double = (
        guest.blind_theirs(host_own.message),
        host.blind_theirs(guest_own.message),
    )
    return (
        guest.finish(guest_own, host_double, guest_double),
        host.finish(host_own, guest_double, host_double),
    )


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(start, stop)]


def one_line_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    assert isinstance(excinfo.value, ConsortiumError)
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def assert_aligned(
    guest_ids: list[str], host_ids: list[str], guest: PsiOutcome, host: PsiOutcome
) -> None:
    """Both sides hold the same rows in the same order, and exactly the common ids."""
    aligned = [guest_ids[i] for i in guest.positions]
    assert aligned == [host_ids[i] for i in host.positions]
    assert sorted(aligned) == sorted(set(guest_ids) & set(host_ids))
    assert guest.tokens == host.tokens == sorted(guest.tokens)
    assert guest.commitment == host.commitment
    assert (guest.own_size, guest.their_size) == (host.their_size, host.own_size)
    assert (guest.own_size, guest.their_size) == (len(guest_ids), len(host_ids))


def test_both_sides_get_the_same_rows_in_the_same_order() -> None:
    guest_ids = ids("biz", 0, 300)[::-1]
    host_ids = ids("biz", 150, 450)
    guest, host = intersect(guest_ids, host_ids, CONTEXT)
    assert len(guest.positions) == 150
    assert_aligned(guest_ids, host_ids, guest, host)


@settings(max_examples=8, deadline=None)
@given(
    st.lists(st.text(max_size=8), max_size=30, unique=True),
    st.lists(st.text(max_size=8), max_size=30, unique=True),
)
def test_the_intersection_is_exact(guest_ids: list[str], host_ids: list[str]) -> None:
    guest, host = run(guest_ids, host_ids)
    assert_aligned(guest_ids, host_ids, guest, host)


def test_disjoint_sets_have_an_empty_intersection() -> None:
    guest, host = intersect(ids("bank", 0, 40), ids("platform", 0, 40), CONTEXT)
    assert guest.positions == host.positions == guest.tokens == []
    assert guest.commitment == host.commitment


@pytest.mark.parametrize("empty", ["guest", "host", "both"])
def test_an_empty_side_has_an_empty_intersection(empty: str) -> None:
    guest_ids = [] if empty in ("guest", "both") else ids("biz", 0, 20)
    host_ids = [] if empty in ("host", "both") else ids("biz", 0, 20)
    guest, host = intersect(guest_ids, host_ids, CONTEXT)
    assert guest.positions == host.positions == []
    assert_aligned(guest_ids, host_ids, guest, host)


def test_a_different_context_matches_nothing() -> None:
    same = ids("biz", 0, 50)
    guest, host = run(same, same, guest_context="job 8 / sme-credit")
    assert guest.positions == host.positions == []


def test_the_commitment_follows_the_intersection() -> None:
    guest_ids, host_ids = ids("biz", 0, 60), ids("biz", 30, 90)
    guest, host = run(guest_ids, host_ids, keys=True)
    again, _ = run(guest_ids, host_ids, keys=True)
    smaller, smaller_host = run(guest_ids, [*host_ids[1:], "biz-99999"], keys=True)
    assert guest.commitment == host.commitment == again.commitment
    assert smaller.commitment == smaller_host.commitment != guest.commitment
    assert len(smaller.positions) == len(guest.positions) - 1


def test_workers_give_the_same_outcome() -> None:
    guest_ids, host_ids = ids("biz", 0, 64), ids("biz", 32, 96)
    alone = PsiParty(guest_ids, CONTEXT, key=key(3))
    pooled = PsiParty(guest_ids, CONTEXT, key=key(3), workers=2)
    own = alone.blind_own()
    assert pooled.blind_own() == own
    theirs = PsiParty(host_ids, CONTEXT).blind_own().message
    assert pooled.blind_theirs(theirs) == alone.blind_theirs(theirs)


def test_messages_round_trip_through_json() -> None:
    guest, host = PsiParty(ids("biz", 0, 20), CONTEXT), PsiParty(ids("biz", 10, 30), CONTEXT)
    guest_own, host_own = guest.blind_own(), host.blind_own()

    def sent(message: BlindedSet | DoubleBlinded) -> dict[str, Any]:
        return json.loads(json.dumps(message.to_json()))

    received = BlindedSet.from_json(sent(host_own.message))
    assert received == host_own.message
    guest_double = guest.blind_theirs(received)
    host_double = DoubleBlinded.from_json(sent(host.blind_theirs(guest_own.message)))
    assert len(guest.finish(guest_own, host_double, guest_double).positions) == 10
    assert all(len(t) == 64 for t in sent(guest_double)["tokens"])


def test_a_repeated_id_is_refused_by_position_not_by_value() -> None:
    with pytest.raises(PsiError) as excinfo:
        PsiParty(["acme", "globex", "initech", "globex"], CONTEXT)
    message = one_line_error(excinfo)
    assert "position 3" in message and "position 1" in message and "globex" not in message


def test_an_empty_context_is_refused() -> None:
    with pytest.raises(PsiError) as excinfo:
        PsiParty(["acme"], "")
    assert "context" in one_line_error(excinfo)


def good_tokens(n: int = 4) -> list[bytes]:
    return PsiParty(ids("host", 0, n), CONTEXT).blind_own().message.tokens


@pytest.mark.parametrize("u", SMALL_ORDER)
def test_a_point_of_small_order_is_refused(u: int) -> None:
    tokens = good_tokens()
    tokens[2] = u.to_bytes(32, "little")
    with pytest.raises(PsiError) as excinfo:
        PsiParty(["acme"], CONTEXT).blind_theirs(BlindedSet(tokens))
    assert "token 2 is a point of small order" in one_line_error(excinfo)


def test_two_encodings_of_one_point_are_refused() -> None:
    tokens = good_tokens()
    tokens[3] = tokens[1][:31] + bytes([tokens[1][31] | 0x80])
    with pytest.raises(PsiError) as excinfo:
        PsiParty(["acme"], CONTEXT).blind_theirs(BlindedSet(tokens))
    assert "tokens 1 and 3" in one_line_error(excinfo)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: [*t[:2], t[2][:31], *t[3:]], "token 2 is not 32 bytes"),
        (lambda t: [*t[:2], t[2] + b"\x00", *t[3:]], "token 2 is not 32 bytes"),
        (lambda t: [*t[:2], t[2].hex(), *t[3:]], "token 2 is not 32 bytes"),
        (lambda t: [*t, t[0]], "token 4 repeats token 0"),
        (lambda t: t * 3, "holds 12 tokens, more than the 10 allowed"),
    ],
)
def test_a_hostile_blinded_set_is_refused(
    change: Callable[[list[bytes]], list[Any]], expected: str
) -> None:
    party = PsiParty(["acme"], CONTEXT, max_tokens=10)
    with pytest.raises(PsiError) as excinfo:
        party.blind_theirs(BlindedSet(change(good_tokens())))
    assert expected in one_line_error(excinfo)


def test_a_reply_of_the_wrong_size_is_refused() -> None:
    guest, host = PsiParty(ids("biz", 0, 5), CONTEXT), PsiParty(ids("biz", 0, 5), CONTEXT)
    guest_own, host_own = guest.blind_own(), host.blind_own()
    reply = host.blind_theirs(guest_own.message)
    short = DoubleBlinded(reply.tokens[:-1])
    with pytest.raises(PsiError) as excinfo:
        guest.finish(guest_own, short, guest.blind_theirs(host_own.message))
    assert "has 4 tokens for the 5 this party sent" in one_line_error(excinfo)


def hex_tokens(n: int = 4) -> list[str]:
    return [t.hex() for t in good_tokens(n)]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([], "not a 'psi-blinded-set' message"),
        ({"type": "psi-double-blinded", "tokens": []}, "not a 'psi-blinded-set' message"),
        ({"type": "psi-blinded-set"}, "lacks a list of tokens"),
        ({"type": "psi-blinded-set", "tokens": "00" * 32}, "lacks a list of tokens"),
        ({"type": "psi-blinded-set", "tokens": hex_tokens(11)}, "holds 11 tokens"),
        ({"type": "psi-blinded-set", "tokens": [*hex_tokens(), "00"]}, "token 4 is not 64 hex"),
        ({"type": "psi-blinded-set", "tokens": [*hex_tokens(), 7]}, "token 4 is not 64 hex"),
        ({"type": "psi-blinded-set", "tokens": ["zz" * 32]}, "token 0 is not lowercase hex"),
        ({"type": "psi-blinded-set", "tokens": ["AB" * 32]}, "token 0 is not lowercase hex"),
        ({"type": "psi-blinded-set", "tokens": [" " + "a" * 63]}, "token 0 is not lowercase hex"),
        ({"type": "psi-blinded-set", "tokens": ["ab" * 32] * 2}, "token 1 repeats token 0"),
    ],
)
def test_a_hostile_json_message_is_refused(obj: object, expected: str) -> None:
    with pytest.raises(PsiError) as excinfo:
        BlindedSet.from_json(obj, max_tokens=10)
    assert expected in one_line_error(excinfo)
