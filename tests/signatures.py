"""Other spellings of valid secp256k1 signatures, for the tests that must refuse them."""

from __future__ import annotations

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def non_canonical_forms(signature: bytes) -> list[bytes]:
    """Other spellings of a valid signature that eth-account still recovers to the signer."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64]), signature[64]
    return [
        r + (SECP256K1_N - s).to_bytes(32) + bytes([55 - v]),  # high s, flipped parity
        signature[:64] + bytes([v - 27]),  # v as 0/1
        signature[:64] + bytes([v + 8]),  # v as EIP-155 35/36 for chain id 0
    ]
