"""Digests of tensors and models, and the text form of 32-byte digests.

A model or a model update is a mapping from tensor names to numpy arrays. Its digest must be the
same for every party that holds the same numbers, whatever library or memory layout produced
them, and must change whenever the numbers could be read differently. So a tensor's digest
covers its dtype (including byte order), its shape and its bytes in C order, and nothing about
how the array happens to sit in memory (Fortran order, strides, views).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import numpy as np

from consortium.crypto.canonical import jcs
from consortium.errors import UsageError

# bool, signed and unsigned integers, floats, complex: the kinds whose bytes are the numbers.
# Objects would hash pointers; strings, datetimes and structured dtypes are not model weights.
_NUMERIC_KINDS = frozenset("biufc")

_HEX32 = re.compile(r"[0-9a-f]{64}")


def tensor_digest(array: np.ndarray) -> bytes:
    """SHA-256 of ``JCS({"dtype", "shape"})``, a zero byte, and the array's bytes in C order.

    The bytes are taken in the declared dtype, so ``<f8`` and ``>f8`` arrays of equal values
    differ: the digest commits to the exact bytes a reader will decode, and converting here
    would hide a producer that wrote the other byte order.
    """
    if not isinstance(array, np.ndarray):
        raise UsageError(f"a tensor must be a numpy array, not {type(array).__name__}")
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise UsageError(f"cannot digest a tensor of non-numeric dtype {array.dtype}")
    header = jcs({"dtype": array.dtype.str, "shape": [int(n) for n in array.shape]})
    digest = hashlib.sha256(header + b"\x00")
    digest.update(np.ascontiguousarray(array))  # hashes the array's own buffer: no copy
    return digest.digest()


def model_digest(tensors: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 of the JCS object mapping each tensor name to its tensor digest in hex.

    JCS sorts the names, so the mapping's insertion order does not matter. An empty model is
    refused because its digest would commit to nothing.
    """
    if not tensors:
        raise UsageError("cannot digest a model without tensors")
    digests: dict[str, str] = {}
    for name, array in tensors.items():
        if not isinstance(name, str) or not name:
            raise UsageError(f"tensor names must be non-empty strings, got {name!r}")
        digests[name] = tensor_digest(array).hex()
    return hashlib.sha256(jcs(digests)).digest()


def hex32(digest: bytes) -> str:
    """The file text form of a 32-byte digest: 64 lowercase hex digits, no prefix."""
    if not isinstance(digest, bytes):
        raise UsageError(f"a digest must be bytes, not {type(digest).__name__}")
    if len(digest) != 32:
        raise UsageError(f"a digest must be 32 bytes, not {len(digest)}")
    return digest.hex()


def from_hex32(text: str, *, what: str = "digest") -> bytes:
    """The 32 bytes of a digest in file text form; ``what`` names it in the error message.

    Only the one spelling :func:`hex32` produces is accepted (no prefix, no upper case), so a
    digest has exactly one text form and files that embed digests have one canonical form.
    """
    if not isinstance(text, str) or not _HEX32.fullmatch(text):
        raise UsageError(f"{what} must be 64 lowercase hex digits without a 0x prefix")
    return bytes.fromhex(text)
