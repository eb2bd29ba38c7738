"""Tests of the Paillier layer against phe itself: ciphertexts cross between the two both ways,
the homomorphic sums equal their plaintext counterparts exactly on the rounded inputs, packing
and masking round-trip at their limits, and hostile inputs are one-line errors.

512-bit keys keep the suite fast; one smoke test runs at the production 2048 bits.
"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from phe import EncodedNumber, EncryptedNumber

from consortium.errors import ConsortiumError
from consortium.fl.vertical.paillier import (
    DEFAULT_EXPONENT,
    MASK_BITS,
    Decryptor,
    Encryptor,
    KeyPair,
    PaillierError,
    add_encrypted,
    add_plain,
    bits_for,
    decode,
    encode,
    generate_keypair,
    pack,
    slots,
    unpack,
    weighted_sums,
)

FEW = settings(max_examples=8, deadline=None)
HALF_STEP = 2.0**-33  # the rounding bound at DEFAULT_EXPONENT
VALUES = np.array([0.0, 1.0, -1.0, 0.1, -2.5e-10, 3.75e6, -123.456, 2.0**-40, 1e30])


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return generate_keypair(512)


@pytest.fixture(scope="module")
def other_keys() -> KeyPair:
    return generate_keypair(512)


@pytest.fixture(scope="module")
def encryptor(keys: KeyPair) -> Encryptor:
    return Encryptor(keys.public_key, keys.hs, random.Random(7))


@pytest.fixture(scope="module")
def decryptor(keys: KeyPair) -> Decryptor:
    return Decryptor(keys.private_key)


def rounded(values: np.ndarray, exponent: int = DEFAULT_EXPONENT) -> list[Fraction]:
    """The values as the fixed-point encoding rounds them, exactly."""
    scale = Fraction(16) ** -exponent
    return [Fraction(round(Fraction(float(v)) * scale)) / scale for v in values]


def signed(keys: KeyPair, plaintext: int) -> int:
    n = keys.public_key.n
    return plaintext - n if plaintext > n // 2 else plaintext


# ---------------------------------------------------------------------------- against phe


def test_our_ciphertexts_decrypt_with_phe(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor
) -> None:
    encrypted = encryptor.encrypt(VALUES)
    expected = [float(v) for v in rounded(VALUES)]
    assert [keys.private_key.decrypt(e) for e in encrypted] == expected
    assert decryptor.decrypt(encrypted).tolist() == expected
    assert np.all(np.abs(decryptor.decrypt(encrypted) - VALUES) <= HALF_STEP)


def test_phe_ciphertexts_decrypt_with_ours(keys: KeyPair, decryptor: Decryptor) -> None:
    """phe picks an exponent per value; ours decodes each at its own."""
    numbers = [*VALUES.tolist(), 7, -3, 2**80]
    encrypted = [keys.public_key.encrypt(v) for v in numbers]
    assert decryptor.decrypt(encrypted).tolist() == [keys.private_key.decrypt(e) for e in encrypted]


def test_our_ciphertexts_take_phe_arithmetic(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor
) -> None:
    ours = encryptor.encrypt(np.array([1.5, -2.0]))
    theirs = [keys.public_key.encrypt(0.25), keys.public_key.encrypt(-0.5)]
    mixed = [a * 3 + b for a, b in zip(ours, theirs, strict=True)]
    assert decryptor.decrypt(mixed).tolist() == [4.75, -6.5]


def test_encoding_follows_phe_convention(keys: KeyPair) -> None:
    n = keys.public_key.n
    assert encode(keys.public_key, [-1.5, 2.0, 0.0]) == [n - 3 * 2**31, 2**33, 0]
    assert encode(keys.public_key, [2.5 * 2**-32, 3.5 * 2**-32]) == [2, 4]  # half to even
    encodings = encode(keys.public_key, VALUES)
    phe_decoded = [EncodedNumber(keys.public_key, m, DEFAULT_EXPONENT).decode() for m in encodings]
    assert decode(keys.public_key, encodings, DEFAULT_EXPONENT).tolist() == phe_decoded


def test_bits_for_bounds_every_encoding_below_it(keys: KeyPair) -> None:
    for bound in (0.0, 1.0, 0.3, 1e9):
        bits = bits_for(bound, DEFAULT_EXPONENT)
        for value in (bound, -bound):
            (m,) = encode(keys.public_key, [value])
            assert abs(signed(keys, m)) < 2**bits
    assert bits_for(1.0, DEFAULT_EXPONENT) == 33


def test_encryption_is_randomized_and_a_seeded_source_repeats(keys: KeyPair) -> None:
    first = Encryptor(keys.public_key, keys.hs, random.Random(1)).encrypt(np.array([0.5, 0.5]))
    again = Encryptor(keys.public_key, keys.hs, random.Random(1)).encrypt(np.array([0.5, 0.5]))
    fresh = Encryptor(keys.public_key, keys.hs).encrypt(np.array([0.5, 0.5]))
    raw = [[e.ciphertext(be_secure=False) for e in v] for v in (first, again, fresh)]
    assert raw[0] == raw[1]
    assert raw[0][0] != raw[0][1]
    assert not set(raw[2]) & set(raw[0])


# ---------------------------------------------------------------------------- homomorphic sums

SAMPLE_VALUES = st.one_of(st.just(0.0), st.floats(-4, 4), st.floats(-1e-6, 1e-6))


@st.composite
def samples_and_features(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    samples = draw(st.integers(1, 12))
    features = draw(st.integers(1, 4))
    d = draw(hnp.arrays(np.float64, samples, elements=SAMPLE_VALUES))
    X = draw(hnp.arrays(np.float64, (samples, features), elements=SAMPLE_VALUES))
    return d, X * 2


@FEW
@given(samples_and_features())
def test_weighted_sums_are_X_transpose_d(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor, case: tuple[np.ndarray, np.ndarray]
) -> None:
    d, X = case
    sums = weighted_sums(encryptor.encrypt(d), X)
    assert {s.exponent for s in sums} == {2 * DEFAULT_EXPONENT}
    exact = [sum(a * b for a, b in zip(rounded(d), rounded(column), strict=True)) for column in X.T]
    scale = 16 ** (-2 * DEFAULT_EXPONENT)
    assert [signed(keys, m) for m in decryptor.decrypt_raw(sums)] == [e * scale for e in exact]
    bound = HALF_STEP * (np.abs(d)[:, None] + np.abs(X)).sum(axis=0) + len(d) * HALF_STEP**2
    error = np.abs(decryptor.decrypt(sums) - X.T @ d)
    assert np.all(error <= bound + 1e-14 * (np.abs(X).T @ np.abs(d)))


def test_weighted_sums_of_zero_negative_and_mixed_columns(
    encryptor: Encryptor, decryptor: Decryptor
) -> None:
    d = np.array([0.5, -1.0, 2.0, 0.0])
    X = np.array([[0.0, -1.0, 1.0], [0.0, -2.0, 3.0], [0.0, -0.5, 0.25], [0.0, -8.0, 6.0]])
    sums = decryptor.decrypt(weighted_sums(encryptor.encrypt(d), X))
    assert sums.tolist() == (X.T @ d).tolist()


def test_adding_plaintexts_and_ciphertexts(encryptor: Encryptor, decryptor: Decryptor) -> None:
    a, b = np.array([1.0, -2.0, 0.0]), np.array([-0.5, -3.0, 1e6])
    encrypted_a, encrypted_b = encryptor.encrypt(a), encryptor.encrypt(b)
    assert decryptor.decrypt(add_plain(encrypted_a, b)).tolist() == (a + b).tolist()
    assert decryptor.decrypt(add_encrypted(encrypted_a, encrypted_b)).tolist() == (a + b).tolist()


# ---------------------------------------------------------------------------- packing, masking


def test_pack_and_unpack_round_trip_at_the_slot_limits(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor
) -> None:
    slot_bits = 100
    per = slots(keys.public_key, slot_bits)
    assert per == (512 - 3) // slot_bits
    top = 2**slot_bits - 1
    values = [top, 0, 1, top - 1, 2 ** (slot_bits - 1)] * 2 + [top]  # two full groups and one
    packed = pack(encryptor.encrypt_encoded(values, 0), slot_bits)
    assert len(packed) == 3
    plaintexts = decryptor.decrypt_raw(packed)
    assert unpack(keys.public_key, plaintexts, slot_bits, len(values)) == values
    assert [keys.private_key.decrypt(p) for p in packed] == plaintexts  # below phe's max_int


def test_masking_hides_and_unmasking_restores(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor
) -> None:
    values = np.array([0.0, 1.0, -1.0, 0.999, -0.999])
    encrypted = encryptor.encrypt(values)
    value_bits = bits_for(1.0, DEFAULT_EXPONENT)
    masked, masks = encryptor.mask(encrypted, value_bits)
    plaintexts = decryptor.decrypt_raw(masked)
    encodings = encode(keys.public_key, values)
    low = 2**value_bits  # every masked value is positive, whatever the value's sign
    assert all(low <= o < low + 2 ** (value_bits + MASK_BITS) for o in masks.offsets)
    assert all(0 < p < 2**masks.slot_bits for p in plaintexts)
    assert all(p.bit_length() > value_bits + MASK_BITS - 16 for p in plaintexts)
    assert not set(plaintexts) & set(encodings)
    n, nsquare = keys.public_key.n, keys.public_key.nsquare
    shifted = [
        e.ciphertext(be_secure=False) * (1 + o * n) % nsquare
        for e, o in zip(encrypted, masks.offsets, strict=True)
    ]
    assert not set(shifted) & {m.ciphertext(be_secure=False) for m in masked}  # randomized again
    assert masks.remove(plaintexts).tolist() == decryptor.decrypt(encrypted).tolist()
    again, other_masks = encryptor.mask(encrypted, value_bits)
    assert not set(other_masks.offsets) & set(masks.offsets)
    packed = pack(again, other_masks.slot_bits)
    unpacked = unpack(keys.public_key, decryptor.decrypt_raw(packed), other_masks.slot_bits, 5)
    assert other_masks.remove(unpacked).tolist() == decryptor.decrypt(encrypted).tolist()


class ZeroBits(random.Random):
    """A source whose every draw is 0: the smallest mask there is."""

    def getrandbits(self, k: int) -> int:
        return 0


def test_the_smallest_mask_leaves_the_most_negative_value_positive(
    keys: KeyPair, decryptor: Decryptor
) -> None:
    encryptor = Encryptor(keys.public_key, keys.hs, ZeroBits())
    value_bits = bits_for(1.0, DEFAULT_EXPONENT)
    masked, masks = encryptor.mask(encryptor.encrypt(np.array([-1.0, 1.0])), value_bits)
    assert masks.offsets == (2**value_bits, 2**value_bits)
    assert decryptor.decrypt_raw(masked) == [2**value_bits - 2**32, 2**value_bits + 2**32]


def test_the_protocol_round_trip_of_a_masked_gradient(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor
) -> None:
    """Host encrypts, guest adds its part, the party computes X^T [[d]], masks and packs it, the
    arbiter decrypts the packed groups, and the party removes its masks."""
    rng = np.random.default_rng(3)
    host, guest = rng.uniform(-0.5, 0.5, 30), rng.uniform(-0.5, 0.5, 30)
    X = rng.normal(size=(30, 7))
    d = add_plain(encryptor.encrypt(host), guest)
    exponent = 2 * DEFAULT_EXPONENT
    value_bits = bits_for(float(np.abs(X).sum(axis=0).max()) * 1.01 + 1e-6, exponent)
    masked, masks = encryptor.mask(weighted_sums(d, X), value_bits)
    packed = pack(masked, masks.slot_bits)
    assert len(packed) < len(masked)
    plaintexts = decryptor.decrypt_raw(packed)
    gradient = masks.remove(unpack(keys.public_key, plaintexts, masks.slot_bits, 7))
    assert np.allclose(gradient, X.T @ (host + guest), rtol=0, atol=1e-8)


def test_a_value_beyond_the_mask_bound_is_refused(
    encryptor: Encryptor, decryptor: Decryptor
) -> None:
    masked, masks = encryptor.mask(encryptor.encrypt(np.array([4.0])), bits_for(1.0, -8))
    with pytest.raises(PaillierError, match="exceeds"):
        masks.remove(decryptor.decrypt_raw(masked))


# ---------------------------------------------------------------------------- hostile inputs


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e200])
def test_unencodable_values_are_refused(encryptor: Encryptor, value: float) -> None:
    with pytest.raises(ConsortiumError, match=r"finite|does not fit"):
        encryptor.encrypt(np.array([1.0, value]))
    with pytest.raises(ConsortiumError, match=r"finite|does not fit"):
        weighted_sums(encryptor.encrypt(np.array([1.0])), np.array([[value]]))


def test_another_keys_ciphertexts_are_refused(
    encryptor: Encryptor, decryptor: Decryptor, other_keys: KeyPair
) -> None:
    ours = encryptor.encrypt(np.array([1.0]))
    theirs = Encryptor(other_keys.public_key, other_keys.hs).encrypt(np.array([1.0]))
    for attempt in (
        lambda: decryptor.decrypt(theirs),
        lambda: decryptor.decrypt_raw(theirs),
        lambda: add_encrypted(ours, theirs),
        lambda: weighted_sums([*ours, *theirs], np.ones((2, 1))),
        lambda: encryptor.mask(theirs, 8),
    ):
        with pytest.raises(ConsortiumError, match="another public key"):
            attempt()


def test_empty_vectors_are_refused(encryptor: Encryptor, decryptor: Decryptor) -> None:
    one = encryptor.encrypt(np.array([1.0]))
    for attempt in (
        lambda: encryptor.encrypt(np.array([])),
        lambda: encryptor.encrypt_encoded([], 0),
        lambda: decryptor.decrypt([]),
        lambda: weighted_sums([], np.zeros((0, 2))),
        lambda: weighted_sums(one, np.zeros((1, 0))),
        lambda: add_plain([], np.array([])),
        lambda: add_encrypted([], []),
        lambda: encryptor.mask([], 8),
        lambda: pack([], 10),
    ):
        with pytest.raises(ConsortiumError, match="empty"):
            attempt()


def test_malformed_vectors_are_refused(keys: KeyPair, encryptor: Encryptor) -> None:
    two = encryptor.encrypt(np.array([1.0, 2.0]))
    coarse = encryptor.encrypt(np.array([1.0, 2.0]), exponent=-2)
    nsquare = keys.public_key.nsquare
    for attempt, message in (
        (lambda: weighted_sums(two, np.ones((3, 1))), "3 rows for 2"),
        (lambda: weighted_sums(two, np.ones(2)), "2-d"),
        (lambda: add_plain(two, np.ones(3)), "2 and 3"),
        (lambda: add_encrypted(two, coarse), "exponents"),
        (lambda: weighted_sums([*two, *coarse], np.ones((4, 1))), "exponents"),
        (lambda: encryptor.encrypt(np.array([["a"]])), "not an array of numbers"),
        (lambda: encryptor.encrypt(np.array([1.0]), exponent=1), "exponent"),
        (lambda: encryptor.encrypt_encoded([keys.public_key.n], 0), "outside"),
        (lambda: add_encrypted(two, [two[0], 5]), "not a ciphertext"),  # type: ignore[list-item]
        (lambda: add_encrypted(two, [EncryptedNumber(keys.public_key, 0)] * 2), "residue"),
        (lambda: add_encrypted(two, [EncryptedNumber(keys.public_key, nsquare)] * 2), "residue"),
        (lambda: encryptor.mask(two, 600), "do not fit"),
        (lambda: pack(two, 600), "does not fit"),
        (lambda: bits_for(float("nan"), -8), "finite"),
    ):
        with pytest.raises(ConsortiumError, match=message):
            attempt()


def test_bad_djn_bases_are_refused(keys: KeyPair) -> None:
    n = keys.public_key.n
    for hs in (0, 1, n, 3 * n, keys.public_key.nsquare - 1, keys.public_key.nsquare):
        with pytest.raises(ConsortiumError, match="DJN base"):
            Encryptor(keys.public_key, hs)


def test_plaintexts_outside_the_range_are_refused(
    keys: KeyPair, encryptor: Encryptor, decryptor: Decryptor
) -> None:
    overflowed = encryptor.encrypt_encoded([keys.public_key.n // 2], 0)
    with pytest.raises(ConsortiumError, match="outside the key's range"):
        decryptor.decrypt(overflowed)
    per = slots(keys.public_key, 100)
    with pytest.raises(ConsortiumError, match="overflows its slots"):
        unpack(keys.public_key, [2 ** (per * 100)], 100, per)
    with pytest.raises(ConsortiumError, match="cannot hold"):
        unpack(keys.public_key, [1, 2], 100, per)


# ---------------------------------------------------------------------------- production size


def test_a_2048_bit_key_round_trips() -> None:
    keys = generate_keypair()
    assert keys.public_key.n.bit_length() == 2048
    encryptor, decryptor = Encryptor(keys.public_key, keys.hs), Decryptor(keys.private_key)
    d = np.array([0.25, -1.5, 3.0])
    encrypted = encryptor.encrypt(d)
    assert keys.private_key.decrypt(encrypted[1]) == -1.5
    X = np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 4.0]])
    assert decryptor.decrypt(weighted_sums(encrypted, X)).tolist() == (X.T @ d).tolist()
