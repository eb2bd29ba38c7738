"""Per-column standardisation that each party fits and applies to its own columns.

The vertical protocol never pools features, so no party can standardise the joined matrix;
each fits a :class:`Standardizer` on its own training rows and applies it locally. Column-wise
statistics do not mix columns, so this gives exactly what standardising the joined matrix
would, and the centralized baseline stays comparable with the federated model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from consortium.fl.party_table import PartyTable

# A column whose standard deviation is below this share of its magnitude is constant up to
# rounding: dividing by its float noise would turn a constant into +-1 garbage.
_CONSTANT_RELATIVE_STD = 1e-12


@dataclass(frozen=True, eq=False)
class Standardizer:
    """``(x - mean) / scale`` per column; ``scale`` is 1 for a (numerically) constant column,
    which therefore becomes all zeros and cannot disturb the model."""

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]

    @classmethod
    def fit(cls, X: ArrayLike) -> Standardizer:
        """Mean and population standard deviation of each column of ``X`` (at least one row)."""
        matrix = _matrix(X)
        if len(matrix) == 0:
            raise ValueError("cannot fit a standardizer on no rows")
        mean = matrix.mean(axis=0)
        std = matrix.std(axis=0)
        constant = std <= _CONSTANT_RELATIVE_STD * np.maximum(1.0, np.abs(mean))
        return cls(mean=mean, scale=np.where(constant, 1.0, std))

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        matrix = _matrix(X)
        if matrix.shape[1] != len(self.mean):
            raise ValueError(f"X has {matrix.shape[1]} columns, the standardizer {len(self.mean)}")
        return (matrix - self.mean) / self.scale

    def apply(self, table: PartyTable) -> PartyTable:
        """``table`` with its features standardised, ids and labels unchanged."""
        return PartyTable(
            name=table.name,
            ids=table.ids,
            feature_names=table.feature_names,
            X=self.transform(table.X),
            y=table.y,
        )


def _matrix(X: ArrayLike) -> NDArray[np.float64]:
    matrix = np.asarray(X, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"X must be a matrix, got shape {matrix.shape}")
    return matrix
