"""The plaintext baselines of the vertical SME-credit job, on one held-out split.

Three models, trained with one :class:`~consortium.fl.block_lr.DescentConfig` on the same
rows, the training businesses both parties have, so that they differ only in what they see:

- **bank only**: the exact logistic loss on the bank's features;
- **centralized**: the exact logistic loss on the joined features, what pooling the data in
  the clear would give;
- **Taylor vertical**: the Taylor-approximated loss with the weights split into the bank's
  block and the platform's, the model the encrypted protocol computes (here in plaintext).

All three are scored on the held-out businesses both parties have, the only ones a vertical
model can score. Each party standardises its own columns on its own training rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from consortium.fl.block_lr import (
    DEFAULT_DESCENT,
    LOGISTIC,
    TAYLOR,
    DescentConfig,
    Objective,
    fit,
)
from consortium.fl.metrics import roc_auc
from consortium.fl.party_table import PartyTable, shared_positions
from consortium.fl.standardize import Standardizer
from consortium.scenarios.sme_data import SmeData


@dataclass(frozen=True, eq=False)
class VerticalSplit:
    """The shared businesses in the intersection's order, cut into training and evaluation
    rows on each side, each side standardised on its own training rows."""

    bank_train: PartyTable
    bank_evaluation: PartyTable
    platform_train: PartyTable
    platform_evaluation: PartyTable


@dataclass(frozen=True)
class BaselineRun:
    """One model's held-out AUC, the epochs it ran and its training wall time per epoch."""

    auc: float
    epochs: int
    seconds_per_epoch: float


@dataclass(frozen=True)
class BaselineFigures:
    bank_only: BaselineRun
    centralized: BaselineRun
    taylor_vertical: BaselineRun
    training_rows: int
    evaluation_rows: int


def vertical_split(data: SmeData) -> VerticalSplit:
    """Aligns the two tables on their shared ids and applies the held-out split to both."""
    bank_rows, platform_rows = shared_positions(data.bank.ids, data.platform.ids)
    bank = _standardized(data.bank.aligned(bank_rows).partition(data.evaluation_ids))
    platform = _standardized(data.platform.aligned(platform_rows).partition(data.evaluation_ids))
    return VerticalSplit(*bank, *platform)


def sme_baselines(data: SmeData, config: DescentConfig = DEFAULT_DESCENT) -> BaselineFigures:
    """Trains the three baselines on ``data``'s shared training rows, scores them held out."""
    split = vertical_split(data)
    train = (split.bank_train.X, split.platform_train.X)
    evaluation = (split.bank_evaluation.X, split.platform_evaluation.X)
    labels = (split.bank_train.labels, split.bank_evaluation.labels)
    return BaselineFigures(
        bank_only=baseline_run([train[0]], [evaluation[0]], labels, LOGISTIC, config),
        centralized=baseline_run(
            [np.hstack(train)], [np.hstack(evaluation)], labels, LOGISTIC, config
        ),
        taylor_vertical=baseline_run(list(train), list(evaluation), labels, TAYLOR, config),
        training_rows=split.bank_train.num_rows,
        evaluation_rows=split.bank_evaluation.num_rows,
    )


def baseline_run(
    train: list[NDArray[np.float64]],
    evaluation: list[NDArray[np.float64]],
    labels: tuple[NDArray[np.int8], NDArray[np.int8]],
    objective: Objective,
    config: DescentConfig,
) -> BaselineRun:
    """Fits on the training blocks, timed, and scores the evaluation blocks: one baseline,
    here and in the SME-credit run (:mod:`consortium.scenarios.sme_training`)."""
    start = time.perf_counter()
    result = fit(train, labels[0], objective, config)
    seconds = time.perf_counter() - start
    return BaselineRun(
        auc=roc_auc(labels[1], result.model.scores(evaluation)),
        epochs=result.epochs,
        seconds_per_epoch=seconds / result.epochs,
    )


def _standardized(parts: tuple[PartyTable, PartyTable]) -> tuple[PartyTable, PartyTable]:
    """``(train, evaluation)`` standardised with statistics of the training rows only."""
    scaler = Standardizer.fit(parts[0].X)
    return scaler.apply(parts[0]), scaler.apply(parts[1])
