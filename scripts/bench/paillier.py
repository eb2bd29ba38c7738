"""What Paillier costs at 2048 bits, per core: phe, FATE's rust-paillier and ours side by side.

The figures of the vertical SME-credit issue's cryptographic layer, all in one run, each as
operations per CPU-second of this process (so that other work on a shared machine does not
count against them), the best of ``--repeat`` runs:

- **encrypt/s**: phe's ``encrypt`` (``r^n`` with a 2048-bit ``r``), rust-paillier's
  ``encrypt_f64`` and ours (DJN short-exponent randomness from a fixed-base table). Target:
  ours at least 1,000/s.
- **decrypt/s**, values and ciphertexts: phe's CRT decryption, rust-paillier's, ours one value
  a ciphertext (gmpy2 CRT) and ours packed (masked gradient values, as many to a plaintext as
  their slots allow: the arbiter's path). A second table sets the decryption variants apart,
  with ``gmpy2.powmod_base_list`` over the vector beside the loop. Target: ours at least 200
  values/s.
- **ciphertext x plaintext/s**, counted per sample-feature: one product at a time (phe's
  ``EncryptedNumber * float``, rust-paillier's ``mul_plaintext_f64``, ours a gmpy2 powmod each
  with one inverse per negative coefficient) and ``X^T [[d]]`` (phe's sums of products,
  rust-paillier's ``rmatmul_plaintext_ix2_f64``, ours ``weighted_sums``) on the same 200
  samples x 8 features, and ours again on 4,000 samples, where its buckets pay off more.
- **add/s**: ciphertext + ciphertext and ciphertext + plaintext.

rust-paillier is FATE's Rust library on PyPI (``pip install '.[bench]'``; its import name is
``rust_paillier``, whose non-parallel module is used), with its own key of the same size and
its own fixed-point encoding; when it is not installed, fails or computes a wrong result, its
column says so. Every result is checked against the plaintext computation before it is
reported. Run from the repository root::

    .venv/bin/python scripts/bench/paillier.py [--repeat 3] [--json]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import click
import gmpy2
import numpy as np
from gmpy2 import mpz
from outcome import Target, finish, load_json, print_verdicts, progress_log, run_line, targets_json
from phe import EncryptedNumber, PaillierPrivateKey
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from consortium.errors import ConsortiumError
from consortium.fl.vertical.paillier import (
    DEFAULT_EXPONENT,
    MASK_BITS,
    Decryptor,
    Encryptor,
    KeyPair,
    add_encrypted,
    add_plain,
    bits_for,
    encode,
    generate_keypair,
    pack,
    slots,
    unpack,
    weighted_sums,
)

BITS = 2048
ENCRYPT_TARGET = 1_000
DECRYPT_TARGET = 200
SAMPLES, FEATURES, SUBSET = 4_000, 8, 200
SLOW_COUNT = 40  # encryptions and decryptions by phe and rust-paillier
FAST_COUNT = 1_000  # our encryptions
DECRYPT_COUNT = 100
ADD_COUNT = 2_000
PACKED_GROUPS = 20
LIBRARIES = ("phe", "rust-paillier", "ours")
OPERATIONS = {
    "encrypt": "encrypt / s",
    "decrypt values": "decrypt, values / s (ours: packed)",
    "decrypt ciphertexts": "decrypt, ciphertexts / s (ours: packed)",
    "product": "ciphertext x plaintext / s, one at a time",
    "X^T d": f"X^T [[d]], per sample-feature / s, {SUBSET} x {FEATURES}",
    "X^T d, large": f"X^T [[d]], per sample-feature / s, {SAMPLES:,} x {FEATURES}",
    "add": "ciphertext + ciphertext / s",
    "add plain": "ciphertext + plaintext / s",
}
TOLERANCE = 1e-6
PRODUCT_EXPONENT = 2 * DEFAULT_EXPONENT  # d's and X's

_T = TypeVar("_T")


@dataclass(frozen=True)
class Rate:
    """``count`` operations in ``cpu`` CPU seconds (the best run) and ``wall`` seconds."""

    count: int
    cpu: float
    wall: float

    @property
    def per_second(self) -> float:
        return self.count / max(self.cpu, 1e-9)


def timed(call: Callable[[], _T], count: int, repeat: int) -> tuple[Rate, _T]:
    """The best of ``repeat`` runs of ``call`` (``count`` operations each), and its result."""
    rates = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = call()
        rates.append(Rate(count, time.process_time() - cpu, time.perf_counter() - wall))
    return min(rates, key=lambda rate: rate.cpu), result


def check(condition: bool, what: str) -> None:
    """Refuses to report figures of a wrong result."""
    if not condition:
        raise ConsortiumError(f"the benchmark computed a wrong result: {what}")


def close(got: Any, expected: Any) -> bool:
    return bool(np.allclose(np.asarray(got, dtype=np.float64), expected, rtol=0, atol=TOLERANCE))


@dataclass
class Inputs:
    """The residuals d of every sample and the standardized features X, clipped to +-8."""

    d: np.ndarray
    X: np.ndarray

    @classmethod
    def make(cls) -> Inputs:
        rng = np.random.default_rng(2048)
        return cls(
            rng.uniform(-1, 1, SAMPLES), np.clip(rng.normal(size=(SAMPLES, FEATURES)), -8, 8)
        )

    @property
    def value_bits(self) -> int:
        """Bits of a gradient value at X^T [[d]]'s exponent, with slack for the rounding."""
        return bits_for(float(np.abs(self.X).sum(axis=0).max()) * 1.01, PRODUCT_EXPONENT)


