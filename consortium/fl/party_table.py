"""One party's side of a vertically partitioned dataset.

In vertical federated learning the parties hold different columns about the same subjects:
the guest (the bank) holds the labels and its own features, a host (the logistics platform)
holds other features. Rows are matched by subject id, never by position, because each side
lists its own subjects in its own order; the private set intersection hands each side the
positions of the shared rows, and :meth:`PartyTable.aligned` puts them in the agreed order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, eq=False)
class PartyTable:
    """``X`` is float64 ``[n, d]`` in the column order of ``feature_names``, row ``i`` about the
    subject ``ids[i]``; ``y`` holds the 0/1 labels (int8) on the guest's side, None on a host's.

    The arrays are kept as read-only views, so a table handed to a protocol cannot be changed
    through it while the protocol commits to it.
    """

    name: str
    ids: tuple[str, ...]
    feature_names: tuple[str, ...]
    X: NDArray[np.float64]
    y: NDArray[np.int8] | None = None

    def __post_init__(self) -> None:
        if self.X.dtype != np.float64 or self.X.shape != (len(self.ids), len(self.feature_names)):
            raise ValueError(
                f"{self.name}: X is {self.X.dtype} {self.X.shape}, expected float64 "
                f"({len(self.ids)}, {len(self.feature_names)})"
            )
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"{self.name}: ids are not unique")
        object.__setattr__(self, "X", _read_only(self.X))
        if self.y is not None:
            if self.y.dtype != np.int8 or self.y.shape != (len(self.ids),):
                raise ValueError(
                    f"{self.name}: y is {self.y.dtype} {self.y.shape}, expected int8 "
                    f"({len(self.ids)},)"
                )
            if not np.all((self.y == 0) | (self.y == 1)):
                raise ValueError(f"{self.name}: labels must be 0 or 1")
            object.__setattr__(self, "y", _read_only(self.y))

    @property
    def num_rows(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> NDArray[np.int8]:
        """``y``, for code that needs the guest's side; ValueError on a host's table."""
        if self.y is None:
            raise ValueError(f"{self.name} holds no labels")
        return self.y

    def aligned(self, positions: ArrayLike) -> PartyTable:
        """The rows at ``positions``, in that order (as the intersection hands them over)."""
        rows = np.asarray(positions, dtype=np.intp)
        if rows.ndim != 1:
            raise ValueError(f"positions must be a vector, got shape {rows.shape}")
        return PartyTable(
            name=self.name,
            ids=tuple(self.ids[i] for i in rows.tolist()),
            feature_names=self.feature_names,
            X=self.X[rows],
            y=None if self.y is None else self.y[rows],
        )

    def partition(self, ids: Collection[str]) -> tuple[PartyTable, PartyTable]:
        """``(rows whose id is not in ids, rows whose id is)``, each in this table's order;
        how a held-out split given by subject id applies to either side."""
        inside = np.fromiter((i in ids for i in self.ids), dtype=bool, count=self.num_rows)
        return self.aligned(np.flatnonzero(~inside)), self.aligned(np.flatnonzero(inside))


def shared_positions(
    first: Sequence[str], second: Sequence[str]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Positions of the ids both sequences hold, in ascending id order, in each of them.

    What the private set intersection computes without either side seeing the other's ids;
    here in plaintext, for the centralized baseline and for checking the private one.
    """
    where_second = {identifier: index for index, identifier in enumerate(second)}
    pairs = sorted(
        (identifier, index, where_second[identifier])
        for index, identifier in enumerate(first)
        if identifier in where_second
    )
    return (
        np.array([pair[1] for pair in pairs], dtype=np.intp),
        np.array([pair[2] for pair in pairs], dtype=np.intp),
    )


def _read_only(array: NDArray[np.generic]) -> NDArray[np.generic]:
    view = array.view()
    view.flags.writeable = False
    return view
