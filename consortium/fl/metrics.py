"""Evaluation metrics of a binary risk model: log loss, ROC AUC and accuracy.

Implemented here in a few lines of numpy rather than taken from scikit-learn so that an auditor
re-deriving a round's metrics digest needs nothing beyond numpy, and so that the exact
definitions (tie handling, clipping, threshold) are written down next to the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Probabilities are clipped to [EPS, 1 - EPS] in the log loss: a saturated float64 sigmoid
# returns exactly 0 or 1, and an infinite loss could not be written as RFC 8785 JSON.
EPS = 1e-15
THRESHOLD = 0.5


@dataclass(frozen=True)
class Metrics:
    """A model's metrics on one labelled set; ``roc_auc`` is None when the set has only one
    class, for which the AUC is undefined.
    """

    num_examples: int
    log_loss: float
    roc_auc: float | None
    accuracy: float

    def to_json(self) -> dict[str, int | float | None]:
        """The metrics as a JSON object whose RFC 8785 digest can go on chain.

        Floats are kept at full precision (JCS writes the shortest representation that
        round-trips), and every one is finite by construction.
        """
        return {
            "num_examples": self.num_examples,
            "log_loss": self.log_loss,
            "roc_auc": self.roc_auc,
            "accuracy": self.accuracy,
        }


def binary_metrics(y_true: ArrayLike, proba: ArrayLike) -> Metrics:
    """All metrics of predicted probabilities ``proba`` against 0/1 labels ``y_true``."""
    labels, scores = _paired(y_true, proba)
    both_classes = 0 < labels.sum() < len(labels)
    return Metrics(
        num_examples=len(labels),
        log_loss=log_loss(labels, scores),
        roc_auc=roc_auc(labels, scores) if both_classes else None,
        accuracy=accuracy(labels, scores),
    )


def binary_labels(y_true: ArrayLike) -> NDArray[np.float64]:
    """Labels as a float64 vector of 0.0 and 1.0; ValueError for anything else."""
    labels = np.asarray(y_true)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty vector, got shape {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return labels.astype(np.float64)


def log_loss(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Mean binary cross-entropy, with probabilities clipped to ``[EPS, 1 - EPS]``."""
    labels, scores = _paired(y_true, proba)
    clipped = np.clip(scores, EPS, 1.0 - EPS)
    return float(-np.mean(labels * np.log(clipped) + (1.0 - labels) * np.log1p(-clipped)))


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Exact area under the ROC curve: the probability that a random positive scores above a
    random negative, ties counting one half (the Mann-Whitney U statistic, via mid-ranks).
    """
    labels, values = _paired(y_true, scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC AUC needs both classes in y_true")
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    # Tied scores share the mean of the ranks they occupy: rank k+1 .. k+count -> k + (count+1)/2.
    ranks_before = np.cumsum(counts) - counts
    mid_ranks = ranks_before + (counts + 1) / 2.0
    positive_rank_sum = float(mid_ranks[group][labels == 1].sum())
    return (positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def accuracy(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Share of rows whose prediction (positive when ``proba > THRESHOLD``) matches the label."""
    labels, scores = _paired(y_true, proba)
    return float(np.mean((scores > THRESHOLD) == (labels == 1)))


def _paired(
    y_true: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Labels and finite float64 scores of the same length."""
    labels = binary_labels(y_true)
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != labels.shape:
        raise ValueError(f"scores have shape {values.shape}, labels {labels.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    return labels, values
