"""Datasets and data-usage consents, including grants signed offline and relayed by anyone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_typing import ChecksumAddress
from eth_utils import ValidationError, to_checksum_address
from web3.types import BlockIdentifier, TxReceipt

from consortium.crypto.eip712 import (
    CONSENT_GRANT_TYPES,
    Domain,
    is_canonical_signature,
    recover_typed,
    sign_typed,
)
from consortium.errors import UsageError
from consortium.ledger.values import ZERO32, address, bytes32, decode_purpose, encode_purpose

if TYPE_CHECKING:
    from consortium.ledger.client import Ledger

SIGNED_GRANT_FORMAT = "consortium.consent-grant/1"


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: only its description and commitments, never its data."""

    id: int
    owner: ChecksumAddress
    name: str
    schema_digest: bytes
    subjects_root: bytes | None
    subjects_version: int
    registered_at: int


@dataclass(frozen=True)
class Consent:
    """One consent: dataset x grantee x purpose, with its window, as stored on chain."""

    dataset_id: int
    grantee: ChecksumAddress
    purpose: str
    valid_from: int
    valid_until: int
    granted_at: int
    revoked: bool

    def state(self, now: int) -> str:
        """``revoked``, ``pending`` (window not begun), ``expired`` or ``valid`` at ``now``."""
        if self.revoked:
            return "revoked"
        if now < self.valid_from:
            return "pending"
        if now > self.valid_until:
            return "expired"
        return "valid"

    def holds(self, now: int) -> bool:
        """Granted, not revoked, and inside its window at ``now``: what ``isConsentValid``
        asks of the consent itself (it also asks that the dataset's owner be a provider)."""
        return self.granted_at != 0 and self.state(now) == "valid"


@dataclass(frozen=True)
class SignedGrant:
    """A consent grant signed by the dataset owner, to be relayed by anyone (EIP-712).

    ``nonce`` is the consent's ``grantNonce`` when it was signed: any later change of the
    consent (a grant, a revocation) or a cancellation by the owner voids the grant.
    """

    chain_id: int
    verifying_contract: ChecksumAddress
    dataset_id: int
    grantee: ChecksumAddress
    purpose: str
    valid_from: int
    valid_until: int
    nonce: int
    deadline: int
    signer: ChecksumAddress
    signature: bytes

    def message(self) -> dict[str, Any]:
        """The EIP-712 message, as the contract hashes it."""
        return {
            "datasetId": self.dataset_id,
            "grantee": self.grantee,
            "purpose": encode_purpose(self.purpose),
            "validFrom": self.valid_from,
            "validUntil": self.valid_until,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }

    def recover(self) -> ChecksumAddress:
        """The address that actually signed."""
        domain = Domain(self.chain_id, self.verifying_contract)
        return recover_typed(domain, CONSENT_GRANT_TYPES, self.message(), self.signature)

    def is_authentic(self) -> bool:
        """Whether ``signer`` signed exactly these fields, in the canonical signature form.

        False for a file edited after signing (any field), for another spelling of the
        signature (high ``s``, ``v`` as 0 or 1: the contract's ECDSA refuses those), and for a
        signature that is not a valid secp256k1 signature at all, which :meth:`recover` reports
        with one of several unrelated exception types.
        """
        if not is_canonical_signature(self.signature):
            return False
        try:
            return self.recover() == self.signer
        except (BadSignature, ValidationError, ValueError):
            return False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SIGNED_GRANT_FORMAT,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
            "datasetId": self.dataset_id,
            "grantee": self.grantee,
            "purpose": self.purpose,
            "validFrom": self.valid_from,
            "validUntil": self.valid_until,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "signer": self.signer,
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> SignedGrant:
        """Parses a signed grant file; a malformed one is a usage error naming the field."""
        if not isinstance(data, dict) or data.get("format") != SIGNED_GRANT_FORMAT:
            raise UsageError(f"not a signed consent grant (format {SIGNED_GRANT_FORMAT})")
        try:
            return cls(
                chain_id=_uint(data["chainId"], "chainId", 256),
                verifying_contract=address(data["verifyingContract"]),
                dataset_id=_uint(data["datasetId"], "datasetId", 256),
                grantee=address(data["grantee"]),
                purpose=decode_purpose(encode_purpose(str(data["purpose"]))),
                valid_from=_uint(data["validFrom"], "validFrom", 64),
                valid_until=_uint(data["validUntil"], "validUntil", 64),
                nonce=_uint(data["nonce"], "nonce", 256),
                deadline=_uint(data["deadline"], "deadline", 256),
                signer=address(data["signer"]),
                signature=_signature(data["signature"]),
            )
        except KeyError as exc:
            raise UsageError(f"signed grant lacks field {exc.args[0]!r}") from None