@dataclass
class Packed:
    """The arbiter's packed decryption and the party's side of it."""

    values: int
    slot_bits: int
    per_ciphertext: int
    decrypt: Rate  # counts values
    ciphertexts: int
    mask: Rate
    pack: Rate


@dataclass
class Results:
    rows: dict[str, dict[str, Rate]]  # library -> operation -> rate
    notes: dict[str, str]  # library -> why it has no figures
    variants: dict[str, tuple[Rate, int]]  # decryption variant -> (values, ciphertexts)
    packed: Packed
    repeat: int
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    def rate(self, library: str, operation: str) -> float | None:
        rate = self.rows.get(library, {}).get(operation)
        return None if rate is None else rate.per_second

    def targets(self) -> list[Target]:
        encrypt = self.rate("ours", "encrypt") or 0.0
        decrypt = self.rate("ours", "decrypt values") or 0.0
        return [
            Target(
                f"our encryptions / s per core at {BITS} bits >= {ENCRYPT_TARGET:,}",
                f"{encrypt:,.0f}",
                encrypt >= ENCRYPT_TARGET,
            ),
            Target(
                f"our decrypted values / s per core at {BITS} bits >= {DECRYPT_TARGET:,} "
                f"(packed, {self.packed.per_ciphertext} a ciphertext)",
                f"{decrypt:,.0f}",
                decrypt >= DECRYPT_TARGET,
            ),
        ]


# ---------------------------------------------------------------------------- measuring


