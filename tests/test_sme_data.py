"""SME-credit data for the vertical scenario: the generator, the party CSV files, per-party
standardisation and the plaintext baselines (exact and Taylor-approximated descent)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from consortium.fl.block_lr import (
    LOGISTIC,
    TAYLOR,
    BlockModel,
    DescentConfig,
    batch_order,
    bias_gradient,
    block_gradient,
    fit,
    signed_labels,
    taylor_loss,
    taylor_residual,
)
from consortium.fl.metrics import roc_auc
from consortium.fl.party_csv import DataFileError, load_party_csv, write_party_csv
from consortium.fl.party_table import PartyTable, shared_positions
from consortium.fl.standardize import Standardizer
from consortium.scenarios.sme_baselines import sme_baselines, vertical_split
from consortium.scenarios.sme_data import (
    BANK_FEATURES,
    CREDIT_HISTORY,
    PLATFORM_FEATURES,
    THIN_FILE_MONTHS,
    SmeData,
    generate_sme,
)


def same_table(a: PartyTable, b: PartyTable) -> bool:
    labels = (None, None) if a.y is None or b.y is None else (a.y.tobytes(), b.y.tobytes())
    return (
        (a.name, a.ids, a.feature_names, a.X.tobytes())
        == (b.name, b.ids, b.feature_names, b.X.tobytes())
        and (a.y is None) == (b.y is None)
        and labels[0] == labels[1]
    )


def same_data(a: SmeData, b: SmeData) -> bool:
    return (
        same_table(a.bank, b.bank)
        and same_table(a.platform, b.platform)
        and a.evaluation_ids == b.evaluation_ids
    )


# -- the generator ------------------------------------------------------------------------------


def test_the_generator_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    assert same_data(generate_sme(3, businesses=500), generate_sme(3, businesses=500))
    first, second = generate_sme(3, businesses=500), generate_sme(4, businesses=500)
    assert first.bank.ids != second.bank.ids
    assert first.bank.X.tobytes() != second.bank.X.tobytes()
    assert first.platform.X.tobytes() != second.platform.X.tobytes()


def test_the_sides_overlap_as_asked_and_list_their_businesses_in_their_own_order() -> None:
    data = generate_sme(5, businesses=2000, overlap=0.65, platform_only=700)
    bank, platform = set(data.bank.ids), set(data.platform.ids)
    assert len(data.bank.ids) == 2000
    assert len(bank & platform) == 1300
    assert len(platform - bank) == 700
    assert all(re.fullmatch(r"SME-\d{6}", i) for i in data.bank.ids + data.platform.ids)
    shared = sorted(bank & platform)
    assert [i for i in data.bank.ids if i in platform] != shared  # alignment needs the ids
    assert data.evaluation_ids <= bank
    assert 0.2 < len(data.evaluation_ids) / 2000 < 0.3


def test_columns_have_realistic_names_first_then_generic_ones_up_to_the_counts() -> None:
    data = generate_sme(1, businesses=300, bank_features=14, platform_features=12)
    bank_names = (CREDIT_HISTORY, *(spec.name for spec in BANK_FEATURES))
    assert data.bank.feature_names == (*bank_names, "bank_f11", "bank_f12", "bank_f13", "bank_f14")
    platform_names = tuple(spec.name for spec in PLATFORM_FEATURES)
    assert data.platform.feature_names == (*platform_names, "platform_f11", "platform_f12")
    assert data.bank.X.shape == (300, 14) and data.platform.X.shape[1] == 12
    assert data.platform.y is None and data.bank.labels.dtype == np.int8
    fewer = generate_sme(1, businesses=300, bank_features=3, platform_features=40)
    assert fewer.bank.feature_names == bank_names[:3]
    assert fewer.bank.X.tobytes() == np.ascontiguousarray(data.bank.X[:, :3]).tobytes()
    assert fewer.platform.feature_names[-1] == "platform_f40"


def test_default_rate_and_thin_files_are_in_the_intended_ranges() -> None:
    data = generate_sme(2, businesses=5000)
    assert 0.05 < data.bank.labels.mean() < 0.15
    months = data.bank.X[:, data.bank.feature_names.index(CREDIT_HISTORY)]
    thin = months < THIN_FILE_MONTHS
    assert 0.25 < thin.mean() < 0.35
    assert data.bank.labels[thin].mean() > data.bank.labels[~thin].mean()


def test_the_platform_carries_the_signal_for_thin_file_businesses() -> None:
    data = generate_sme(7)
    split = vertical_split(data)
    raw_months = dict(zip(data.bank.ids, data.bank.X[:, 0].tolist(), strict=True))
    thin = np.array([raw_months[i] < THIN_FILE_MONTHS for i in split.bank_evaluation.ids])
    labels = split.bank_evaluation.labels

    def thin_file_auc(train: PartyTable, evaluation: PartyTable) -> float:
        model = fit([train.X], split.bank_train.labels, LOGISTIC).model
        return roc_auc(labels[thin], model.scores([evaluation.X])[thin])

    platform_auc = thin_file_auc(split.platform_train, split.platform_evaluation)
    bank_auc = thin_file_auc(split.bank_train, split.bank_evaluation)
    assert platform_auc > 0.7
    assert platform_auc > bank_auc + 0.08


# -- party tables and standardisation -----------------------------------------------------------


def small_table(y: list[int] | None = None) -> PartyTable:
    X = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    labels = None if y is None else np.array(y, dtype=np.int8)
    return PartyTable("t", ("c", "a", "b"), ("x", "const"), X, labels)


def test_aligned_and_partition_take_rows_by_position_and_by_id() -> None:
    table = small_table([0, 1, 1])
    aligned = table.aligned([2, 0])
    assert aligned.ids == ("b", "c") and aligned.X[:, 0].tolist() == [4.0, 1.0]
    assert aligned.labels.tolist() == [1, 0]
    rest, chosen = table.partition({"a"})
    assert rest.ids == ("c", "b") and chosen.ids == ("a",) and chosen.labels.tolist() == [1]
    with pytest.raises(ValueError):
        table.X[0, 0] = 9.0


def test_shared_positions_pair_the_common_ids_in_ascending_order() -> None:
    first, second = shared_positions(["d", "a", "c", "x"], ["c", "y", "a", "d"])
    assert first.tolist() == [1, 2, 0] and second.tolist() == [2, 0, 3]


def test_the_standardizer_uses_the_fitting_rows_and_zeroes_constant_columns() -> None:
    table = small_table()
    scaler = Standardizer.fit(table.X[:2])
    assert scaler.mean.tolist() == [1.5, 5.0] and scaler.scale.tolist() == [0.5, 1.0]
    assert scaler.apply(table).X.tolist() == [[-1.0, 0.0], [1.0, 0.0], [5.0, 0.0]]
    almost_constant = np.full((5, 1), 0.1) + np.array([[0.0], [1e-17], [0.0], [0.0], [0.0]])
    assert np.all(np.abs(Standardizer.fit(almost_constant).transform(almost_constant)) < 1e-15)


# -- CSV files ----------------------------------------------------------------------------------


def test_a_written_table_loads_back_equal(tmp_path: Path) -> None:
    data = generate_sme(9, businesses=200, platform_only=50)
    write_party_csv(
        data.bank, tmp_path / "bank.csv", id_column="business_id", label_column="default"
    )
    write_party_csv(data.platform, tmp_path / "platform.csv", id_column="business_id")
    bank = load_party_csv(tmp_path / "bank.csv", "business_id", "default")
    platform = load_party_csv(tmp_path / "platform.csv", "business_id")
    assert same_table(bank, data.bank)
    assert same_table(platform, data.platform)


def test_the_loader_takes_columns_in_any_order_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text('\ufeffa,label, id ,b\n1.5,1,x,"2"\n\n-3e2, 0 ,y,4\n', encoding="utf-8")
    table = load_party_csv(path, "id", "label", name="bank")
    assert (table.name, table.ids, table.feature_names) == ("bank", ("x", "y"), ("a", "b"))
    assert table.X.tolist() == [[1.5, 2.0], [-300.0, 4.0]] and table.labels.tolist() == [1, 0]


BAD_FILES = {
    "empty": ("", "is empty"),
    "blank": ("\n\n", "is empty"),
    "no_id": ("key,label,a\nx,1,2\n", "line 1: no column 'id' for the ids"),
    "no_label": ("id,default,a\nx,1,2\n", "line 1: no column 'label' for the labels"),
    "no_feature": ("id,label\nx,1\n", "line 1: no feature column besides the ids/labels"),
    "unnamed_column": ("id,label,a,\nx,1,2,3\n", "line 1 column 4: no name"),
    "twice_named": (
        "id,a,label,a\nx,1,1,2\n",
        "line 1 column 'a': the name appears twice (columns 2 and 4)",
    ),
    "header_only": ("id,label,a\n", "has a header but no rows"),
    "not_a_number": (
        "id,label,a,b\nx,1,2,3\ny,0,4,abc\n",
        "line 3 column 'b': 'abc' is not a number",
    ),
    "missing_value": ("id,label,a,b\nx,1,,3\n", "line 2 column 'a': no value"),
    "nan": ("id,label,a,b\nx,1,2,3\ny,0,NaN,4\n", "line 3 column 'a': nan is not a finite number"),
    "inf": ("id,label,a,b\nx,1,2,-inf\n", "line 2 column 'b': -inf is not a finite number"),
    "duplicate_id": (
        "id,label,a\nx,1,2\ny,0,3\nx,0,4\n",
        "line 4 column 'id': duplicate id 'x', first on line 2",
    ),
    "empty_id": ("id,label,a\n ,1,2\n", "line 2 column 'id': empty id"),
    "label_two": ("id,label,a\nx,2,1\n", "line 2 column 'label': label '2' is not 0 or 1"),
    "label_word": (
        "id,label,a\nx,1,1\ny,yes,1\n",
        "line 3 column 'label': label 'yes' is not 0 or 1",
    ),
    "short_row": (
        "id,label,a,b\nx,1,2,3\ny,0,4\n",
        "line 3: 3 fields where the header has 4; column 'b' is missing",
    ),
    "long_row": (
        "id,label,a,b\nx,1,2,3,4\n",
        "line 2: 5 fields where the header has 4; nothing belongs after column 'b'",
    ),
    "open_quote": ('id,label,a\nx,1,"2\n', "line 2: not CSV (unexpected end of data)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_bad_file_is_one_line_naming_file_line_and_column(tmp_path: Path, case: str) -> None:
    text, problem = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        load_party_csv(path, "id", "label")
    assert str(caught.value) == f"data file {path} {problem}"


def test_files_past_the_bounds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("id,a\n" + "".join(f"r{i},{i}\n" for i in range(10)), encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        load_party_csv(path, "id", max_rows=9)
    assert str(caught.value) == f"data file {path} has more than 9 rows, the limit"
    assert load_party_csv(path, "id", max_rows=10).num_rows == 10
    with pytest.raises(DataFileError, match="is larger than 20 bytes"):
        load_party_csv(path, "id", max_bytes=20)
    with pytest.raises(DataFileError, match="no such file"):
        load_party_csv(tmp_path / "absent.csv", "id")
    with pytest.raises(DataFileError, match="directory, not a regular file"):
        load_party_csv(tmp_path, "id")
    (tmp_path / "latin1.csv").write_bytes(b"id,a\nx,1\ny\xe9,2\n")
    with pytest.raises(DataFileError, match=r"latin1.csv line 3: not UTF-8 text$"):
        load_party_csv(tmp_path / "latin1.csv", "id")


# -- descent: the Taylor steps and the baselines ------------------------------------------------


def test_batch_order_is_a_seeded_partition_of_the_rows_per_epoch() -> None:
    batches = batch_order(seed=4, n=10, batch_size=4, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = batch_order(seed=4, n=10, batch_size=4, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(4, 10, 4, 1)))


def test_the_taylor_steps_are_the_formulas_of_hetero_lr() -> None:
    u = np.array([0.3, -1.2, 2.0])
    y01 = np.array([1, 0, 0])
    y = signed_labels(y01)
    assert y.tolist() == [1.0, -1.0, -1.0]
    d = taylor_residual(u, y)
    assert np.allclose(d, 0.25 * u - 0.5 * y)
    # The Taylor residual is the first-order expansion of the exact one, sigmoid(u) - y.
    assert np.allclose(d, 0.5 + 0.25 * u - y01)
    expected_loss = [
        math.log(2) - 0.5 * yi * ui + 0.125 * ui * ui for ui, yi in zip(u, y, strict=True)
    ]
    assert np.allclose(taylor_loss(u, y), expected_loss)
    X, w = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]), np.array([0.1, -0.2])
    assert np.allclose(block_gradient(X, d, w, 0.01), X.T @ d / 3 + 0.01 * w)
    assert bias_gradient(d) == pytest.approx(d.mean())


def test_taylor_descent_equals_a_direct_numpy_computation() -> None:
    rng = np.random.default_rng(0)
    guest, host = rng.normal(size=(7, 2)), rng.normal(size=(7, 3))
    y01 = np.array([1, 0, 0, 1, 0, 1, 0])
    config = DescentConfig(learning_rate=0.3, batch_size=3, l2=0.05, max_epochs=2, tolerance=0.0)
    result = fit([guest, host], y01, TAYLOR, config)

    X, y = np.hstack([guest, host]), 2.0 * y01 - 1.0
    w, b, losses = np.zeros(5), 0.0, []
    for epoch in range(2):
        order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0, epoch])))
        rows = order.permutation(7)
        total = 0.0
        for batch in (rows[0:3], rows[3:6], rows[6:7]):
            u = X[batch] @ w + b
            total += np.sum(np.log(2) - 0.5 * y[batch] * u + 0.125 * u**2)
            total += len(batch) * 0.5 * 0.05 * (w @ w)
            d = 0.25 * u - 0.5 * y[batch]
            w = w - 0.3 * (X[batch].T @ d / len(batch) + 0.05 * w)
            b = b - 0.3 * d.mean()
        losses.append(total / 7)

    assert result.epochs == 2 and not result.converged
    assert np.allclose(np.concatenate(result.model.weights), w, rtol=0, atol=1e-12)
    assert result.model.bias == pytest.approx(b, abs=1e-12)
    assert np.allclose(result.losses, losses, rtol=0, atol=1e-12)
    joined = fit([X], y01, TAYLOR, config).model
    assert np.allclose(joined.weights[0], w, rtol=0, atol=1e-12)


def test_descent_stops_once_the_loss_improves_by_less_than_the_tolerance() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y01 = (X[:, 0] + rng.normal(size=200) > 0).astype(np.int8)
    result = fit([X], y01, LOGISTIC, DescentConfig(batch_size=50, tolerance=1e-3, max_epochs=500))
    improvements = -np.diff(result.losses)
    assert result.converged and result.epochs < 500
    assert improvements[-1] < 1e-3 and np.all(improvements[:-1] >= 1e-3)
    capped = fit([X], y01, LOGISTIC, DescentConfig(batch_size=50, tolerance=0.0, max_epochs=3))
    assert capped.epochs == 3


def test_a_block_model_scores_by_summing_its_blocks() -> None:
    model = BlockModel(weights=(np.array([1.0, 2.0]), np.array([-1.0])), bias=0.5)
    assert model.scores([np.array([[1.0, 1.0]]), np.array([[2.0]])]).tolist() == [1.5]
    with pytest.raises(ValueError):
        model.scores([np.array([[1.0, 1.0]])])


def test_taylor_vertical_auc_is_within_0_005_of_centralized_and_both_beat_the_bank() -> None:
    figures = sme_baselines(generate_sme(1))
    assert abs(figures.taylor_vertical.auc - figures.centralized.auc) < 0.005
    assert figures.centralized.auc > figures.bank_only.auc + 0.04
    assert figures.taylor_vertical.auc > figures.bank_only.auc + 0.04
    assert figures.taylor_vertical.epochs < figures.centralized.epochs <= DescentConfig().max_epochs
