"""A party's labelled training table, as the federated-learning code sees it.

The round code (training, validation metrics) needs only the matrix, the labels and the column
names; where the rows come from (a generator, a CSV file) is a scenario's business, so the type
lives here and the scenarios build it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class LabeledTable:
    """``X`` is float64 ``[n, d]`` in the column order of ``feature_names``; ``y`` holds the
    binary labels (int8, 0 or 1)."""

    name: str
    X: NDArray[np.float64]
    y: NDArray[np.int8]
    feature_names: tuple[str, ...]