def measure_phe(keys: KeyPair, inputs: Inputs, repeat: int) -> dict[str, Rate]:
    public_key, private_key = keys.public_key, keys.private_key
    d, X = inputs.d[:SUBSET], inputs.X[:SUBSET]
    values = d[:SLOW_COUNT].tolist()
    rows: dict[str, Rate] = {}
    rows["encrypt"], _ = timed(lambda: [public_key.encrypt(v) for v in values], SLOW_COUNT, repeat)
    encrypted = [public_key.encrypt(v) for v in d.tolist()]
    ciphertexts = encrypted[:DECRYPT_COUNT]
    rate, plain = timed(
        lambda: [private_key.decrypt(e) for e in ciphertexts], DECRYPT_COUNT, repeat
    )
    check(close(plain, d[:DECRYPT_COUNT]), "phe's decryption")
    rows["decrypt values"] = rows["decrypt ciphertexts"] = rate
    column = X[:, 0].tolist()
    rows["product"], _ = timed(
        lambda: [e * x for e, x in zip(encrypted, column, strict=True)], SUBSET, repeat
    )
    columns = X.T.tolist()
    rate, sums = timed(
        lambda: [sum(e * x for e, x in zip(encrypted, c, strict=True)) for c in columns],
        SUBSET * FEATURES,
        repeat,
    )
    check(close([private_key.decrypt(s) for s in sums], X.T @ d), "phe's X^T [[d]]")
    rows["X^T d"] = rate
    left = (encrypted * (ADD_COUNT // SUBSET + 1))[:ADD_COUNT]
    pairs = list(zip(left, left[1:] + left[:1], strict=True))
    rows["add"], _ = timed(lambda: [a + b for a, b in pairs], ADD_COUNT, repeat)
    plain = list(zip(left, (column * (ADD_COUNT // SUBSET + 1))[:ADD_COUNT], strict=True))
    rows["add plain"], _ = timed(lambda: [a + b for a, b in plain], ADD_COUNT, repeat)
    return rows


def load_rust() -> ModuleType | str:
    """FATE's rust-paillier, or why it cannot be measured."""
    try:
        import rust_paillier
    except ImportError:
        return "not installed"
    return rust_paillier


def measure_rust(rust: ModuleType, inputs: Inputs, repeat: int) -> dict[str, Rate]:
    public_key, private_key = rust.keygen(BITS)
    d, X = inputs.d[:SUBSET], inputs.X[:SUBSET]
    rows: dict[str, Rate] = {}
    rows["encrypt"], _ = timed(lambda: public_key.encrypt_f64(d[:SLOW_COUNT]), SLOW_COUNT, repeat)
    encrypted = public_key.encrypt_f64(d)
    ciphertexts = public_key.encrypt_f64(d[:DECRYPT_COUNT])
    rate, plain = timed(lambda: private_key.decrypt_f64(ciphertexts), DECRYPT_COUNT, repeat)
    check(close(plain, d[:DECRYPT_COUNT]), "rust-paillier's decryption")
    rows["decrypt values"] = rows["decrypt ciphertexts"] = rate
    rows["product"], product = timed(lambda: encrypted.mul_plaintext_f64(X[:, 0]), SUBSET, repeat)
    check(close(private_key.decrypt_f64(product), d * X[:, 0]), "rust-paillier's products")
    column = public_key.encrypt_f64(d.reshape(-1, 1))
    rate, sums = timed(lambda: column.rmatmul_plaintext_ix2_f64(X.T), SUBSET * FEATURES, repeat)
    check(close(private_key.decrypt_f64(sums).ravel(), X.T @ d), "rust-paillier's X^T [[d]]")
    rows["X^T d"] = rate
    rounds = ADD_COUNT // SUBSET
    rows["add"], _ = timed(
        lambda: [encrypted.add_cipherblock(encrypted) for _ in range(rounds)], ADD_COUNT, repeat
    )
    rows["add plain"], _ = timed(
        lambda: [encrypted.add_plaintext_f64(d) for _ in range(rounds)], ADD_COUNT, repeat
    )
    return rows


def naive_products(encrypted: Sequence[EncryptedNumber], column: np.ndarray) -> list[int]:
    """One gmpy2 powmod per sample, with one inverse per negative coefficient."""
    public_key = encrypted[0].public_key
    n, nsquare = public_key.n, mpz(public_key.nsquare)
    products = []
    for e, m in zip(encrypted, encode(public_key, column), strict=True):
        c = mpz(e.ciphertext(be_secure=False))
        if m > public_key.max_int:
            c, m = gmpy2.invert(c, nsquare), n - m
        products.append(int(gmpy2.powmod(c, m, nsquare)))
    return products


def measure_ours(keys: KeyPair, inputs: Inputs, repeat: int) -> tuple[dict[str, Rate], Packed]:
    encryptor, decryptor = Encryptor(keys.public_key, keys.hs), Decryptor(keys.private_key)
    d, X = inputs.d, inputs.X
    rows: dict[str, Rate] = {}
    rows["encrypt"], _ = timed(lambda: encryptor.encrypt(d[:FAST_COUNT]), FAST_COUNT, repeat)
    encrypted = encryptor.encrypt(d)
    check(close(decryptor.decrypt(encrypted[:DECRYPT_COUNT]), d[:DECRYPT_COUNT]), "decryption")
    subset, column = encrypted[:SUBSET], X[:SUBSET, 0]
    rate, products = timed(lambda: naive_products(subset, column), SUBSET, repeat)
    as_numbers = [EncryptedNumber(keys.public_key, p, PRODUCT_EXPONENT) for p in products]
    check(close(decryptor.decrypt(as_numbers), d[:SUBSET] * column), "per-element products")
    rows["product"] = rate
    for operation, samples in (("X^T d", SUBSET), ("X^T d, large", SAMPLES)):
        rate, sums = timed(
            lambda s=samples: weighted_sums(encrypted[:s], X[:s]), samples * FEATURES, repeat
        )
        check(close(decryptor.decrypt(sums), X[:samples].T @ d[:samples]), "weighted_sums")
        rows[operation] = rate
    gradient = sums  # over every sample
    left, right = encrypted[:ADD_COUNT], encrypted[ADD_COUNT : 2 * ADD_COUNT]
    rows["add"], _ = timed(lambda: add_encrypted(left, right), ADD_COUNT, repeat)
    rows["add plain"], _ = timed(lambda: add_plain(left, d[:ADD_COUNT]), ADD_COUNT, repeat)
    packed = measure_packed(keys, encryptor, decryptor, inputs, gradient, repeat)
    rows["decrypt values"] = packed.decrypt
    rows["decrypt ciphertexts"] = Rate(packed.ciphertexts, packed.decrypt.cpu, packed.decrypt.wall)
    return rows, packed


def measure_packed(
    keys: KeyPair,
    encryptor: Encryptor,
    decryptor: Decryptor,
    inputs: Inputs,
    gradient: list[EncryptedNumber],
    repeat: int,
) -> Packed:
    """The gradient X^T [[d]] over every sample, repeated to fill the groups, masked, packed,
    decrypted by the arbiter, unpacked and unmasked."""
    value_bits = inputs.value_bits
    slot_bits = value_bits + MASK_BITS + 1
    per = slots(keys.public_key, slot_bits)
    count = per * PACKED_GROUPS
    values = (gradient * (count // len(gradient) + 1))[:count]
    expected = np.resize(inputs.X.T @ inputs.d, count)
    mask, (masked, masks) = timed(lambda: encryptor.mask(values, value_bits), count, repeat)
    check(masks.slot_bits == slot_bits, "the slot width")
    pack_rate, packed = timed(lambda: pack(masked, slot_bits), count, repeat)

    def arbiter_and_party() -> np.ndarray:
        plaintexts = decryptor.decrypt_raw(packed)
        return masks.remove(unpack(keys.public_key, plaintexts, slot_bits, count))

    rate, unmasked = timed(arbiter_and_party, count, repeat)
    check(close(unmasked, expected), "packed decryption")
    return Packed(count, slot_bits, per, rate, len(packed), mask, pack_rate)


def base_list_decrypt(private_key: PaillierPrivateKey, ciphertexts: list[mpz]) -> list[int]:
    """CRT decryption of a vector with ``gmpy2.powmod_base_list`` for each prime."""
    halves = []
    for prime, square, h in (
        (mpz(private_key.p), mpz(private_key.psquare), mpz(private_key.hp)),
        (mpz(private_key.q), mpz(private_key.qsquare), mpz(private_key.hq)),
    ):
        powers = gmpy2.powmod_base_list([c % square for c in ciphertexts], prime - 1, square)
        halves.append([(x - 1) // prime * h % prime for x in powers])
    p, q, inverse = mpz(private_key.p), mpz(private_key.q), mpz(private_key.p_inverse)
    return [int(mp + (mq - mp) * inverse % q * p) for mp, mq in zip(*halves, strict=True)]


def measure_variants(
    keys: KeyPair, inputs: Inputs, packed: Packed, phe_rate: Rate, repeat: int
) -> dict[str, tuple[Rate, int]]:
    encryptor, decryptor = Encryptor(keys.public_key, keys.hs), Decryptor(keys.private_key)
    d = inputs.d[:DECRYPT_COUNT]
    encrypted = encryptor.encrypt(d)
    loop, plain = timed(lambda: decryptor.decrypt(encrypted), DECRYPT_COUNT, repeat)
    check(close(plain, d), "decryption")
    raw = [mpz(e.ciphertext(be_secure=False)) for e in encrypted]
    base_list, plaintexts = timed(
        lambda: base_list_decrypt(keys.private_key, raw), DECRYPT_COUNT, repeat
    )
    check(plaintexts == decryptor.decrypt_raw(encrypted), "powmod_base_list decryption")
    return {
        "phe: private_key.decrypt": (phe_rate, DECRYPT_COUNT),
        "ours: Decryptor.decrypt (gmpy2 CRT, a loop)": (loop, DECRYPT_COUNT),
        "gmpy2 CRT with powmod_base_list": (base_list, DECRYPT_COUNT),
        f"ours packed: {packed.per_ciphertext} x {packed.slot_bits}-bit slots, unpacked, "
        "unmasked": (packed.decrypt, packed.ciphertexts),
    }


def run_benchmark(repeat: int, log: Callable[[str], None]) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    inputs = Inputs.make()
    log(f"a {BITS}-bit key (phe) and its DJN base")
    keys = generate_keypair(BITS)
    log("phe")
    rows = {"phe": measure_phe(keys, inputs, repeat)}
    notes = {}
    rust = load_rust()
    if isinstance(rust, str):
        notes["rust-paillier"] = rust
    else:
        log("rust-paillier")
        try:
            rows["rust-paillier"] = measure_rust(rust, inputs, repeat)
        except Exception as exc:  # another version's API or results: say so in its column
            notes["rust-paillier"] = f"unusable: {exc}"
    log("ours")
    rows["ours"], packed = measure_ours(keys, inputs, repeat)
    log("decryption variants")
    variants = measure_variants(keys, inputs, packed, rows["phe"]["decrypt values"], repeat)
    results = Results(rows, notes, variants, packed, repeat)
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def _cell(results: Results, library: str, operation: str) -> str:
    if library in results.notes:
        return escape(results.notes[library])
    rate = results.rate(library, operation)
    return "-" if rate is None else f"{rate:,.0f}"


def print_tables(results: Results) -> None:
    console = Console(width=max(Console().width, 120))
    table = Table(
        title=f"Paillier at {BITS} bits: operations per CPU-second, best of {results.repeat}",
        caption=escape(
            "rust-paillier: FATE's Rust library (rust_paillier, its non-parallel module; "
            "pip install '.[bench]') with its own key and encoding"
        ),
    )
    for column in ("operation", *LIBRARIES, "ours / phe", "target"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    targets = {"encrypt": f">= {ENCRYPT_TARGET:,}", "decrypt values": f">= {DECRYPT_TARGET:,}"}
    for operation, label in OPERATIONS.items():
        ours, phe = results.rate("ours", operation), results.rate("phe", operation)
        ratio = f"{ours / phe:.1f}x" if ours and phe else "-"
        cells = [_cell(results, library, operation) for library in LIBRARIES]
        table.add_row(escape(label), *cells, ratio, targets.get(operation, "-"))
    console.print(table)
    table = Table(title="Decryption at the arbiter, per CPU-second")
    for column in ("variant", "values / s", "ciphertexts / s", "vs phe (values)"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    phe = results.variants["phe: private_key.decrypt"][0].per_second
    for variant, (rate, ciphertexts) in results.variants.items():
        table.add_row(
            variant, f"{rate.per_second:,.0f}", f"{ciphertexts / max(rate.cpu, 1e-9):,.0f}",
            f"{rate.per_second / phe:.2f}x",
        )  # fmt: skip
    console.print(table)
    packed = results.packed
    console.print(
        f"packing: {packed.values} gradient values of {packed.slot_bits - MASK_BITS - 1} bits "
        f"(the bound of X^T d over {SAMPLES:,} samples) masked with {MASK_BITS} more into "
        f"{packed.ciphertexts} ciphertexts; the party's side: mask "
        f"{packed.mask.per_second:,.0f} values/s, pack {packed.pack.per_second:,.0f} values/s"
    )
    naive = results.rate("ours", "product") or 1.0
    console.print(
        escape(
            f"weighted_sums against our one powmod per product: "
            f"{(results.rate('ours', 'X^T d') or 0) / naive:.1f}x at {SUBSET} samples, "
            f"{(results.rate('ours', 'X^T d, large') or 0) / naive:.1f}x at {SAMPLES:,}"
        )
    )
    print_verdicts(console, results.targets())
    console.print(run_line(results.seconds, results.load))


def print_json(results: Results) -> None:
    packed = results.packed
    click.echo(
        json.dumps(
            {
                "bits": BITS,
                "perCpuSecond": {
                    library: {op: rate.per_second for op, rate in rows.items()}
                    for library, rows in results.rows.items()
                },
                "notes": results.notes,
                "decryption": {
                    variant: {
                        "valuesPerSecond": rate.per_second,
                        "ciphertextsPerSecond": ciphertexts / max(rate.cpu, 1e-9),
                    }
                    for variant, (rate, ciphertexts) in results.variants.items()
                },
                "packing": {
                    "slotBits": packed.slot_bits,
                    "valuesPerCiphertext": packed.per_ciphertext,
                    "maskPerSecond": packed.mask.per_second,
                    "packPerSecond": packed.pack.per_second,
                },
                "targets": targets_json(results.targets()),
                "loadAverage": load_json(results.load),
            },
            indent=2,
        )
    )


@click.command()
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(repeat: int, as_json: bool) -> None:
    """Measure Paillier at 2048 bits per core: phe, rust-paillier and ours."""
    log = progress_log(quiet=as_json)
    finish(lambda: run_benchmark(repeat, log), as_json, print_json, print_tables)


if __name__ == "__main__":
    main()
