"""Hypothesis strategies for tensors of every numeric dtype, byte order and small shape."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

NUMERIC_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
)
ARRAYS = hnp.arrays(
    dtype=NUMERIC_DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
)
NONEMPTY_ARRAYS = hnp.arrays(
    dtype=NUMERIC_DTYPES, shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
)
