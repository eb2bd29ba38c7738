"""EIP-712 typed-data signatures bound to one chain and one deployment.

Every signature the project makes names the domain ``{name: "ConsortiumLedger", version: "1",
chainId, verifyingContract}``, so a message signed for one chain or one deployment is worthless
on another. Signing and verification use eth-account; nothing here talks to a chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address

DOMAIN_NAME = "ConsortiumLedger"
DOMAIN_VERSION = "1"

CONSENT_GRANT_TYPES: dict[str, list[dict[str, str]]] = {
    "ConsentGrant": [
        {"name": "datasetId", "type": "uint256"},
        {"name": "grantee", "type": "address"},
        {"name": "purpose", "type": "bytes32"},
        {"name": "validFrom", "type": "uint64"},
        {"name": "validUntil", "type": "uint64"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}

UPDATE_RECORD_TYPES: dict[str, list[dict[str, str]]] = {
    "UpdateRecord": [
        {"name": "jobId", "type": "uint256"},
        {"name": "round", "type": "uint32"},
        {"name": "participant", "type": "address"},
        {"name": "updateDigest", "type": "bytes32"},
        {"name": "baseModelDigest", "type": "bytes32"},
        {"name": "numExamples", "type": "uint64"},
        {"name": "metricsDigest", "type": "bytes32"},
    ]
}


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one contract on one chain."""

    chain_id: int
    verifying_contract: ChecksumAddress

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def _full_message(
    domain: Domain, types: dict[str, list[dict[str, str]]], message: dict[str, Any]
) -> dict[str, Any]:
    (primary_type,) = types
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **types,
        },
        "primaryType": primary_type,
        "domain": domain.as_dict(),
        "message": message,
    }


def sign_typed(
    account: LocalAccount,
    domain: Domain,
    types: dict[str, list[dict[str, str]]],
    message: dict[str, Any],
) -> bytes:
    """The 65-byte signature of ``message`` (of the single type in ``types``) by ``account``."""
    signable = encode_typed_data(full_message=_full_message(domain, types, message))
    return bytes(account.sign_message(signable).signature)


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def is_canonical_signature(signature: bytes) -> bool:
    """Whether ``signature`` is in the one form eth-account produces and OpenZeppelin's ECDSA
    accepts: 65 bytes, 0 < r < n, 0 < s <= n/2, v of 27 or 28.

    The other spellings of a valid signature (high ``s``, ``v`` as 0 or 1) recover the same
    signer, so without this rule one signed document would have several valid byte forms.
    """
    if len(signature) != 65:
        return False
    r = int.from_bytes(signature[:32])
    s = int.from_bytes(signature[32:64])
    return 0 < r < _SECP256K1_N and 0 < s <= _SECP256K1_N // 2 and signature[64] in (27, 28)


def recover_typed(
    domain: Domain,
    types: dict[str, list[dict[str, str]]],
    message: dict[str, Any],
    signature: bytes,
) -> ChecksumAddress:
    """The address whose key produced ``signature`` over ``message`` in ``domain``."""
    signable = encode_typed_data(full_message=_full_message(domain, types, message))
    return to_checksum_address(Account.recover_message(signable, signature=signature))
