"""Tests of tensors in the artifact store: a stored tensor reads back as a read-only, aligned
view of the verified bytes (no copy of the numbers), and only an exact blob parses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from tensor_strategies import ARRAYS

from consortium.crypto.digests import model_digest, tensor_digest
from consortium.errors import UsageError
from consortium.store.artifacts import ArtifactStore, CorruptArtifact
from consortium.store.models import get_model, parse_tensor_blob, put_model, tensor_blob

HEADER = b'{"dtype":"<f8","shape":[2]}\x00'


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("models"))


@settings(max_examples=80, deadline=None)
@given(array=ARRAYS)
def test_a_tensor_reads_back_as_an_aligned_read_only_view(
    store: ArtifactStore, array: np.ndarray
) -> None:
    digest = put_model(store, {"t": array})
    loaded = get_model(store, digest)["t"]
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)
    assert model_digest({"t": loaded}) == digest
    assert not loaded.flags.writeable and loaded.flags.aligned
    with pytest.raises(ValueError, match="WRITEABLE"):
        loaded.flags.writeable = True


@settings(max_examples=80, deadline=None)
@given(array=ARRAYS)
def test_parsing_a_blob_inverts_tensor_blob_without_copying(array: np.ndarray) -> None:
    blob = tensor_blob(array)
    assert hashlib.sha256(blob).digest() == tensor_digest(array)
    parsed = parse_tensor_blob(blob)
    np.testing.assert_array_equal(parsed, array)
    assert parsed.dtype == array.dtype and parsed.shape == array.shape
    assert not parsed.flags.owndata and not parsed.flags.writeable


def test_a_large_tensor_is_a_view_of_the_verified_buffer(store: ArtifactStore) -> None:
    weights = np.random.default_rng(0).standard_normal(1_000_003)
    tensor = store.put(tensor_blob(weights))
    view = store.get_view(tensor)
    parsed = parse_tensor_blob(view)
    assert np.shares_memory(parsed, np.frombuffer(view, dtype=np.uint8))
    assert parsed.flags.aligned
    np.testing.assert_array_equal(parsed, weights)


def test_an_array_over_a_writable_blob_is_still_read_only() -> None:
    blob = bytearray(tensor_blob(np.array([1.0, 2.0])))
    parsed = parse_tensor_blob(blob)
    with pytest.raises(ValueError, match="read-only"):
        parsed[0] = 3.0


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (HEADER + bytes(8), "8 data bytes, but dtype <f8 and shape \\[2\\] need 16"),
        (HEADER + bytes(17), "17 data bytes"),
        (HEADER + bytes(15), "15 data bytes"),
        (HEADER[:-1], "no header separator"),
        (b"{" * 5000 + b"\x00", "no header separator in its first 4096 bytes"),
        (b'{"dtype":"<f8","shape":[]}\x00', "0 data bytes, but dtype <f8 and shape \\[\\] need 8"),
    ],
    ids=["short", "one-byte-long", "one-byte-short", "no-separator", "huge-header", "no-scalar"],
)
def test_a_blob_must_hold_exactly_its_numbers(blob: bytes, message: str) -> None:
    with pytest.raises(UsageError, match=f"malformed tensor blob: {message}"):
        parse_tensor_blob(blob)


def test_a_damaged_tensor_is_never_parsed(tmp_path: Path) -> None:
    own = ArtifactStore(tmp_path / "store")
    digest = put_model(own, {"w": np.arange(4.0)})
    (tensor,) = [d for d in own if d != digest]
    path = own.path(tensor)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(CorruptArtifact, match=tensor.hex()):
        get_model(own, digest)
