"""Synthetic AML data: reproducible from the seed, non-IID across banks, stable schema."""

from __future__ import annotations

import numpy as np
import pytest

from consortium.crypto.canonical import json_digest
from consortium.scenarios.aml_data import (
    FEATURE_NAMES,
    FEATURES,
    MAX_BANK_SIZE,
    MIN_BANK_SIZE,
    BankData,
    generate_banks,
    generate_validation,
)

# Pinned so that a change to the registered schema (and so to its on-chain digest) is a
# deliberate decision, not an accident.
BANK_0_SCHEMA_DIGEST = "244aacd1722d003e29b199a87beebac1f4d794801f9e286756746ae1ab108c4b"


def same_bytes(a: BankData, b: BankData) -> bool:
    return (a.name, a.X.tobytes(), a.y.tobytes()) == (b.name, b.X.tobytes(), b.y.tobytes())


def test_same_seed_gives_byte_identical_data() -> None:
    first, second = generate_banks(3, seed=11), generate_banks(3, seed=11)
    assert all(same_bytes(a, b) for a, b in zip(first, second, strict=True))
    assert same_bytes(generate_validation(11), generate_validation(11))


def test_different_seeds_give_different_data() -> None:
    first, second = generate_banks(3, seed=11), generate_banks(3, seed=12)
    assert not any(same_bytes(a, b) for a, b in zip(first, second, strict=True))
    assert not same_bytes(generate_validation(11), generate_validation(12))


def test_a_bank_does_not_depend_on_how_many_banks_are_generated() -> None:
    few, many = generate_banks(2, seed=5), generate_banks(6, seed=5)
    assert all(same_bytes(a, b) for a, b in zip(few, many[:2], strict=True))


def test_overrides_change_only_what_they_override() -> None:
    drawn = generate_banks(2, seed=5)
    resized = generate_banks(2, seed=5, sizes=[len(drawn[0].y), 700])
    assert same_bytes(drawn[0], resized[0])
    assert len(resized[1].y) == 700
    rerated = generate_banks(2, seed=5, base_rates=[0.5, 0.5])
    assert all(a.X.tobytes() == b.X.tobytes() for a, b in zip(drawn, rerated, strict=True))
    assert all(b.y.mean() > 0.4 for b in rerated)


def test_arrays_have_the_declared_types_and_are_read_only() -> None:
    for bank in [*generate_banks(2, seed=1), generate_validation(1, size=300)]:
        assert bank.X.dtype == np.float64 and bank.X.flags.c_contiguous
        assert bank.X.shape == (len(bank.y), len(FEATURES))
        assert bank.y.dtype == np.int8 and set(np.unique(bank.y)) <= {0, 1}
        assert bank.feature_names == FEATURE_NAMES
        assert np.all(np.isfinite(bank.X))
        with pytest.raises(ValueError):
            bank.X[0, 0] = 1.0
        with pytest.raises(ValueError):
            bank.y[0] = 1
    assert len(generate_validation(1, size=300).y) == 300


@pytest.mark.parametrize("seed", range(4))
def test_banks_differ_in_size_base_rate_and_feature_distribution(seed: int) -> None:
    banks = generate_banks(5, seed=seed)
    sizes = [len(bank.y) for bank in banks]
    assert len(set(sizes)) == len(banks)
    assert all(MIN_BANK_SIZE <= size <= MAX_BANK_SIZE for size in sizes)
    rates = [float(bank.y.mean()) for bank in banks]
    assert all(0.0 < rate < 0.12 for rate in rates)
    assert max(rates) > 1.5 * min(rates)
    means = np.array([bank.X.mean(axis=0) for bank in banks])
    # Sampling noise of a column mean is below 0.05 at these sizes; the shift is far larger.
    assert np.max(means.max(axis=0) - means.min(axis=0)) > 0.4


def test_requested_base_rates_are_met_in_expectation() -> None:
    banks = generate_banks(2, seed=3, sizes=[4000, 4000], base_rates=[0.01, 0.08])
    assert banks[0].y.mean() == pytest.approx(0.01, abs=0.006)
    assert banks[1].y.mean() == pytest.approx(0.08, abs=0.015)


def test_every_bank_follows_the_shared_risk_direction() -> None:
    coefficients = np.array([spec.risk_coefficient for spec in FEATURES])
    for bank in generate_banks(4, seed=2):
        risk = bank.X @ coefficients
        assert risk[bank.y == 1].mean() > risk[bank.y == 0].mean() + 0.5


def test_features_use_the_public_scaling() -> None:
    validation = generate_validation(9, size=20_000)
    np.testing.assert_allclose(validation.X.mean(axis=0), 0.0, atol=0.06)
    np.testing.assert_allclose(validation.X.std(axis=0), 1.0, atol=0.06)


def test_schema_is_json_stable_across_seeds_and_names_the_bank() -> None:
    bank_0 = generate_banks(2, seed=1)
    schema = bank_0[0].schema()
    assert json_digest(schema) == json_digest(generate_banks(1, seed=99)[0].schema())
    assert json_digest(schema).hex() == BANK_0_SCHEMA_DIGEST
    assert schema["dataset"] == "aml-transactions/bank-0"
    assert [f["name"] for f in schema["features"]] == list(FEATURE_NAMES)
    assert {f["dtype"] for f in schema["features"]} == {"float64"}
    assert bank_0[1].schema()["dataset"] == "aml-transactions/bank-1"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate_banks(0, seed=1), "num_banks"),
        (lambda: generate_banks(2, seed=-1), "seed"),
        (lambda: generate_banks(2, seed=1, sizes=[800]), "sizes has 1 entries"),
        (lambda: generate_banks(2, seed=1, base_rates=[0.1]), "base_rates has 1"),
        (lambda: generate_banks(1, seed=1, sizes=[0]), "size must be at least 1"),
        (lambda: generate_banks(1, seed=1, base_rates=[1.0]), "base rate"),
        (lambda: generate_validation(-3), "seed"),
    ],
)
def test_invalid_arguments_are_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
