"""Paillier for hetero logistic regression: phe's keys and ciphertexts, fast paths behind them.

Keys and ciphertexts are phe's own types (``PaillierPublicKey``, ``PaillierPrivateKey``,
``EncryptedNumber``), so anything written against phe reads ours and the reverse; only the
arithmetic underneath is replaced, with gmpy2, where the protocol's volume makes phe's
textbook operations too slow:

- encryption draws Damgard-Jurik-Nielsen short-exponent randomness from a fixed-base table
  (:class:`Encryptor`): about 32 modular multiplications instead of a 2048-bit powmod;
- ``X^T [[d]]`` is one multi-exponentiation per feature (:func:`weighted_sums`) instead of
  one powmod per sample and feature;
- the arbiter decrypts several masked values per CRT decryption (:func:`pack`, :func:`unpack`);
  one value a decryption costs what it costs in phe, which uses gmpy2 already.

Fixed point follows phe's convention: a value is ``integer * 16**exponent``, a negative integer
is stored as ``n - |integer|``, and one exponent serves a whole vector. At the default
exponent, -8, values are rounded to multiples of ``2**-32``: each is off by at most ``2**-33``
(about 1.2e-10), and a weighted sum over N samples is exact on the rounded inputs, so it is off
by at most ``2**-33 * sum_i (|d_i| + |x_ij|) + N * 2**-66``. Any finite float64 fits a 2048-bit
key at that exponent (phe's bound is ``n / 3``); sums must stay below it too, or decryption
reports an overflow. The default is no finer because the multi-exponentiation's cost grows
with the bits of X's integers.

phe marks the ciphertexts made here as not obfuscated, so its ``ciphertext()`` with the
default ``be_secure=True`` would randomize them again at phe's cost. Encryptions and masks
made here are already randomized; send ``ciphertext(be_secure=False)`` of those.

Randomness: everything that draws takes ``rng``; ``None`` is the operating system's source
(:data:`OS_RANDOM`, from :mod:`secrets`), the only one for production; a seeded
``random.Random`` makes results reproducible in tests.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import gmpy2
import numpy as np
from gmpy2 import mpz
from numpy.typing import ArrayLike, NDArray
from phe import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair

from consortium.errors import ConsortiumError

DEFAULT_EXPONENT = -8
SHORT_EXPONENT_BITS = 256  # DJN's exponent: twice a 2048-bit key's 112-bit level, and more
MASK_BITS = 80  # how far a mask reaches beyond the values it hides: distance 2**-79
BASE_BITS = 4  # phe's BASE is 16
OS_RANDOM: random.Random = secrets.SystemRandom()


class PaillierError(ConsortiumError):
    """A value, vector or ciphertext the Paillier layer cannot take; the message says which."""


class KeyPair(NamedTuple):
    """A phe key pair and the DJN base ``h_s`` published with its public key."""

    public_key: PaillierPublicKey
    private_key: PaillierPrivateKey
    hs: int


def generate_keypair(bits: int = 2048) -> KeyPair:
    """A new phe key pair (primes from the operating system's random source) and its DJN base."""
    public_key, private_key = generate_paillier_keypair(n_length=bits)
    return KeyPair(public_key, private_key, djn_base(public_key))


def djn_base(public_key: PaillierPublicKey, rng: random.Random | None = None) -> int:
    """``h_s = h^n mod n^2`` for ``h = -y^2 mod n`` and a random unit ``y``: DJN's public base.

    The key holder publishes it with the public key; any encryptor may also make its own.
    """
    rng = rng or OS_RANDOM
    n = mpz(public_key.n)
    y = mpz(rng.randrange(2, public_key.n))
    while gmpy2.gcd(y, n) != 1:
        y = mpz(rng.randrange(2, public_key.n))
    return int(gmpy2.powmod(-y * y % n, n, n * n))


# ---------------------------------------------------------------------------- fixed point


def encode(
    public_key: PaillierPublicKey, values: ArrayLike, exponent: int = DEFAULT_EXPONENT
) -> list[int]:
    """A vector's phe encodings at one exponent: ``round(value * 16**-exponent) mod n``."""
    n = public_key.n
    return [m % n for m in _integers(public_key, _floats(values, 1, "the vector"), exponent)]


def decode(
    public_key: PaillierPublicKey, encodings: Sequence[int], exponent: int
) -> NDArray[np.float64]:
    """The values of phe encodings at one exponent (the inverse of :func:`encode`)."""
    return np.array([_decoded(public_key, m, exponent) for m in encodings], dtype=np.float64)


def bits_for(bound: float, exponent: int) -> int:
    """The ``value_bits`` that :meth:`Encryptor.mask` needs for values at most ``bound`` in
    magnitude at ``exponent``; a bound on a sum of rounded products needs some slack."""
    if not (math.isfinite(bound) and bound >= 0):
        raise PaillierError(f"a bound must be finite and not negative, not {bound}")
    return math.ceil(Fraction(bound) * Fraction(16) ** -exponent).bit_length()


def _floats(values: ArrayLike, ndim: int, what: str) -> NDArray[np.float64]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PaillierError(f"{what} is not an array of numbers") from exc
    if array.ndim != ndim or array.size == 0:
        raise PaillierError(
            f"{what} must be a non-empty {ndim}-d array, not of shape {array.shape}"
        )
    return array


def _integers(
    public_key: PaillierPublicKey, array: NDArray[np.float64], exponent: int
) -> list[int]:
    """The array's values (flattened) as signed integers at ``exponent``, each within phe's
    ``max_int``; exact, rounding half to even."""
    if exponent > 0:
        raise PaillierError(f"the exponent must be 0 or negative, not {exponent}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise PaillierError(f"cannot encode {array.flat[bad[0]]}: only finite numbers have one")
    shift = -BASE_BITS * exponent
    values = array.ravel().tolist()
    with np.errstate(over="ignore"):
        scaled = np.rint(np.ldexp(array.ravel(), shift)).tolist()
    integers = [
        int(s) if math.isfinite(s) else round(Fraction(v) * (1 << shift))
        for s, v in zip(scaled, values, strict=True)
    ]
    limit = public_key.max_int
    for m, v in zip(integers, values, strict=True):
        if abs(m) > limit:
            raise PaillierError(
                f"{v:g} does not fit a {public_key.n.bit_length()}-bit key at exponent {exponent}"
            )
    return integers


def _decoded(public_key: PaillierPublicKey, encoding: int, exponent: int) -> float:
    n, limit = public_key.n, public_key.max_int
    if 0 <= encoding <= limit:
        mantissa = encoding
    elif n - limit <= encoding < n:
        mantissa = encoding - n
    else:
        raise PaillierError(
            "a plaintext lies outside the key's range: an overflow, or another key's ciphertext"
        )
    return _scaled(mantissa, exponent)


def _scaled(mantissa: int, exponent: int) -> float:
    """``mantissa * 16**exponent`` as a float, as phe's decode computes it."""
    try:
        if exponent >= 0:
            return float(mantissa * 16**exponent)
        return mantissa / (1 << (-BASE_BITS * exponent))
    except OverflowError as exc:
        raise PaillierError("a decrypted value is too large for a float64") from exc


# ---------------------------------------------------------------------------- ciphertexts


def _ciphertexts(
    encrypted: Sequence[EncryptedNumber], public_key: PaillierPublicKey | None = None
) -> tuple[PaillierPublicKey, list[mpz]]:
    """The raw ciphertexts of a non-empty vector under one key (``public_key`` if given)."""
    if len(encrypted) == 0:
        raise PaillierError("the vector of ciphertexts is empty")
    for index, number in enumerate(encrypted):
        if not isinstance(number, EncryptedNumber):
            raise PaillierError(f"item {index} is a {type(number).__name__}, not a ciphertext")
    key = public_key or encrypted[0].public_key
    ciphertexts = []
    for index, number in enumerate(encrypted):
        if number.public_key is not key and number.public_key != key:
            raise PaillierError(f"ciphertext {index} is under another public key")
        raw = number.ciphertext(be_secure=False)
        if not (isinstance(raw, int) and 0 < raw < key.nsquare):
            raise PaillierError(f"ciphertext {index} is not a residue modulo n^2")
        ciphertexts.append(mpz(raw))
    return key, ciphertexts


def _common_exponent(*vectors: Sequence[EncryptedNumber]) -> int:
    exponents = {number.exponent for vector in vectors for number in vector}
    if len(exponents) != 1:
        raise PaillierError(
            f"the ciphertexts have exponents {sorted(exponents)}; vectors take one exponent"
        )
    return exponents.pop()


def _same_length(left: Sequence[object], right: Sequence[object]) -> None:
    if len(left) != len(right):
        raise PaillierError(f"the vectors have {len(left)} and {len(right)} elements")


class Encryptor:
    """Encrypts under one public key with DJN randomness from a table built once per key.

    A ciphertext is ``(1 + m n) * h_s^a mod n^2``: ``g^m`` for phe's ``g = n + 1`` needs no
    powmod, and ``h_s^a`` for a fresh :data:`SHORT_EXPONENT_BITS`-bit ``a`` is one entry of
    the table per byte of ``a`` (32 rows of the 255 powers ``h_s^(d * 256^i)``, about 4 MB at
    2048 bits), so at most 32 modular multiplications instead of phe's ``r^n``.

    Security: semantic security rests on Paillier's decisional composite residuosity assumption
    and on the short-exponent assumption of Damgard, Jurik and Nielsen ("A generalization of
    Paillier's public-key system with applications to electronic voting", IJIS, 2010): that
    ``h^a`` for a random short ``a`` cannot be told from a uniform element of the group ``h``
    generates. A 2048-bit n gives about 112-bit security (NIST SP 800-57); the best known
    attack on a short exponent is a square-root search, so 224 bits would match it and the
    256 drawn give 128. The key holder, who can decrypt anyway, is trusted with ``h_s``.
    """

    def __init__(
        self, public_key: PaillierPublicKey, hs: int, rng: random.Random | None = None
    ) -> None:
        n, nsquare = mpz(public_key.n), mpz(public_key.nsquare)
        if not (1 < hs < nsquare - 1 and gmpy2.gcd(hs, n) == 1):
            raise PaillierError("the DJN base is not a unit modulo n^2 other than 1 and -1")
        self.public_key = public_key
        self._n, self._nsquare = n, nsquare
        self._rng = rng or OS_RANDOM
        self._table = _byte_table(mpz(hs), nsquare)

    def encrypt(self, values: ArrayLike, exponent: int = DEFAULT_EXPONENT) -> list[EncryptedNumber]:
        """A float vector, encoded at one exponent and encrypted."""
        return self.encrypt_encoded(encode(self.public_key, values, exponent), exponent)

    def encrypt_encoded(self, encodings: Sequence[int], exponent: int) -> list[EncryptedNumber]:
        """Encodings (integers modulo n, as :func:`encode` makes them) encrypted."""
        if len(encodings) == 0:
            raise PaillierError("the vector to encrypt is empty")
        n, nsquare = self._n, self._nsquare
        encrypted = []
        for m in encodings:
            if not 0 <= m < n:
                raise PaillierError("an encoding lies outside [0, n)")
            ciphertext = (n * m + 1) * self._randomness() % nsquare
            encrypted.append(EncryptedNumber(self.public_key, int(ciphertext), exponent))
        return encrypted

    def mask(
        self, encrypted: Sequence[EncryptedNumber], value_bits: int
    ) -> tuple[list[EncryptedNumber], Masks]:
        """Each value plus a fresh random mask, for values below ``2**value_bits`` in magnitude
        at their exponent (:func:`bits_for`); returns the masks to remove after decryption.

        The masks are added as fresh encryptions, so the result is randomized again too: no
        trace of how it was computed (the samples' randomness raised to X) reaches the arbiter.
        """
        public_key, _ = _ciphertexts(encrypted, self.public_key)
        exponent = _common_exponent(encrypted)
        if value_bits < 0 or slots(public_key, value_bits + MASK_BITS + 1) < 1:
            raise PaillierError(f"{value_bits} value bits and a mask do not fit this key")
        offsets = tuple(
            (1 << value_bits) + self._rng.getrandbits(value_bits + MASK_BITS) for _ in encrypted
        )
        masked = add_encrypted(encrypted, self.encrypt_encoded(offsets, exponent))
        return masked, Masks(offsets, value_bits, exponent)

    def _randomness(self) -> mpz:
        """``h_s^a mod n^2`` for a fresh short ``a``: one table entry per byte of ``a``."""
        digits = self._rng.getrandbits(SHORT_EXPONENT_BITS).to_bytes(
            SHORT_EXPONENT_BITS // 8, "little"
        )
        randomness = mpz(1)
        for row, digit in zip(self._table, digits, strict=True):
            if digit:
                randomness = randomness * row[digit] % self._nsquare
        return randomness


def _byte_table(base: mpz, modulus: mpz) -> list[list[mpz]]:
    """``rows[i][d] = base^(d * 256^i) mod modulus`` for every byte ``i`` of a short exponent."""
    rows = []
    for _ in range(SHORT_EXPONENT_BITS // 8):
        row = [mpz(1), base]
        for _ in range(254):
            row.append(row[-1] * base % modulus)
        rows.append(row)
        base = row[-1] * base % modulus
    return rows


@dataclass(frozen=True)
class Masks:
    """The masks :meth:`Encryptor.mask` added, which only the party that added them holds.

    Each offset is ``2**value_bits`` plus a uniform integer below ``2**(value_bits +
    MASK_BITS)``, so a masked value is positive, below ``2**slot_bits`` (it packs), and within
    statistical distance ``2**(1 - MASK_BITS)`` of the masked value of any other value within
    the bound.
    """

    offsets: tuple[int, ...]
    value_bits: int
    exponent: int

    @property
    def slot_bits(self) -> int:
        return self.value_bits + MASK_BITS + 1

    def remove(self, plaintexts: Sequence[int]) -> NDArray[np.float64]:
        """The values, from the decrypted masked plaintexts (:meth:`Decryptor.decrypt_raw`, or
        :func:`unpack` of packed ones)."""
        _same_length(plaintexts, self.offsets)
        limit = 1 << self.value_bits
        values = []
        for index, (plaintext, offset) in enumerate(zip(plaintexts, self.offsets, strict=True)):
            value = plaintext - offset
            if not -limit < value < limit:
                raise PaillierError(
                    f"unmasked value {index} exceeds the 2**{self.value_bits} its mask was for"
                )
            values.append(_scaled(value, self.exponent))
        return np.array(values, dtype=np.float64)


class Decryptor:
    """CRT decryption with gmpy2 under one private key, from phe's ``p``, ``q``, ``hp``, ``hq``.

    Two powmods modulo ``p^2`` and ``q^2``. phe decrypts with gmpy2's powmod already, so one
    value costs the same here, and ``gmpy2.powmod_base_list`` over a whole vector is no faster
    (``scripts/bench/paillier.py``); what multiplies values per decryption is packing, which
    :meth:`decrypt_raw` reads.
    """

    def __init__(self, private_key: PaillierPrivateKey) -> None:
        self.private_key = private_key
        self._p, self._q = mpz(private_key.p), mpz(private_key.q)
        self._psquare, self._qsquare = mpz(private_key.psquare), mpz(private_key.qsquare)
        self._hp, self._hq = mpz(private_key.hp), mpz(private_key.hq)
        self._p_inverse = mpz(private_key.p_inverse)

    def decrypt(self, encrypted: Sequence[EncryptedNumber]) -> NDArray[np.float64]:
        """The values of a vector of ciphertexts, each decoded at its own exponent."""
        plaintexts = self.decrypt_raw(encrypted)
        public_key = self.private_key.public_key
        return np.array(
            [
                _decoded(public_key, m, number.exponent)
                for m, number in zip(plaintexts, encrypted, strict=True)
            ],
            dtype=np.float64,
        )

    def decrypt_raw(self, encrypted: Sequence[EncryptedNumber]) -> list[int]:
        """The plaintexts modulo n, undecoded: masked and packed values are read this way."""
        _, ciphertexts = _ciphertexts(encrypted, self.private_key.public_key)
        return [int(self._plaintext(c)) for c in ciphertexts]

    def _plaintext(self, ciphertext: mpz) -> mpz:
        p, q, psquare, qsquare = self._p, self._q, self._psquare, self._qsquare
        mp = (gmpy2.powmod(ciphertext % psquare, p - 1, psquare) - 1) // p * self._hp % p
        mq = (gmpy2.powmod(ciphertext % qsquare, q - 1, qsquare) - 1) // q * self._hq % q
        return mp + (mq - mp) * self._p_inverse % q * p


# ---------------------------------------------------------------------------- homomorphic sums


def add_plain(encrypted: Sequence[EncryptedNumber], values: ArrayLike) -> list[EncryptedNumber]:
    """``[[a_i + b_i]]`` from ``[[a_i]]`` and plaintext ``b_i`` encoded at the ciphertexts'
    exponent: ``c * (1 + b n) mod n^2``, no powmod and no new randomness."""
    public_key, ciphertexts = _ciphertexts(encrypted)
    exponent = _common_exponent(encrypted)
    encodings = encode(public_key, values, exponent)
    _same_length(ciphertexts, encodings)
    n, nsquare = mpz(public_key.n), mpz(public_key.nsquare)
    return [
        EncryptedNumber(public_key, int(c * (n * m + 1) % nsquare), exponent)
        for c, m in zip(ciphertexts, encodings, strict=True)
    ]


def add_encrypted(
    left: Sequence[EncryptedNumber], right: Sequence[EncryptedNumber]
) -> list[EncryptedNumber]:
    """``[[a_i + b_i]]`` from ``[[a_i]]`` and ``[[b_i]]`` under one key and exponent."""
    public_key, a = _ciphertexts(left)
    _, b = _ciphertexts(right, public_key)
    _same_length(a, b)
    exponent = _common_exponent(left, right)
    nsquare = mpz(public_key.nsquare)
    return [
        EncryptedNumber(public_key, int(x * y % nsquare), exponent)
        for x, y in zip(a, b, strict=True)
    ]


def weighted_sums(
    encrypted: Sequence[EncryptedNumber], X: ArrayLike, exponent: int = DEFAULT_EXPONENT
) -> list[EncryptedNumber]:
    """``X^T [[d]]``: for each column j of X, ``[[sum_i d_i X[i, j]]]``, at the exponent of d
    plus ``exponent`` (X's encoding).

    Each column is two multi-exponentiations over the samples, of the positive and of the
    negated negative coefficients, joined by one modular inverse. The sums are not randomized
    again: mask them (:meth:`Encryptor.mask`) before anyone else sees them.
    """
    public_key, ciphertexts = _ciphertexts(encrypted)
    d_exponent = _common_exponent(encrypted)
    matrix = _floats(X, 2, "X")
    if matrix.shape[0] != len(ciphertexts):
        raise PaillierError(f"X has {matrix.shape[0]} rows for {len(ciphertexts)} ciphertexts")
    coefficients = _integers(public_key, matrix.T, exponent)  # column after column
    nsquare = mpz(public_key.nsquare)
    samples = len(ciphertexts)
    sums = []
    for start in range(0, len(coefficients), samples):
        column = coefficients[start : start + samples]
        positive = [(c, k) for c, k in zip(ciphertexts, column, strict=True) if k > 0]
        negative = [(c, -k) for c, k in zip(ciphertexts, column, strict=True) if k < 0]
        total = _multi_exponentiation(positive, nsquare)
        if negative:
            try:
                inverse = gmpy2.invert(_multi_exponentiation(negative, nsquare), nsquare)
            except ZeroDivisionError as exc:
                raise PaillierError("a ciphertext is not invertible modulo n^2") from exc
            total = total * inverse % nsquare
        sums.append(EncryptedNumber(public_key, int(total), d_exponent + exponent))
    return sums


def _multi_exponentiation(terms: list[tuple[mpz, int]], modulus: mpz) -> mpz:
    """``prod b^e mod modulus`` over ``(b, e)`` terms with ``e > 0``: Pippenger's buckets.

    For each window of ``w`` exponent bits, from the top, every base joins the bucket of its
    digit; two running products over the buckets give ``prod_d bucket_d^d``; windows are joined
    by ``w`` squarings. About ``bits / w * (terms + 2**(w + 1))`` multiplications, against
    ``1.5 * bits`` per term for one powmod each.
    """
    if not terms:
        return mpz(1)
    bits = max(e for _, e in terms).bit_length()
    width = min(range(1, 17), key=lambda w: -(-bits // w) * (len(terms) + (2 << w)))
    digit_mask = (1 << width) - 1
    result = mpz(1)
    for shift in reversed(range(0, bits, width)):
        if result != 1:
            result = gmpy2.powmod(result, 1 << width, modulus)
        buckets: list[mpz | None] = [None] * (1 << width)
        for base, e in terms:
            digit = (e >> shift) & digit_mask
            if digit:
                held = buckets[digit]
                buckets[digit] = base if held is None else held * base % modulus
        running: mpz | None = None
        window: mpz | None = None
        for held in buckets[:0:-1]:  # from the top digit down to 1
            if held is not None:
                running = held if running is None else running * held % modulus
            if running is not None:
                window = running if window is None else window * running % modulus
        if window is not None:
            result = result * window % modulus
    return result


# ---------------------------------------------------------------------------- packing


def slots(public_key: PaillierPublicKey, slot_bits: int) -> int:
    """How many ``slot_bits``-bit values one packed plaintext holds, staying below phe's
    ``max_int`` (n / 3) so that phe decrypts a packed ciphertext to its exact integer too."""
    if slot_bits < 1:
        raise PaillierError(f"a slot needs at least one bit, not {slot_bits}")
    return (public_key.n.bit_length() - 3) // slot_bits


def pack(encrypted: Sequence[EncryptedNumber], slot_bits: int) -> list[EncryptedNumber]:
    """Ciphertexts of values in ``[0, 2**slot_bits)`` (masked ones: :attr:`Masks.slot_bits`)
    packed :func:`slots` to a ciphertext of ``sum_j v_j 2**(j slot_bits)``, first value lowest.

    Horner's rule costs ``slot_bits`` squarings per value; the arbiter then decrypts once per
    group (:meth:`Decryptor.decrypt_raw`) and :func:`unpack` splits the plaintexts.
    """
    public_key, ciphertexts = _ciphertexts(encrypted)
    per = slots(public_key, slot_bits)
    if per < 1:
        raise PaillierError(f"a {slot_bits}-bit slot does not fit this key")
    nsquare, shift = mpz(public_key.nsquare), mpz(1) << slot_bits
    packed = []
    for start in range(0, len(ciphertexts), per):
        group = ciphertexts[start : start + per]
        total = group[-1]
        for c in reversed(group[:-1]):
            total = gmpy2.powmod(total, shift, nsquare) * c % nsquare
        packed.append(EncryptedNumber(public_key, int(total), 0))
    return packed


def unpack(
    public_key: PaillierPublicKey, plaintexts: Sequence[int], slot_bits: int, count: int
) -> list[int]:
    """The ``count`` values in the slots of decrypted packed plaintexts, in packing order."""
    per = slots(public_key, slot_bits)
    if per < 1 or count < 1 or len(plaintexts) != -(-count // per):
        raise PaillierError(
            f"{len(plaintexts)} packed plaintexts cannot hold {count} values of {slot_bits} bits"
        )
    slot_mask = (1 << slot_bits) - 1
    values = []
    for plaintext in plaintexts:
        if not 0 <= plaintext < 1 << (per * slot_bits):
            raise PaillierError("a packed plaintext overflows its slots")
        values.extend((plaintext >> (j * slot_bits)) & slot_mask for j in range(per))
    return values[:count]
