"""Federated learning core: logistic regression, update checks, FedAvg and metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.crypto.canonical import jcs
from consortium.errors import ConsortiumError
from consortium.fl.aggregation import AggregationError, fedavg
from consortium.fl.metrics import Metrics, accuracy, binary_metrics, log_loss, roc_auc
from consortium.fl.model import (
    BIAS,
    MAX_ABS_VALUE,
    WEIGHTS,
    InvalidUpdate,
    Model,
    init_model,
    local_train,
    predict_proba,
    validate_update,
)
from consortium.scenarios.aml_data import generate_banks, generate_validation

ADDRESSES = [
    "0x9e0Fc3A2A1dD9E4c5bF5D1f1bD2Aa1a8C1e7b001",
    "0x1aB1c2D3e4F5a6B7c8D9e0F1a2B3c4D5e6F7a8B9",
    "0xC0ffee254729296a45a3885639AC7E10F9d54979",
    "0x0000000000000000000000000000000000000abc",
]


def random_model(rng: np.random.Generator, num_features: int = 3) -> Model:
    return {
        WEIGHTS: rng.normal(size=num_features) * 10.0 ** rng.integers(-8, 8, size=num_features),
        BIAS: rng.normal(size=1),
    }


def small_problem(seed: int = 0, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(X @ [1.5, -1.0, 0.5] - 0.5)))).astype(np.int8)
    return X, y


# --- model ------------------------------------------------------------------------------------


def test_init_model_is_seeded_float64_and_self_consistent() -> None:
    model = init_model(8, seed=3)
    assert model[WEIGHTS].shape == (8,) and model[BIAS].shape == (1,)
    assert all(tensor.dtype == np.dtype("<f8") for tensor in model.values())
    assert model[WEIGHTS].tobytes() == init_model(8, seed=3)[WEIGHTS].tobytes()
    assert model[WEIGHTS].tobytes() != init_model(8, seed=4)[WEIGHTS].tobytes()
    validate_update(model, model)


def test_predict_proba_is_a_probability_even_for_extreme_inputs() -> None:
    model = {WEIGHTS: np.array([1.0, -1.0]), BIAS: np.array([0.0])}
    proba = predict_proba(model, [[1000.0, 0.0], [-1000.0, 0.0], [0.0, 0.0]])
    assert proba.tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="expected"):
        predict_proba(model, [[1.0, 2.0, 3.0]])


def test_local_train_is_deterministic_given_the_seed() -> None:
    X, y = small_problem()
    model = init_model(3, seed=0)
    first, n_first, loss_first = local_train(model, X, y, seed=7, epochs=2)
    second, n_second, loss_second = local_train(model, X, y, seed=7, epochs=2)
    other, _, _ = local_train(model, X, y, seed=8, epochs=2)
    for name in model:
        assert first[name].tobytes() == second[name].tobytes()
    assert (n_first, loss_first) == (n_second, loss_second) == (400, loss_first)
    assert first[WEIGHTS].tobytes() != other[WEIGHTS].tobytes()


def test_local_train_learns_and_leaves_its_input_alone() -> None:
    X, y = small_problem()
    model = init_model(3, seed=0)
    before = {name: tensor.copy() for name, tensor in model.items()}
    trained, _, train_loss = local_train(model, X, y, seed=1, epochs=5)
    assert all(np.array_equal(model[name], before[name]) for name in model)
    validate_update(trained, model)
    assert train_loss == log_loss(y, predict_proba(trained, X))
    assert train_loss < log_loss(y, predict_proba(model, X)) - 0.1
    assert np.sign(trained[WEIGHTS]).tolist() == [1.0, -1.0, 1.0]


@pytest.mark.parametrize(
    ("y", "kwargs", "message"),
    [
        (np.full(400, 2), {}, "0 or 1"),
        (np.zeros(399), {}, "expected"),
        (None, {"epochs": 0}, "epochs"),
        (None, {"batch_size": 0}, "batch_size"),
        (None, {"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_local_train_refuses_bad_input(y, kwargs: dict, message: str) -> None:
    X, labels = small_problem()
    with pytest.raises(ValueError, match=message):
        local_train(init_model(3, 0), X, labels if y is None else y, seed=0, **kwargs)


REFERENCE = {WEIGHTS: np.zeros(3), BIAS: np.zeros(1)}


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({WEIGHTS: np.zeros(3)}, r"missing \['bias'\], extra \[\]"),
        ({**REFERENCE, "extra": np.zeros(1)}, r"missing \[\], extra \['extra'\]"),
        ({WEIGHTS: np.zeros(4), BIAS: np.zeros(1)}, r"'weights' has shape \(4,\), expected \(3,\)"),
        ({WEIGHTS: np.zeros((3, 1)), BIAS: np.zeros(1)}, r"'weights' has shape \(3, 1\)"),
        ({WEIGHTS: np.zeros(3, np.float32), BIAS: np.zeros(1)}, "dtype <f4, expected <f8"),
        ({WEIGHTS: np.zeros(3, ">f8"), BIAS: np.zeros(1)}, "dtype >f8, expected <f8"),
        ({WEIGHTS: np.zeros(3, np.int64), BIAS: np.zeros(1)}, "dtype <i8"),
        ({WEIGHTS: [0.0, 0.0, 0.0], BIAS: np.zeros(1)}, "'weights' is a list, not an array"),
        ({WEIGHTS: np.array([0.0, np.nan, 0.0]), BIAS: np.zeros(1)}, "'weights' has 1 non-finite"),
        ({WEIGHTS: np.zeros(3), BIAS: np.array([np.inf])}, "'bias' has 1 non-finite"),
        ({WEIGHTS: np.array([-np.inf, np.nan, 1.0]), BIAS: np.zeros(1)}, "2 non-finite"),
        ({WEIGHTS: np.array([1e308, -2e150, 1.0]), BIAS: np.zeros(1)}, r"2 value\(s\) beyond"),
    ],
)
def test_validate_update_rejects_each_bad_case(update: dict, message: str) -> None:
    with pytest.raises(InvalidUpdate, match=message) as caught:
        validate_update(update, REFERENCE)
    assert isinstance(caught.value, ConsortiumError)


# --- aggregation ------------------------------------------------------------------------------


def test_fedavg_weights_by_examples_as_computed_by_hand() -> None:
    updates = [
        (ADDRESSES[0], {WEIGHTS: np.array([1.0, 2.0]), BIAS: np.array([4.0])}, 1),
        (ADDRESSES[1], {WEIGHTS: np.array([3.0, 4.0]), BIAS: np.array([0.0])}, 3),
        (ADDRESSES[2], {WEIGHTS: np.array([100.0, -50.0]), BIAS: np.array([7.0])}, 0),
    ]
    averaged = fedavg(updates)
    # (1*1 + 3*3) / 4, (1*2 + 3*4) / 4, (1*4 + 3*0) / 4; the zero-example update weighs nothing.
    assert averaged[WEIGHTS].tolist() == [2.5, 3.5]
    assert averaged[BIAS].tolist() == [1.0]
    assert all(tensor.dtype == np.dtype("<f8") for tensor in averaged.values())


def test_fedavg_of_updates_at_the_bound_stays_finite() -> None:
    """What the magnitude bound of validate_update buys: no set of valid updates overflows."""
    updates = [
        (f"0x{i:040x}", {WEIGHTS: np.full(2, MAX_ABS_VALUE), BIAS: np.array([-MAX_ABS_VALUE])},
         2**64 - 1)
        for i in range(100)
    ]  # fmt: skip
    for _, update, _ in updates:
        validate_update(update, {WEIGHTS: np.zeros(2), BIAS: np.zeros(1)})
    averaged = fedavg(updates)
    assert np.isfinite(averaged[WEIGHTS]).all() and np.isfinite(averaged[BIAS]).all()
    assert averaged[BIAS][0] == pytest.approx(-MAX_ABS_VALUE)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.lists(st.integers(1, 10**6), min_size=2, max_size=4),
    data=st.data(),
)
def test_fedavg_is_bit_identical_under_any_input_order(seed: int, counts: list[int], data) -> None:
    rng = np.random.default_rng(seed)
    updates = [
        (address, random_model(rng), count)
        for address, count in zip(ADDRESSES, counts, strict=False)
    ]
    baseline = fedavg(updates)
    shuffled = data.draw(st.permutations(updates))
    averaged = fedavg(shuffled)
    assert {n: t.tobytes() for n, t in averaged.items()} == {
        n: t.tobytes() for n, t in baseline.items()
    }


def in_given_order(updates: list[tuple[str, Model, int]]) -> bytes:
    """The weighted mean summed in the order given, as a naive implementation would."""
    accumulator = np.zeros(3)
    for _, model, num_examples in updates:
        accumulator += num_examples * model[WEIGHTS]
    return (accumulator / sum(n for _, _, n in updates)).tobytes()


def test_fedavg_order_is_by_lowercase_address() -> None:
    rng = np.random.default_rng(4)
    updates = [(address, random_model(rng), 7 + i) for i, address in enumerate(ADDRESSES)]
    orders = list(itertools.permutations(updates))
    # These magnitudes make the summation order visible in the last bits of the result ...
    assert len({in_given_order(list(order)) for order in orders}) > 1
    # ... yet fedavg gives one result, the sum in lowercase-address order.
    results = {fedavg(list(order))[WEIGHTS].tobytes() for order in orders}
    by_address = sorted(updates, key=lambda update: update[0].lower())
    assert results == {in_given_order(by_address)}


@pytest.mark.parametrize(
    ("updates", "error", "message"),
    [
        ([], AggregationError, "no updates"),
        ([(ADDRESSES[0], REFERENCE, 0), (ADDRESSES[1], REFERENCE, 0)], AggregationError, "zero"),
        ([(ADDRESSES[0], REFERENCE, -1)], AggregationError, "negative"),
        ([(ADDRESSES[0], REFERENCE, True)], AggregationError, "integer"),
        ([(ADDRESSES[0], REFERENCE, 2.0)], AggregationError, "integer"),
        (
            [(ADDRESSES[2], REFERENCE, 1), (ADDRESSES[2].lower(), REFERENCE, 1)],
            AggregationError,
            "more than one update from 0xc0ffee",
        ),
        (
            [(ADDRESSES[0], REFERENCE, 1), (ADDRESSES[1], {WEIGHTS: np.zeros(2)}, 1)],
            InvalidUpdate,
            "missing",
        ),
    ],
)
def test_fedavg_refuses_what_it_cannot_average(updates, error, message: str) -> None:
    with pytest.raises(error, match=message):
        fedavg(updates)


# --- metrics ----------------------------------------------------------------------------------


def brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 1), st.integers(-3, 3) | st.floats(-5, 5)),
        min_size=2,
        max_size=60,
    ).filter(lambda rows: len({label for label, _ in rows}) == 2)
)
def test_roc_auc_matches_the_pairwise_definition_with_ties(pairs) -> None:
    labels = np.array([label for label, _ in pairs])
    scores = np.array([score for _, score in pairs], dtype=np.float64)
    assert roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_roc_auc_extremes_and_undefined_case() -> None:
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc(labels, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.1, 0.2])


def test_log_loss_and_accuracy() -> None:
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2.0))
    assert np.isfinite(log_loss([1, 0], [0.0, 1.0]))  # clipped, not infinite
    assert accuracy([1, 0, 1, 1], [0.9, 0.1, 0.4, 0.5]) == 0.5  # 0.5 itself is negative
    with pytest.raises(ValueError, match="finite"):
        log_loss([1], [np.nan])


def test_metrics_json_is_canonical_and_keeps_full_precision() -> None:
    metrics = binary_metrics([0, 1, 1, 0, 1], [0.1, 0.7, 0.3, 0.2, 0.9])
    document = metrics.to_json()
    assert document["roc_auc"] == roc_auc([0, 1, 1, 0, 1], [0.1, 0.7, 0.3, 0.2, 0.9])
    assert float(jcs(document).split(b'"log_loss":')[1].split(b",")[0]) == metrics.log_loss
    one_class = binary_metrics([0, 0], [0.2, 0.4])
    assert one_class == Metrics(
        num_examples=2, log_loss=one_class.log_loss, roc_auc=None, accuracy=1.0
    )
    assert b'"roc_auc":null' in jcs(one_class.to_json())


# --- end to end -------------------------------------------------------------------------------


def test_four_banks_ten_rounds_of_fedavg_learn_the_shared_risk() -> None:
    banks = generate_banks(4, seed=7)
    validation = generate_validation(seed=7)
    model = init_model(validation.X.shape[1], seed=7)
    history = [binary_metrics(validation.y, predict_proba(model, validation.X))]
    for round_number in range(1, 11):
        updates = []
        for index, (address, bank) in enumerate(zip(ADDRESSES, banks, strict=True)):
            local, num_examples, _ = local_train(
                model, bank.X, bank.y, seed=1000 * round_number + index
            )
            validate_update(local, model)
            updates.append((address, local, num_examples))
        model = fedavg(updates)
        history.append(binary_metrics(validation.y, predict_proba(model, validation.X)))
    final = history[-1]
    assert final.roc_auc is not None and history[0].roc_auc is not None
    assert final.roc_auc > 0.8
    assert final.roc_auc > history[0].roc_auc
    assert final.log_loss < history[1].log_loss < history[0].log_loss
