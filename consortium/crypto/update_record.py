"""The UpdateRecord each participant signs per round, its JSON form and its Merkle leaf.

A participant signs (EIP-712, domain of the TrainingLedger deployment) which update it produced
from which base model on how many examples, so that the coordinator cannot later attribute a
different update to it, and the record cannot be replayed on another chain or deployment. The
coordinator anchors the RFC 6962 root over the JCS bytes of the round's signed records in the
JSON form below, ordered by participant address; auditors re-derive those leaves from the
records in an audit bundle, so the JSON form is fixed and parsed strictly: one record has
exactly one valid spelling, and therefore exactly one leaf.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_typing import ChecksumAddress
from eth_utils import ValidationError, is_checksum_address

from consortium.crypto.canonical import jcs
from consortium.crypto.devkeys import refuse_dev_key
from consortium.crypto.digests import from_hex32
from consortium.crypto.eip712 import (
    UPDATE_RECORD_TYPES,
    Domain,
    is_canonical_signature,
    recover_typed,
    sign_typed,
)
from consortium.errors import ConsortiumError, UsageError

UPDATE_RECORD_FORMAT = "consortium.update-record/1"

# The JSON form carries integers as JSON numbers, and JCS (like I-JSON) carries those exactly
# only up to 2**53 - 1; a larger jobId, round or numExamples would have no canonical leaf.
MAX_JSON_INTEGER = 2**53 - 1
# The ledger numbers rounds as uint32; a record for a round it cannot anchor is refused.
MAX_ROUND = 2**32 - 1

# Order of the secp256k1 group.

_SIGNATURE_HEX = re.compile(r"[0-9a-f]{130}")

_JSON_FIELDS = (
    "format",
    "chainId",
    "verifyingContract",
    "jobId",
    "round",
    "participant",
    "updateDigest",
    "baseModelDigest",
    "numExamples",
    "metricsDigest",
    "signature",
)


class RecordSignatureError(ConsortiumError):
    """A signed update record was not signed by its participant for the expected deployment."""


def _field_error(field: str, requirement: str) -> UsageError:
    return UsageError(f"update record field {field!r} must be {requirement}")


def _check_integer(
    field: str, value: object, minimum: int = 0, maximum: int = MAX_JSON_INTEGER
) -> None:
    # bool is an int subclass, but True is not a round number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(field, f"an integer, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        bound = f"2**{maximum.bit_length()} - 1"  # both bounds are one below a power of two
        raise _field_error(field, f"between {minimum} and {bound}, not {value}")


def _check_address(field: str, value: object) -> None:
    if not isinstance(value, str) or not is_checksum_address(value):
        raise _field_error(field, "an EIP-55 checksummed address")


def _check_digest(field: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise _field_error(field, "32 bytes")


@dataclass(frozen=True)
class UpdateRecord:
    """What a participant commits to for one round of one job.

    Fields are validated on construction, and errors name the JSON field, so that a record
    built in code and one read from a file fail the same way.
    """

    job_id: int
    round: int
    participant: ChecksumAddress
    update_digest: bytes
    base_model_digest: bytes
    num_examples: int
    metrics_digest: bytes

    def __post_init__(self) -> None:
        _check_integer("jobId", self.job_id)
        _check_integer("round", self.round, maximum=MAX_ROUND)
        _check_address("participant", self.participant)
        _check_digest("updateDigest", self.update_digest)
        _check_digest("baseModelDigest", self.base_model_digest)
        _check_integer("numExamples", self.num_examples)
        _check_digest("metricsDigest", self.metrics_digest)

    def message(self) -> dict[str, Any]:
        """The EIP-712 message of type ``UpdateRecord``."""
        return {
            "jobId": self.job_id,
            "round": self.round,
            "participant": self.participant,
            "updateDigest": self.update_digest,
            "baseModelDigest": self.base_model_digest,
            "numExamples": self.num_examples,
            "metricsDigest": self.metrics_digest,
        }


@dataclass(frozen=True)
class SignedUpdateRecord:
    """An update record with the participant's EIP-712 signature and the domain it signed for.

    ``signature`` is the 65-byte ``r || s || v``. The domain travels with the record because an
    auditor must see which deployment it was signed for; :meth:`verify` still insists on the
    deployment the verifier expects.
    """

    domain: Domain
    record: UpdateRecord
    signature: bytes

    def __post_init__(self) -> None:
        _check_integer("chainId", self.domain.chain_id, minimum=1)
        _check_address("verifyingContract", self.domain.verifying_contract)
        if not isinstance(self.signature, bytes) or len(self.signature) != 65:
            raise _field_error("signature", "65 bytes")

    def recover(self) -> ChecksumAddress:
        """The address whose key made :attr:`signature` over this record in its domain.

        Only the canonical form eth-account produces is accepted (low ``s``, ``v`` 27 or 28).
        The other spellings of the same signature also recover the signer, but would give the
        same signed record a second leaf, and so a second Merkle root for the same round.

        Raises:
            RecordSignatureError: if the signature is not a canonical secp256k1 signature.
        """
        if not is_canonical_signature(self.signature):
            raise RecordSignatureError(
                "update record signature is not a canonical secp256k1 signature "
                "(needs 0 < r < n, 0 < s <= n/2, v of 27 or 28)"
            )
        try:
            return recover_typed(
                self.domain, UPDATE_RECORD_TYPES, self.record.message(), self.signature
            )
        # eth-account reports an unusable signature with any of these, depending on the defect.
        except (BadSignature, ValidationError, ValueError) as exc:
            raise RecordSignatureError(f"update record signature is invalid: {exc}") from None

    def verify(self, domain: Domain) -> None:
        """Checks that the participant signed exactly this record for deployment ``domain``.

        ``domain`` is the deployment the verifier trusts (its chain id and TrainingLedger
        address), not the one the record names: a record validly signed for another chain or
        deployment must be refused, not accepted on its own say-so.

        Raises:
            RecordSignatureError: for a record signed for another deployment, a malformed
                signature, or a record altered after signing or signed by another key.
        """
        mine, expected = self.domain, domain
        if (mine.chain_id, mine.verifying_contract.lower()) != (
            expected.chain_id,
            expected.verifying_contract.lower(),
        ):
            raise RecordSignatureError(
                f"update record is signed for chain {mine.chain_id} contract "
                f"{mine.verifying_contract}, expected chain {expected.chain_id} contract "
                f"{expected.verifying_contract}"
            )
        signer = self.recover()
        if signer != self.record.participant:
            raise RecordSignatureError(
                f"update record of participant {self.record.participant} is signed by "
                f"{signer}: altered after signing, or signed with another key"
            )

    def to_json(self) -> dict[str, Any]:
        """The fixed JSON form ``consortium.update-record/1`` that audit bundles hold."""
        record = self.record
        return {
            "format": UPDATE_RECORD_FORMAT,
            "chainId": self.domain.chain_id,
            "verifyingContract": self.domain.verifying_contract,
            "jobId": record.job_id,
            "round": record.round,
            "participant": record.participant,
            "updateDigest": record.update_digest.hex(),
            "baseModelDigest": record.base_model_digest.hex(),
            "numExamples": record.num_examples,
            "metricsDigest": record.metrics_digest.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> SignedUpdateRecord:
        """Parses the JSON form strictly; the exact inverse of :meth:`to_json`.

        Does not check the signature (see :meth:`verify`): a bundle with a bad signature must
        still be readable to be reported.

        Raises:
            UsageError: naming the field, for a missing, unknown or malformed field.
        """
        if not isinstance(obj, dict):
            raise UsageError(f"an update record must be a JSON object, not {type(obj).__name__}")
        missing = [field for field in _JSON_FIELDS if field not in obj]
        if missing:
            raise UsageError(f"update record lacks field(s) {', '.join(map(repr, missing))}")
        unknown = [field for field in obj if field not in _JSON_FIELDS]
        if unknown:
            raise UsageError(f"update record has unknown field(s) {', '.join(map(repr, unknown))}")
        if obj["format"] != UPDATE_RECORD_FORMAT:
            raise _field_error("format", repr(UPDATE_RECORD_FORMAT))
        signature = obj["signature"]
        if not isinstance(signature, str) or not _SIGNATURE_HEX.fullmatch(signature):
            raise _field_error("signature", "130 lowercase hex digits without a 0x prefix")
        record = UpdateRecord(
            job_id=obj["jobId"],
            round=obj["round"],
            participant=obj["participant"],
            update_digest=_digest_field(obj, "updateDigest"),
            base_model_digest=_digest_field(obj, "baseModelDigest"),
            num_examples=obj["numExamples"],
            metrics_digest=_digest_field(obj, "metricsDigest"),
        )
        domain = Domain(chain_id=obj["chainId"], verifying_contract=obj["verifyingContract"])
        return cls(domain=domain, record=record, signature=bytes.fromhex(signature))

    def leaf(self) -> bytes:
        """The Merkle leaf of this record: the JCS bytes of its JSON form."""
        return jcs(self.to_json())


def _digest_field(obj: dict[str, Any], field: str) -> bytes:
    return from_hex32(obj[field], what=f"update record field {field!r}")


def sign_update_record(
    account: LocalAccount, domain: Domain, record: UpdateRecord
) -> SignedUpdateRecord:
    """Signs ``record`` for deployment ``domain`` with the participant's own key.

    Refuses another key, since the signature would never verify, and a well-known development
    key on a non-local chain, since anyone could then forge the participant's records.
    """
    if account.address != record.participant:
        raise UsageError(
            f"account {account.address} cannot sign the update record of participant "
            f"{record.participant}"
        )
    refuse_dev_key(account.address, domain.chain_id)
    signature = sign_typed(account, domain, UPDATE_RECORD_TYPES, record.message())
    return SignedUpdateRecord(domain=domain, record=record, signature=signature)


def sort_key(signed: SignedUpdateRecord) -> str:
    """The Merkle leaf order of a record: its participant address as lowercase hex."""
    return signed.record.participant.lower()


def sort_records(records: Iterable[SignedUpdateRecord]) -> list[SignedUpdateRecord]:
    """The records of one round in Merkle leaf order, participant address ascending.

    Two records of the same participant are refused: their order, and so the root, would be
    arbitrary.
    """
    ordered = sorted(records, key=sort_key)
    for before, after in pairwise(ordered):
        if sort_key(before) == sort_key(after):
            raise UsageError(
                f"two update records of participant {after.record.participant} in one round"
            )
    return ordered
