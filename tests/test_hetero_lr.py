"""Tests of the encrypted hetero LR: the same descent as block_lr's Taylor descent in the clear,
what each role receives (ciphertexts, masked values, the loss) and never (anything of the other
parties' data in the clear), matching transcripts, hostile messages, the convergence rule and
the batch and feature bounds.

512-bit keys and a few hundred rows keep the file fast; every message of the trained job
passes through its bytes, and spies on the roles' methods keep what each role was handed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import gmpy2
import numpy as np
import pytest
from numpy.typing import NDArray
from phe import PaillierPrivateKey, PaillierPublicKey

from consortium.crypto.canonical import jcs
from consortium.crypto.digests import model_digest
from consortium.fl.block_lr import TAYLOR, DescentConfig, fit, signed_labels, taylor_residual
from consortium.fl.party_table import PartyTable
from consortium.fl.vertical.hetero_lr import Parties, TrainOutcome, run_epoch, set_up, train
from consortium.fl.vertical.messages import (
    DecryptedGradient,
    EncryptedLoss,
    HostScores,
    KeyAnnouncement,
    Limits,
    MaskedGradient,
    Message,
    MessageError,
    Residuals,
    Verdict,
)
from consortium.fl.vertical.paillier import (
    Decryptor,
    KeyPair,
    Masks,
    PaillierError,
    encode,
    generate_keypair,
    unpack,
)
from consortium.fl.vertical.roles import Role, Transcript, weight_commitment
from consortium.fl.vertical.terms import MIN_BATCH, HeteroLRError, Terms

ROWS, GUEST_FEATURES, HOST_FEATURES = 320, 3, 5
CONFIG = DescentConfig(batch_size=64, max_epochs=3, tolerance=0.0, seed=11)
BITS = 512


@dataclass(frozen=True)
class Data:
    guest: PartyTable
    host: PartyTable

    @property
    def guest_design(self) -> NDArray[np.float64]:
        return np.column_stack([self.guest.X, np.ones(ROWS)])


def make_data(seed: int = 5) -> Data:
    rng = np.random.default_rng(seed)
    Xg, Xh = rng.standard_normal((ROWS, GUEST_FEATURES)), rng.standard_normal((ROWS, HOST_FEATURES))
    truth = rng.standard_normal(GUEST_FEATURES + HOST_FEATURES)
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-np.hstack([Xg, Xh]) @ truth))).astype(np.int8)
    ids = tuple(f"SME-{i:06d}" for i in range(ROWS))
    return Data(
        PartyTable("bank", ids, tuple(f"bank_f{j}" for j in range(GUEST_FEATURES)), Xg, y),
        PartyTable("platform", ids, tuple(f"platform_f{j}" for j in range(HOST_FEATURES)), Xh),
    )


def make_terms(**config: Any) -> Terms:
    return Terms(ROWS, GUEST_FEATURES, HOST_FEATURES, replace(CONFIG, **config), key_bits=BITS)


@dataclass(frozen=True)
class Truth:
    """A batch in the clear, from both parties' weights: the residuals, the guest's part of
    them, the host's quarter-scores, and both parties' gradient sums."""

    d: NDArray[np.float64]
    guest_part: NDArray[np.float64]
    quarter_scores: NDArray[np.float64]
    guest: NDArray[np.float64]
    host: NDArray[np.float64]


@dataclass
class Run:
    """A trained job and what the spies saw: each role's received messages, the plaintext
    truth of every batch, and the guest's masks and reply of every batch."""

    data: Data
    keys: KeyPair
    parties: Parties
    outcome: TrainOutcome
    received: dict[str, list[Message]] = field(default_factory=dict)
    truth: dict[tuple[int, int], Truth] = field(default_factory=dict)
    guest_replies: list[tuple[Masks, DecryptedGradient]] = field(default_factory=list)


def spy(role: Role, name: str, sink: list[Message], before: Callable[[Any], None]) -> None:
    method = getattr(role, name)

    def spied(message: Message) -> Any:
        sink.append(message)
        before(message)
        return method(message)

    setattr(role, name, spied)


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return generate_keypair(BITS)


