"""Tests of tensor and model digests: dtype, shape, byte order, values and tensor names change
the digest; memory layout and the order of a model's names do not."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest
import rfc8785
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tensor_strategies import ARRAYS, NONEMPTY_ARRAYS

from consortium.crypto.digests import from_hex32, hex32, model_digest, tensor_digest
from consortium.errors import UsageError

FAST = settings(max_examples=60, deadline=None)

NAMES = st.text(min_size=1, max_size=8)

KNOWN = np.array([[1.0, 2.5, -0.0], [3.0, -4.25, 1e-300]], dtype="<f8")
# SHA-256 of '{"dtype":"<f8","shape":[2,3]}' 00 <the six float64 values, little-endian>.
KNOWN_DIGEST = "5fafed3574bb7a98351f45982059c41da47a58c5d94283fb854ccca6091173bb"


def reference_digest(dtype: str, shape: list[int], data: bytes) -> bytes:
    """The tensor digest written out from the DESIGN text, without the code under test."""
    header = rfc8785.dumps({"dtype": dtype, "shape": shape})
    return hashlib.sha256(header + b"\x00" + data).digest()


def test_known_answer_for_a_small_float64_array() -> None:
    data = struct.pack("<6d", 1.0, 2.5, -0.0, 3.0, -4.25, 1e-300)
    expected = reference_digest("<f8", [2, 3], data)
    assert rfc8785.dumps({"dtype": "<f8", "shape": [2, 3]}) == b'{"dtype":"<f8","shape":[2,3]}'
    assert tensor_digest(KNOWN) == expected
    assert expected.hex() == KNOWN_DIGEST


def test_known_answer_for_a_model() -> None:
    weights = KNOWN
    bias = np.array([0.5, -1.0], dtype="<f8")
    bias_digest = reference_digest("<f8", [2], struct.pack("<2d", 0.5, -1.0))
    expected = hashlib.sha256(
        rfc8785.dumps({"bias": bias_digest.hex(), "weights": KNOWN_DIGEST})
    ).digest()
    assert model_digest({"weights": weights, "bias": bias}) == expected


@FAST
@given(ARRAYS)
def test_digest_is_the_reference_and_ignores_memory_layout(array: np.ndarray) -> None:
    digest = tensor_digest(array)
    assert digest == reference_digest(array.dtype.str, list(array.shape), array.tobytes())
    assert tensor_digest(np.asarray(array, order="F")) == digest
    assert tensor_digest(array.copy(order="F")) == digest
    transposed_twice = array.T.copy().T  # same values, Fortran-ordered memory
    assert tensor_digest(transposed_twice) == digest


@FAST
@given(NONEMPTY_ARRAYS)
def test_strided_views_hash_like_their_copies(array: np.ndarray) -> None:
    view = array[..., ::-1][::2]
    assert tensor_digest(view) == tensor_digest(view.copy())


@FAST
@given(ARRAYS, ARRAYS)
def test_digests_agree_exactly_when_dtype_shape_and_bytes_agree(
    a: np.ndarray, b: np.ndarray
) -> None:
    same = (a.dtype.str, a.shape, a.tobytes()) == (b.dtype.str, b.shape, b.tobytes())
    assert (tensor_digest(a) == tensor_digest(b)) == same


@FAST
@given(NONEMPTY_ARRAYS, st.data())
def test_any_changed_byte_changes_the_digest(array: np.ndarray, data: st.DataObject) -> None:
    raw = bytearray(array.tobytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    changed = np.frombuffer(bytes(raw), dtype=array.dtype).reshape(array.shape)
    assert tensor_digest(changed) != tensor_digest(array)


def test_dtype_changes_the_digest_even_over_the_same_bytes() -> None:
    assert tensor_digest(KNOWN.view("<i8")) != tensor_digest(KNOWN)
    assert tensor_digest(KNOWN.view("<u8")) != tensor_digest(KNOWN.view("<i8"))
    assert tensor_digest(KNOWN.astype("<f4")) != tensor_digest(KNOWN)


def test_shape_changes_the_digest_even_over_the_same_bytes() -> None:
    digests = {
        tensor_digest(KNOWN),
        tensor_digest(KNOWN.reshape(3, 2)),
        tensor_digest(KNOWN.reshape(6)),
        tensor_digest(KNOWN.reshape(1, 6)),
        tensor_digest(KNOWN.reshape(6, 1, 1)),
    }
    assert len(digests) == 5
    assert tensor_digest(np.array(1.0)) != tensor_digest(np.array([1.0]))
    assert tensor_digest(np.zeros((0,))) != tensor_digest(np.zeros((0, 3)))


def test_byte_order_changes_the_digest() -> None:
    big = KNOWN.astype(">f8")
    assert np.array_equal(big, KNOWN)  # same numbers ...
    assert tensor_digest(big) != tensor_digest(KNOWN)  # ... other bytes
    assert tensor_digest(KNOWN.view(">f8")) != tensor_digest(KNOWN)  # same bytes, other dtype
    assert tensor_digest(big) == reference_digest(">f8", [2, 3], big.tobytes())


@pytest.mark.parametrize(
    "array",
    [
        np.array([1, "a"], dtype=object),
        np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")]),
        np.array(["ab", "c"]),
        np.array([b"ab"]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
        np.zeros(2, dtype="V8"),
    ],
    ids=["object", "structured", "unicode", "bytes", "datetime", "timedelta", "void"],
)
def test_non_numeric_dtypes_are_refused(array: np.ndarray) -> None:
    with pytest.raises(UsageError, match=r"^cannot digest a tensor of non-numeric dtype "):
        tensor_digest(array)


def test_non_arrays_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^a tensor must be a numpy array, not list$"):
        tensor_digest([1.0, 2.0])  # type: ignore[arg-type]


@FAST
@given(st.dictionaries(NAMES, ARRAYS, min_size=1, max_size=5), st.randoms())
def test_model_digest_ignores_insertion_order(
    tensors: dict[str, np.ndarray], rng: random.Random
) -> None:
    names = list(tensors)
    rng.shuffle(names)
    assert model_digest({name: tensors[name] for name in names}) == model_digest(tensors)


@FAST
@given(st.dictionaries(NAMES, ARRAYS, min_size=1, max_size=5), NAMES, st.data())
def test_renaming_a_tensor_changes_the_model_digest(
    tensors: dict[str, np.ndarray], new_name: str, data: st.DataObject
) -> None:
    assume(new_name not in tensors)
    old_name = data.draw(st.sampled_from(sorted(tensors)))
    renamed = {new_name if name == old_name else name: t for name, t in tensors.items()}
    assert model_digest(renamed) != model_digest(tensors)


def test_changing_adding_or_removing_a_tensor_changes_the_model_digest() -> None:
    model = {"w": KNOWN, "b": np.zeros(3)}
    digest = model_digest(model)
    assert model_digest({"w": KNOWN, "b": np.ones(3)}) != digest
    assert model_digest({**model, "c": np.zeros(1)}) != digest
    assert model_digest({"w": KNOWN}) != digest
    assert model_digest({"w": KNOWN.astype(">f8"), "b": np.zeros(3)}) != digest


def test_model_digest_refusals() -> None:
    with pytest.raises(UsageError, match=r"^cannot digest a model without tensors$"):
        model_digest({})
    with pytest.raises(UsageError, match=r"^tensor names must be non-empty strings, got ''$"):
        model_digest({"": KNOWN})
    with pytest.raises(UsageError, match=r"^tensor names must be non-empty strings, got 3$"):
        model_digest({3: KNOWN})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="non-numeric dtype"):
        model_digest({"w": np.array(["x"])})


def test_hex32_round_trip() -> None:
    digest = tensor_digest(KNOWN)
    assert hex32(digest) == KNOWN_DIGEST
    assert from_hex32(KNOWN_DIGEST) == digest


@pytest.mark.parametrize(
    "text",
    [KNOWN_DIGEST.upper(), "0x" + KNOWN_DIGEST, KNOWN_DIGEST[:-2], KNOWN_DIGEST + "00", "", 7],
    ids=["upper", "prefixed", "short", "long", "empty", "int"],
)
def test_from_hex32_refuses_other_spellings(text: str) -> None:
    with pytest.raises(
        UsageError, match=r"^model digest must be 64 lowercase hex digits without a 0x prefix$"
    ):
        from_hex32(text, what="model digest")


def test_hex32_refuses_other_lengths_and_types() -> None:
    with pytest.raises(UsageError, match=r"^a digest must be 32 bytes, not 31$"):
        hex32(bytes(31))
    with pytest.raises(UsageError, match=r"^a digest must be bytes, not str$"):
        hex32(KNOWN_DIGEST)  # type: ignore[arg-type]
