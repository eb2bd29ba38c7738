"""Conversions between user-facing values and the contracts' ABI types."""

from __future__ import annotations

from eth_typing import ChecksumAddress
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from consortium.errors import UsageError

ZERO32 = bytes(32)


def address(value: str | bytes) -> ChecksumAddress:
    """A checksummed address; anything else is a usage error naming the value.

    An address in mixed case carries an EIP-55 checksum; a wrong one means a mistyped (or
    tampered) address, which is refused rather than silently normalised. All-lowercase or
    all-uppercase hex carries no checksum and is accepted.
    """
    if isinstance(value, bytes) and len(value) == 20:
        return to_checksum_address(value)
    if not isinstance(value, str) or not is_hex_address(value):
        raise UsageError(f"not an address: {value!r}")
    digits = value.removeprefix("0x")
    if digits not in (digits.lower(), digits.upper()) and not is_checksum_address(value):
        raise UsageError(f"address {value} has a wrong EIP-55 checksum (mistyped?)")
    return to_checksum_address(value)


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


def encode_purpose(purpose: str, what: str = "purpose") -> bytes:
    """A purpose label (or another short label, such as a model use's kind, that ``what``
    names in the error) as ``bytes32``: its UTF-8, right-padded with zeros, readable on chain."""
    raw = purpose.encode("utf-8")
    if not raw or len(raw) > 32 or b"\x00" in raw:
        raise UsageError(f"{what} must be 1 to 32 bytes of text without NUL, got {purpose!r}")
    return raw.ljust(32, b"\x00")


def decode_purpose(raw: bytes) -> str:
    """The text of an on-chain purpose or other label; non-text labels are shown as hex."""
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()