def _uint(value: Any, field: str, bits: int) -> int:
    """``value`` if it fits the field's Solidity type ``uint<bits>``: a larger one could not be
    signed or sent, and would fail deep inside the ABI encoder instead of naming the field."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise UsageError(
            f"signed grant field {field!r} must be an integer from 0 to 2**{bits}-1 (uint{bits})"
        )
    return value


def _signature(value: Any) -> bytes:
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 65:
        raise UsageError("signed grant field 'signature' must be 65 bytes of hex")
    return raw


class Consents:
    """Dataset registration and consent management of one :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._contract = ledger.consent_registry

    # ------------------------------------------------------------ datasets

    def register(
        self, name: str, schema_digest: str | bytes, subjects_root: str | bytes | None = None
    ) -> int:
        """Registers a dataset owned by the signer (a PROVIDER); returns its id."""
        fn = self._contract.functions.registerDataset(
            name,
            bytes32(schema_digest, "schema digest"),
            ZERO32 if subjects_root is None else bytes32(subjects_root, "subjects root"),
        )
        receipt = self._ledger.send(fn)
        (event,) = self._ledger.events(self._contract, "DatasetRegistered", receipt)
        return int(event["args"]["datasetId"])

    def update_subjects(self, dataset_id: int, subjects_root: str | bytes) -> int:
        """Publishes a new consented-subjects root; returns its version."""
        fn = self._contract.functions.updateSubjectsRoot(
            dataset_id, bytes32(subjects_root, "subjects root")
        )
        receipt = self._ledger.send(fn)
        (event,) = self._ledger.events(self._contract, "SubjectsRootUpdated", receipt)
        return int(event["args"]["version"])

    def dataset(self, dataset_id: int) -> Dataset:
        owner, registered_at, version, schema, root, name = self._ledger.call(
            self._contract.functions.getDataset(dataset_id)
        )
        return Dataset(
            id=dataset_id,
            owner=to_checksum_address(owner),
            name=name,
            schema_digest=bytes(schema),
            subjects_root=None if bytes(root) == ZERO32 else bytes(root),
            subjects_version=version,
            registered_at=registered_at,
        )

    def datasets(self) -> list[Dataset]:
        """Every registered dataset, by id."""
        count = self._ledger.call(self._contract.functions.datasetCount())
        return [self.dataset(i) for i in range(1, count + 1)]

    def subjects_root_at(self, dataset_id: int, version: int) -> bytes:
        return bytes(
            self._ledger.call(self._contract.functions.subjectsRootAt(dataset_id, version))
        )

    # ------------------------------------------------------------ consents

    def grant(
        self, dataset_id: int, grantee: str, purpose: str, valid_from: int, valid_until: int
    ) -> TxReceipt:
        """Grants (or replaces) a consent; the signer must own the dataset."""
        fn = self._contract.functions.grantConsent(
            dataset_id, address(grantee), encode_purpose(purpose), valid_from, valid_until
        )
        return self._ledger.send(fn)

    def revoke(self, dataset_id: int, grantee: str, purpose: str) -> TxReceipt:
        """Revokes a consent; it stops being valid in the very block that mines this, and every
        grant signed for it before is void."""
        fn = self._contract.functions.revokeConsent(
            dataset_id, address(grantee), encode_purpose(purpose)
        )
        return self._ledger.send(fn)

    def is_valid(self, dataset_id: int, grantee: str, purpose: str) -> bool:
        fn = self._contract.functions.isConsentValid(
            dataset_id, address(grantee), encode_purpose(purpose)
        )
        return bool(self._ledger.call(fn))

    def get(self, dataset_id: int, grantee: str, purpose: str) -> Consent:
        """The consent for this triple; one never granted is a usage error."""
        raw = self._ledger.call(
            self._contract.functions.getConsent(
                dataset_id, address(grantee), encode_purpose(purpose)
            )
        )
        consent = _consent(dataset_id, raw)
        if consent.granted_at == 0:
            raise UsageError(f"no consent for dataset {dataset_id}, {grantee}, {purpose!r}")
        return consent

    def many(
        self,
        dataset_ids: Sequence[int],
        grantee: str,
        purpose: str,
        block: BlockIdentifier = "latest",
    ) -> dict[int, Consent]:
        """The consent of each dataset for ``grantee`` and ``purpose`` (as of ``block``;
        ``granted_at`` 0 where never granted), in one call (``getConsents``)."""
        fn = self._contract.functions.getConsents(
            list(dataset_ids), address(grantee), encode_purpose(purpose)
        )
        raw = self._ledger.call(fn, block)
        return {d: _consent(d, entry) for d, entry in zip(dataset_ids, raw, strict=True)}

    def owners(
        self, dataset_ids: Sequence[int], block: BlockIdentifier = "latest"
    ) -> dict[int, ChecksumAddress | None]:
        """Each dataset's owner (as of ``block``; None where not registered), in one call
        (``ownersOf``)."""
        raw = self._ledger.call(self._contract.functions.ownersOf(list(dataset_ids)), block)
        return {
            d: None if int(owner, 16) == 0 else to_checksum_address(owner)
            for d, owner in zip(dataset_ids, raw, strict=True)
        }

    def of_dataset(self, dataset_id: int) -> list[Consent]:
        """Every consent ever granted on the dataset, revoked ones included."""
        raw = self._ledger.call(self._contract.functions.consentsOf(dataset_id))
        return [_consent(dataset_id, entry) for entry in raw]

    # ------------------------------------------------------------ offline grants

    def sign_grant(
        self,
        owner: LocalAccount,
        dataset_id: int,
        grantee: str,
        purpose: str,
        valid_from: int,
        valid_until: int,
        deadline: int,
    ) -> SignedGrant:
        """Signs a grant with the owner's key for the consent as the chain holds it now.

        The nonce is always the consent's current one, read from the chain: an older one is
        void already, and a later one would be armed by whatever change of the consent reached
        it, a revocation included.
        """
        nonce = self.nonce_of(dataset_id, grantee, purpose)
        unsigned = SignedGrant(
            chain_id=self._ledger.chain.chain_id,
            verifying_contract=to_checksum_address(self._contract.address),
            dataset_id=dataset_id,
            grantee=address(grantee),
            purpose=purpose,
            valid_from=valid_from,
            valid_until=valid_until,
            nonce=nonce,
            deadline=deadline,
            signer=to_checksum_address(owner.address),
            signature=bytes(65),
        )
        domain = Domain(unsigned.chain_id, unsigned.verifying_contract)
        signature = sign_typed(owner, domain, CONSENT_GRANT_TYPES, unsigned.message())
        return SignedGrant(**{**unsigned.__dict__, "signature": signature})

    def nonce_of(self, dataset_id: int, grantee: str, purpose: str) -> int:
        """The nonce a signed grant of this consent must carry to be relayed now."""
        fn = self._contract.functions.grantNonce(
            dataset_id, address(grantee), encode_purpose(purpose)
        )
        return int(self._ledger.call(fn))

    def cancel_signed_grants(self, dataset_id: int, grantee: str, purpose: str) -> int:
        """Voids every signed grant of this consent not yet relayed, leaving the consent as it
        is (the signer must own the dataset); returns the nonce the next signed grant takes."""
        fn = self._contract.functions.cancelSignedGrants(
            dataset_id, address(grantee), encode_purpose(purpose)
        )
        receipt = self._ledger.send(fn)
        (event,) = self._ledger.events(self._contract, "SignedGrantsCancelled", receipt)
        return int(event["args"]["nonce"])

    def relay_grant(self, grant: SignedGrant) -> TxReceipt:
        """Submits a signed grant; the signer of this ledger only pays the gas."""
        if grant.chain_id != self._ledger.chain.chain_id:
            raise UsageError(
                f"the grant was signed for chain {grant.chain_id}, "
                f"not this chain ({self._ledger.chain.chain_id})"
            )
        message = grant.message()
        fn = self._contract.functions.grantConsentBySig(
            message["datasetId"],
            message["grantee"],
            message["purpose"],
            message["validFrom"],
            message["validUntil"],
            message["nonce"],
            message["deadline"],
            grant.signature,
        )
        return self._ledger.send(fn)


def _consent(dataset_id: int, raw: Any) -> Consent:
    grantee, purpose, valid_from, valid_until, granted_at, revoked = raw
    return Consent(
        dataset_id=dataset_id,
        grantee=to_checksum_address(grantee),
        purpose=decode_purpose(bytes(purpose)),
        valid_from=valid_from,
        valid_until=valid_until,
        granted_at=granted_at,
        revoked=revoked,
    )
