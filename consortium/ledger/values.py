"""Conversions between user-facing values and the contracts' ABI types."""

from __future__ import annotations

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address

from consortium.errors import UsageError

ZERO32 = bytes(32)


def address(value: str) -> ChecksumAddress:
    """A checksummed address; anything else is a usage error naming the value."""
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError):
        raise UsageError(f"not an address: {value!r}") from None


def bytes32(value: str | bytes, what: str = "digest") -> bytes:
    """32 bytes from raw bytes or 64 hex digits (with or without ``0x``)."""
    if isinstance(value, bytes):
        raw = value
    else:
        text = value.removeprefix("0x")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{what} is not hex: {value!r}") from None
    if len(raw) != 32:
        raise UsageError(f"{what} must be 32 bytes (64 hex digits), got {len(raw)}")
    return raw


def encode_purpose(purpose: str) -> bytes:
    """A purpose label as ``bytes32``: its UTF-8, right-padded with zeros, readable on chain."""
    raw = purpose.encode("utf-8")
    if not raw or len(raw) > 32 or b"\x00" in raw:
        raise UsageError(f"purpose must be 1 to 32 bytes of text without NUL, got {purpose!r}")
    return raw.ljust(32, b"\x00")


def decode_purpose(raw: bytes) -> str:
    """The label of an on-chain purpose; non-text purposes are shown as hex."""
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()
