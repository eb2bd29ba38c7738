"""Canonical JSON (RFC 8785) and the SHA-256 digests built on it.

Digests are always taken over JCS bytes, never over ``json.dumps`` output, whose key order and
number formatting differ between producers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from consortium.errors import UsageError


def jcs(value: Any) -> bytes:
    """The RFC 8785 canonical bytes of a JSON value.

    Values JSON cannot carry exactly (NaN, infinities, integers beyond 2**53) are refused rather
    than rounded, because two parties would then disagree on the digest.
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise UsageError(f"cannot canonicalize JSON value: {exc}") from None


def json_digest(value: Any) -> bytes:
    """SHA-256 of the canonical bytes of a JSON value."""
    return hashlib.sha256(jcs(value)).digest()