@pytest.fixture(scope="module")
def run(keys: KeyPair) -> Run:
    data = make_data()
    parties = set_up(data.guest, data.host, make_terms(), keys=keys, rng=random.Random(1))
    guest, host = parties.guest, parties.host
    received: dict[str, list[Message]] = {"guest": [], "host": [], "arbiter": []}
    truth: dict[tuple[int, int], Truth] = {}
    replies: list[tuple[Masks, DecryptedGradient]] = []
    y = signed_labels(data.guest.labels)

    def record_truth(message: Message) -> None:  # before the host's gradient: no step yet
        rows = host._open.rows
        u_g, u_h = data.guest_design[rows] @ guest._w, data.host.X[rows] @ host._w
        d = taylor_residual(u_g + u_h, y[rows])
        truth[message.round, message.batch] = Truth(
            d,
            taylor_residual(u_g, y[rows]),
            u_h / 4,
            data.guest_design[rows].T @ d,
            data.host.X[rows].T @ d,
        )

    def record_reply(message: Any) -> None:
        replies.append((guest._open.masks, message))

    nothing: Callable[[Any], None] = lambda _: None  # noqa: E731
    for name in ("residuals", "receive_verdict"):
        spy(guest, name, received["guest"], nothing)
    spy(guest, "step", received["guest"], record_reply)
    spy(host, "gradient", received["host"], record_truth)
    for name in ("step", "receive_verdict"):
        spy(host, name, received["host"], nothing)
    for name in ("decrypt", "receive_loss"):
        spy(parties.arbiter, name, received["arbiter"], nothing)
    outcome = train(guest, host, parties.arbiter)
    return Run(data, keys, parties, outcome, received, truth, replies)


# ---------------------------------------------------------------------------- exactness


