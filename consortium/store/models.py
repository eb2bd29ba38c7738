"""Models in an artifact store, laid out so that store addresses are the protocol's digests.

A tensor is stored as exactly the bytes its digest covers (``JCS({"dtype", "shape"})``, a zero
byte, the array's bytes), so its SHA-256 content address *is* its tensor digest. A model is
stored as the JCS object mapping each name to its tensor digest, so the content address of
that manifest *is* the model digest. Whoever holds a model digest from the chain can fetch the
model from any store and knows, by the store's check on every read, that it is the one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from consortium.crypto.canonical import jcs
from consortium.crypto.digests import from_hex32, hex32
from consortium.errors import UsageError
from consortium.store.artifacts import ArtifactStore

Model = dict[str, np.ndarray]

# The dtype kinds whose bytes are the numbers, as for tensor digests (bool, ints, floats,
# complex): an object array's bytes would be pointers.
_NUMERIC_KINDS = frozenset("biufc")
# More than the header of any numeric array numpy can make (at most 64 dimensions).
_HEADER_LIMIT = 4096


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    return jcs({"dtype": dtype.str, "shape": [int(n) for n in shape]})


def tensor_blob(array: np.ndarray) -> bytes:
    """The stored form of a tensor; its SHA-256 equals :func:`tensor_digest` of ``array``.

    Refuses what :func:`tensor_digest` refuses (non-arrays, non-numeric dtypes), so a stored
    tensor's address is always its tensor digest.
    """
    if not isinstance(array, np.ndarray):
        raise UsageError(f"a tensor must be a numpy array, not {type(array).__name__}")
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise UsageError(f"cannot store a tensor of non-numeric dtype {array.dtype}")
    return _header(array.dtype, array.shape) + b"\x00" + array.tobytes(order="C")


def parse_tensor_blob(blob: bytes | memoryview) -> np.ndarray:
    """The array a tensor blob holds, as a read-only view of ``blob``; a malformed blob is a
    UsageError.

    The numbers are not copied (a large model's tensors are most of what an audit reads), so
    the array lives as long as the blob's memory and must not be written through: it is
    marked read-only even when ``blob`` is writable. Pass ``bytes`` or what
    :meth:`ArtifactStore.get_view` returns, memory nobody else writes to.

    Only the one encoding :func:`tensor_blob` writes is accepted: a blob with another header
    spelling (key order, spaces, ``"float64"`` for ``"<f8"``) decodes to an array whose tensor
    digest is not the blob's address, so a model digest naming it would not be the digest of
    the model anyone recomputes from the numbers.
    """
    try:
        view = memoryview(blob).cast("B")
        # The first zero byte ends the header: JCS text has none, and the header of a numeric
        # array numpy can make is far shorter than _HEADER_LIMIT.
        header, separator, _ = bytes(view[:_HEADER_LIMIT]).partition(b"\x00")
        if not separator:
            raise ValueError(f"no header separator in its first {_HEADER_LIMIT} bytes")
        fields = json.loads(header)
        dtype = np.dtype(fields["dtype"])
        shape = tuple(int(n) for n in fields["shape"])
        if dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"non-numeric dtype {dtype}")
        if any(n < 0 for n in shape):  # reshape would infer a -1, and the header would lie
            raise ValueError(f"negative dimension in shape {list(shape)}")
        if header != _header(dtype, shape):
            raise ValueError("header is not the canonical JCS of its dtype and shape")
        array = _array(view, len(header) + 1, dtype, shape)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, UsageError) as exc:
        raise UsageError(f"malformed tensor blob: {exc}") from None
    return array


def _array(view: memoryview, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The read-only array of ``shape`` over ``view[offset:]``, which must hold it exactly."""
    count = math.prod(shape)
    size = count * dtype.itemsize
    if len(view) - offset != size:
        raise ValueError(
            f"{len(view) - offset} data bytes, but dtype {dtype.str} and shape {list(shape)} "
            f"need {size}"
        )
    array = np.frombuffer(view, dtype=dtype, count=count, offset=offset).reshape(shape)
    array.flags.writeable = False
    return array


def put_model(store: ArtifactStore, model: Mapping[str, np.ndarray]) -> bytes:
    """Stores every tensor, then the manifest; returns the model digest."""
    if not model:
        raise UsageError("cannot store a model without tensors")
    for name in model:
        if not isinstance(name, str) or not name:
            raise UsageError(f"tensor names must be non-empty strings, got {name!r}")
    manifest = {name: hex32(store.put(tensor_blob(array))) for name, array in model.items()}
    return store.put_json(manifest)


def get_model(store: ArtifactStore, digest: bytes) -> Model:
    """The model whose digest is ``digest``, every tensor verified on read."""
    return {
        name: parse_tensor_blob(store.get_view(tensor))
        for name, tensor in _manifest(store, digest).items()
    }


def model_objects(store: ArtifactStore, digest: bytes) -> list[bytes]:
    """The digests of every object that makes up the model: its manifest and its tensors."""
    return [digest, *_manifest(store, digest).values()]


def _manifest(store: ArtifactStore, digest: bytes) -> dict[str, bytes]:
    manifest = store.get_json(digest)
    if not isinstance(manifest, dict) or not manifest:
        raise UsageError(f"object {digest.hex()} is not a model manifest")
    if "" in manifest:
        raise UsageError(f"model manifest {digest.hex()} has a tensor without a name")
    return {name: from_hex32(value, what=f"tensor {name!r}") for name, value in manifest.items()}