def test_the_encrypted_descent_is_the_plaintext_taylor_descent(run: Run) -> None:
    reference = fit([run.data.guest.X, run.data.host.X], run.data.guest.labels, TAYLOR, CONFIG)
    guest, host = run.parties.guest.weights(), run.parties.host.weights()
    assert len(run.outcome.epochs) == CONFIG.max_epochs
    np.testing.assert_allclose(guest["weights"], reference.model.weights[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(host["weights"], reference.model.weights[1], rtol=0, atol=1e-6)
    assert abs(float(guest["bias"]) - reference.model.bias) < 1e-6
    assert np.abs(host["weights"] - reference.model.weights[1]).max() > 0  # it did round
    np.testing.assert_allclose(run.outcome.losses, reference.losses, rtol=0, atol=1e-8)


def rounding_bound(terms: Terms, d: NDArray[np.float64], X: NDArray[np.float64]) -> Any:
    """How far the exact sums on rounded values may lie from ``X^T d`` in floats: features
    off by half a step at the feature exponent, residuals by two half steps (two parts)."""
    half_x, half_d = 0.5 * 16.0**terms.feature_exponent, 0.5 * 16.0**terms.score_exponent
    return (np.abs(d).sum() + 2 * half_d * len(d)) * half_x + 2 * half_d * np.abs(X).sum(axis=0)


def test_each_step_takes_the_true_gradient_up_to_rounding(run: Run) -> None:
    terms, design = run.parties.guest.terms, run.data.guest_design
    for masks, reply in run.guest_replies:
        slots = unpack(run.keys.public_key, reply.plaintexts, reply.slot_bits, reply.values)
        truth = run.truth[reply.round, reply.batch]
        rows = terms.batches(reply.round)[reply.batch]
        error = np.abs(masks.remove(slots) - truth.guest)
        assert np.all(error <= rounding_bound(terms, truth.d, design[rows]) + 1e-12)


# ---------------------------------------------------------------------------- what each sees


def holds_secret(obj: object, secrets: set[int], seen: set[int] | None = None) -> bool:
    """Whether ``obj`` reaches a private key, a decryptor or a prime of the key."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, np.ndarray | str | bytes | float):
        return False
    seen.add(id(obj))
    if isinstance(obj, PaillierPrivateKey | Decryptor | KeyPair):
        return True
    if isinstance(obj, int | type(gmpy2.mpz(0))):
        return int(obj) in secrets
    if isinstance(obj, dict):
        children: list[object] = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    return any(holds_secret(child, secrets, seen) for child in children)


def integers_of(messages: list[Message], key: PaillierPublicKey) -> Iterator[int]:
    """Every integer of the messages' payloads, packed plaintexts also slot by slot."""
    for message in messages:
        if isinstance(message, Residuals):
            yield from (c.ciphertext(be_secure=False) for c in message.residuals)
        elif isinstance(message, HostScores):
            numbers = [*message.quarter_scores, message.sum_of_squares, message.weight_norm]
            yield from (c.ciphertext(be_secure=False) for c in numbers)
        elif isinstance(message, DecryptedGradient):
            yield from message.plaintexts
            yield from unpack(key, message.plaintexts, message.slot_bits, message.values)


def forbidden(
    values: list[NDArray[np.float64]], key: PaillierPublicKey, exponents: tuple[int, ...]
) -> set[int]:
    """Each value as a float-valued integer and as its fixed-point encodings at ``exponents``."""
    flat = np.concatenate([np.ravel(v) for v in values])
    found = {int(v) for v in flat if float(v).is_integer()}
    for exponent in exponents:
        found.update(encode(key, flat, exponent))
    return found


def test_the_host_gets_only_ciphertexts_and_its_own_masked_gradient(run: Run) -> None:
    key, terms = run.keys.public_key, run.parties.host.terms
    n, nsquare = key.n, key.nsquare
    secrets = {run.keys.private_key.p, run.keys.private_key.q}
    assert not holds_secret(run.parties.host, secrets)
    received = run.received["host"]
    assert {type(m) for m in received} == {Residuals, DecryptedGradient, Verdict}
    residuals = [m for m in received if isinstance(m, Residuals)]
    for message in residuals:
        for c in message.residuals:
            raw = c.ciphertext(be_secure=False)
            assert 0 < raw < nsquare and gmpy2.gcd(raw, n) == 1
    y = run.data.guest.labels.astype(np.float64)
    batches = run.truth.values()
    guest_values = [y, signed_labels(y), run.data.guest.X]
    guest_values += [t.d for t in batches] + [t.guest_part for t in batches]
    exponents = (0, terms.score_exponent, terms.feature_exponent, terms.gradient_exponent)
    assert not forbidden(guest_values, key, exponents) & set(integers_of(received, key))


def test_the_hosts_own_ciphertexts_do_not_divide_out_of_the_residuals(run: Run) -> None:
    """[[d]] = [[u_h/4]] + [[guest part]]: were the guest's part added without fresh randomness,
    [[d]] / [[u_h/4]] would be 1 + m n, and the host would read m, the guest's part."""
    nsquare, n = run.keys.public_key.nsquare, run.keys.public_key.n
    scores = [m for m in run.received["guest"] if isinstance(m, HostScores)]
    residuals = [m for m in run.received["host"] if isinstance(m, Residuals)]
    assert len(scores) == len(residuals) > 0
    for sent, got in zip(scores, residuals, strict=True):
        for mine, theirs in zip(sent.quarter_scores, got.residuals, strict=True):
            inverse = gmpy2.invert(mine.ciphertext(be_secure=False), nsquare)
            ratio = theirs.ciphertext(be_secure=False) * inverse % nsquare
            assert (ratio - 1) % n != 0


def test_the_guest_gets_ciphertexts_from_the_host_and_masked_values_from_the_arbiter(
    run: Run,
) -> None:
    key, terms = run.keys.public_key, run.parties.guest.terms
    secrets = {run.keys.private_key.p, run.keys.private_key.q}
    assert not holds_secret(run.parties.guest, secrets)
    received = run.received["guest"]
    assert {type(m) for m in received} == {HostScores, DecryptedGradient, Verdict}
    for message in received:
        if isinstance(message, HostScores):
            for c in [*message.quarter_scores, message.sum_of_squares, message.weight_norm]:
                raw = c.ciphertext(be_secure=False)
                assert 0 < raw < key.nsquare and gmpy2.gcd(raw, key.n) == 1
    batches = run.truth.values()
    host_values = [
        run.data.host.X,
        *(t.quarter_scores for t in batches),
        *(t.host for t in batches),
    ]
    exponents = (0, terms.score_exponent, terms.feature_exponent, terms.gradient_exponent)
    scores = [m for m in received if isinstance(m, HostScores)]
    assert not forbidden(host_values, key, exponents) & set(integers_of(scores, key))
    rng = random.Random(3)
    for masks, reply in run.guest_replies:
        slots = unpack(key, reply.plaintexts, reply.slot_bits, reply.values)
        truth = run.truth[reply.round, reply.batch].guest
        as_sent = np.array([s / 2.0 ** (-4 * masks.exponent) for s in slots])
        assert np.all(np.abs(as_sent - truth) > 2.0 ** (masks.value_bits + 4 * masks.exponent))
        other = Masks(
            tuple(
                (1 << masks.value_bits) + rng.getrandbits(masks.value_bits + 80)
                for _ in masks.offsets
            ),
            masks.value_bits,
            masks.exponent,
        )
        with pytest.raises(PaillierError, match="exceeds"):
            other.remove(slots)


def test_the_arbiter_gets_masked_gradients_far_from_the_true_ones_and_the_loss(
    run: Run,
) -> None:
    arbiter, terms = run.parties.arbiter, run.parties.arbiter.terms
    decryptor = Decryptor(run.keys.private_key)
    received = run.received["arbiter"]
    gradients = [m for m in received if isinstance(m, MaskedGradient)]
    losses = [m for m in received if isinstance(m, EncryptedLoss)]
    assert len(gradients) == 2 * len(losses) and len(received) == 3 * len(losses)
    masked: list[int] = []
    true: list[float] = []
    for message in gradients:
        plaintexts = decryptor.decrypt_raw(message.packed)
        masked += unpack(arbiter.public_key, plaintexts, message.slot_bits, message.values)
        truth = run.truth[message.round, message.batch]
        true += list(truth.guest if message.party == "guest" else truth.host)
    # A masked value is the value plus an offset uniform in [2**v, 2**v + 2**(v + 80)).
    bits, scale = terms.value_bits, 2.0 ** (4 * terms.gradient_exponent)
    assert all(0 < m < 1 << (bits + 81) for m in masked)
    offsets = np.array(masked, dtype=np.float64) * scale - np.array(true)
    assert np.all(offsets >= 2.0**bits * scale * (1 - 1e-9))
    middle = (1 << bits) + (1 << (bits + 79))
    assert 0.3 < np.mean([m > middle for m in masked]) < 0.7
    assert abs(np.corrcoef(np.array(masked, dtype=np.float64), true)[0, 1]) < 0.3
    for epoch in run.outcome.epochs:
        batch_losses = [decryptor.decrypt([m.loss])[0] for m in losses if m.round == epoch.epoch]
        assert sum(batch_losses) / terms.rows == pytest.approx(epoch.loss, abs=1e-12)


# ---------------------------------------------------------------------------- transcripts


def test_each_message_sent_is_received_in_the_same_order(run: Run) -> None:
    transcripts = {
        name: getattr(run.parties, name).transcript for name in ("guest", "host", "arbiter")
    }
    sent = {d for t in transcripts.values() for d in t.sent}
    for name, transcript in transcripts.items():
        assert set(transcript.received) <= sent - set(transcript.sent), name
        for other, theirs in transcripts.items():
            if other != name:
                from_them = [d for d in transcript.received if d in set(theirs.sent)]
                to_me = [d for d in theirs.sent if d in set(transcript.received)]
                assert from_them == to_me, (other, name)
    received = {d for t in transcripts.values() for d in t.received}
    assert sent == received
    epochs = run.outcome.epochs
    for name, transcript in transcripts.items():
        joined = Transcript()
        for epoch in epochs:
            joined.sent += epoch.transcripts[name].sent
            joined.received += epoch.transcripts[name].received
        announced = name == "arbiter"  # the key announcement precedes round 0
        assert joined.sent == transcript.sent[int(announced) :]
        assert joined.received == transcript.received[int(not announced) :]


def test_a_message_has_one_byte_form_and_its_digest_is_of_it(run: Run) -> None:
    scores = next(m for m in run.received["guest"] if isinstance(m, HostScores))
    data = scores.to_bytes()
    again = HostScores.from_bytes(
        data, run.keys.public_key, run.parties.guest.limits, round=scores.round, batch=0
    )
    assert again.to_bytes() == data
    assert again.digest() == scores.digest() in run.parties.guest.transcript.received


def test_the_commitment_is_the_salted_digest_of_the_weights(run: Run) -> None:
    guest = run.parties.guest
    salt = bytes(range(32))
    expected = jcs({"salt": salt.hex(), "weights": model_digest(guest.weights()).hex()})
    assert guest.commitment(salt) == hashlib.sha256(expected).digest()
    assert guest.commitment(salt) != guest.commitment(bytes(32))
    assert set(guest.weights()) == {"weights", "bias"}
    with pytest.raises(HeteroLRError, match="salt"):
        weight_commitment(guest.weights(), b"short")


# ---------------------------------------------------------------------------- hostile messages


def frame(header: dict[str, Any], payload: bytes, *, raw: bytes | None = None) -> bytes:
    encoded = jcs(header) if raw is None else raw
    return len(encoded).to_bytes(2, "big") + encoded + payload


@pytest.fixture(scope="module")
def scores_message(run: Run) -> HostScores:
    message = next(m for m in run.received["guest"] if isinstance(m, HostScores))
    assert isinstance(message, HostScores)
    return message


def hostile_cases(message: HostScores, key: Any, limits: Limits) -> dict[str, tuple[bytes, str]]:
    data = message.to_bytes()
    header = {
        "type": HostScores.TYPE,
        "round": message.round,
        "batch": message.batch,
        "count": len(message.quarter_scores),
        "exponent": message.exponent,
    }
    payload = message.payload()
    width = 2 * limits.key_bytes

    def with_ciphertext(value: int) -> bytes:
        return frame(header, value.to_bytes(width, "big") + payload[width:])

    return {
        "truncated": (data[:-1], "payload of"),
        "truncated header": (data[:7], "truncated"),
        "empty": (b"", "truncated"),
        "oversized": (data + bytes(limits.max_bytes), "more than the"),
        "not JSON": (frame({}, b"", raw=b"\xff{"), "not JSON"),
        "not an object": (frame({}, payload, raw=b"[1]"), "not a JSON object"),
        "not canonical": (
            frame({}, payload, raw=jcs(header).replace(b",", b", ")),
            "not canonical",
        ),
        "another type": (frame({**header, "type": Residuals.TYPE}, payload), "another type"),
        "an extra field": (frame({**header, "extra": 1}, payload), "header fields"),
        "a bool count": (frame({**header, "count": True}, payload), "'count' is not a valid int"),
        "a negative batch": (frame({**header, "batch": -1}, payload), "'batch' is not a valid"),
        "too many rows": (frame({**header, "count": limits.rows + 1}, payload), "more than"),
        "a positive exponent": (frame({**header, "exponent": 3}, payload), "out of range"),
        "zero ciphertext": (with_ciphertext(0), "ciphertext 0 is not a unit"),
        "ciphertext n^2": (with_ciphertext(key.nsquare), "ciphertext 0 is not a unit"),
        "ciphertext n": (with_ciphertext(key.n), "ciphertext 0 is not a unit"),
        "wrong round": (frame({**header, "round": message.round + 1}, payload), "expected round"),
        "wrong batch": (frame({**header, "batch": message.batch + 1}, payload), "expected round"),
    }


CASES = [
    "truncated",
    "truncated header",
    "empty",
    "oversized",
    "not JSON",
    "not an object",
    "not canonical",
    "another type",
    "an extra field",
    "a bool count",
    "a negative batch",
    "too many rows",
    "a positive exponent",
    "zero ciphertext",
    "ciphertext n^2",
    "ciphertext n",
    "wrong round",
    "wrong batch",
]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_message_is_refused_in_one_line(
    run: Run, scores_message: HostScores, case: str
) -> None:
    key, limits = run.keys.public_key, run.parties.guest.limits
    data, expected = hostile_cases(scores_message, key, limits)[case]
    with pytest.raises(MessageError, match=expected) as caught:
        HostScores.from_bytes(
            data, key, limits, round=scores_message.round, batch=scores_message.batch
        )
    assert "\n" not in str(caught.value)


def test_the_wrong_type_is_refused_by_the_reader_of_another(
    run: Run, scores_message: HostScores
) -> None:
    with pytest.raises(MessageError, match="another type"):
        Residuals.from_bytes(
            scores_message.to_bytes(),
            run.keys.public_key,
            run.parties.host.limits,
            round=scores_message.round,
            batch=scores_message.batch,
        )


def test_hostile_replies_and_key_announcements_are_refused(run: Run, keys: KeyPair) -> None:
    key, limits = keys.public_key, run.parties.guest.limits
    reply = next(m for m in run.received["guest"] if isinstance(m, DecryptedGradient))
    header = {
        "type": DecryptedGradient.TYPE,
        "round": reply.round,
        "batch": reply.batch,
        "party": "guest",
        "values": reply.values,
        "slot_bits": reply.slot_bits,
        "count": len(reply.plaintexts),
    }
    at = {"round": reply.round, "batch": reply.batch}
    too_large = key.n.to_bytes(limits.key_bytes, "big") * len(reply.plaintexts)
    for data, expected in (
        (frame(header, too_large), "plaintext 0 is not below n"),
        (frame({**header, "party": "arbiter"}, reply.payload()), "neither"),
        (frame({**header, "count": 5}, reply.payload()), "cannot hold"),
        (frame({**header, "values": limits.values + 1}, reply.payload()), "more than"),
    ):
        with pytest.raises(MessageError, match=expected):
            DecryptedGradient.from_bytes(data, key, limits, **at)
    announced = KeyAnnouncement(0, 0, key, keys.hs).to_bytes()
    other = generate_keypair(BITS).public_key
    with pytest.raises(MessageError, match="not the one the job names"):
        KeyAnnouncement.from_bytes(announced, other, limits, round=0, batch=0)
    with pytest.raises(MessageError, match="the job names 1024 bits"):
        KeyAnnouncement.from_bytes(
            announced, None, replace(limits, key_bits=1024), round=0, batch=0
        )
    even = KeyAnnouncement(0, 0, type(key)(key.n + 1), keys.hs).to_bytes()
    with pytest.raises(MessageError, match="odd"):
        KeyAnnouncement.from_bytes(even, None, limits, round=0, batch=0)


def test_roles_refuse_messages_out_of_order(keys: KeyPair) -> None:
    data = make_data()
    parties = set_up(data.guest, data.host, make_terms(), keys=keys, rng=random.Random(2))
    guest, host, arbiter = parties.guest, parties.host, parties.arbiter
    with pytest.raises(HeteroLRError, match="cannot open round 0 batch 1"):
        host.scores(0, 1)
    scores = host.scores(0, 0)
    with pytest.raises(HeteroLRError, match="cannot open"):
        host.scores(0, 0)
    residuals = guest.residuals(scores)
    with pytest.raises(HeteroLRError, match="no verdict"):
        arbiter.verdict(0)
    gradient = guest.gradient()
    with pytest.raises(HeteroLRError, match="already"):
        guest.gradient()
    reply = arbiter.decrypt(gradient)
    with pytest.raises(HeteroLRError, match="already"):
        arbiter.decrypt(gradient)
    host.gradient(residuals)
    with pytest.raises(HeteroLRError, match="not the host's"):
        host.step(reply)
    with pytest.raises(HeteroLRError, match="not in round 1"):
        arbiter.receive_loss(replace(guest.loss(), round=1))


# ---------------------------------------------------------------------------- rules and bounds


def test_the_convergence_rule_stops_training_early(keys: KeyPair) -> None:
    data = make_data()
    terms = make_terms(max_epochs=10, tolerance=0.05)
    parties = set_up(data.guest, data.host, terms, keys=keys, rng=random.Random(4))
    outcome = train(parties.guest, parties.host, parties.arbiter)
    reference = fit([data.guest.X, data.host.X], data.guest.labels, TAYLOR, terms.config)
    assert outcome.converged and reference.converged
    assert len(outcome.epochs) == reference.epochs < terms.config.max_epochs
    assert [e.converged for e in outcome.epochs] == [False] * (reference.epochs - 1) + [True]
    with pytest.raises(HeteroLRError, match="cannot open round 0"):
        run_epoch(parties.guest, parties.host, parties.arbiter, 0)


@pytest.mark.parametrize(
    ("rows", "batch_size", "host_features"),
    [
        (ROWS, MIN_BATCH - 1, HOST_FEATURES),  # below the minimum
        (ROWS, 40, 40),  # no more rows than the host's features
        (ROWS + 10, 64, HOST_FEATURES),  # a last batch of 10 rows
        (20, 64, HOST_FEATURES),  # one batch, too short
    ],
)
def test_batches_too_small_to_hide_the_residuals_are_refused(
    rows: int, batch_size: int, host_features: int
) -> None:
    config = replace(CONFIG, batch_size=batch_size)
    with pytest.raises(HeteroLRError, match="give its residuals away") as caught:
        Terms(rows, GUEST_FEATURES, host_features, config, key_bits=BITS)
    assert "\n" not in str(caught.value)


def test_features_beyond_the_bound_are_refused_not_clipped(keys: KeyPair) -> None:
    data = make_data()
    X = data.host.X.copy()
    X[7, 2] = 64.5
    host = replace(data.host, X=X)
    with pytest.raises(HeteroLRError, match="'platform_f2' is not finite or beyond"):
        set_up(data.guest, host, make_terms(), keys=keys)


def test_a_diverging_model_is_stopped_before_its_scores_break_the_masks(keys: KeyPair) -> None:
    data = make_data()
    parties = set_up(data.guest, data.host, make_terms(learning_rate=5e3), keys=keys)
    with pytest.raises(HeteroLRError, match="diverged"):
        run_epoch(parties.guest, parties.host, parties.arbiter, 0)
