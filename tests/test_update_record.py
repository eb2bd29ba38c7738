"""Tests of the signed UpdateRecord: EIP-712 binding to chain, deployment and every field, the
fixed JSON form and its strict parser, the Merkle leaf, and the leaf order."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from eth_account import Account
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from signatures import non_canonical_forms

from consortium.crypto.devkeys import ANVIL_KEYS
from consortium.crypto.eip712 import UPDATE_RECORD_TYPES, Domain, sign_typed
from consortium.crypto.update_record import (
    MAX_JSON_INTEGER,
    MAX_ROUND,
    UPDATE_RECORD_FORMAT,
    RecordSignatureError,
    SignedUpdateRecord,
    UpdateRecord,
    sign_update_record,
    sort_key,
    sort_records,
)
from consortium.errors import KeystoreError, UsageError

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ACCOUNT = Account.from_key(KEY)
OTHER = Account.from_key("0x" + "a1" * 32)
LEDGER = to_checksum_address("0x5fbdb2315678afecb367f032d93f642f64180aa3")
DOMAIN = Domain(31337, LEDGER)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


RECORD = UpdateRecord(
    job_id=7,
    round=3,
    participant=ACCOUNT.address,
    update_digest=sha256(b"update"),
    base_model_digest=sha256(b"base model"),
    num_examples=1200,
    metrics_digest=sha256(b"metrics"),
)

# Pinned once; RFC 6979 makes the signature a function of key and message alone, so a change
# here means the EIP-712 type, domain or field encoding changed and old records no longer verify.
KNOWN_SIGNATURE = (
    "1f3aa22ee5a3c67c76a9aab74d03fc6eebb1f52198c48d8265fa2e40793f4d8a"
    "4bcea9d29448edd8206fd71fe036f5f334c8b28f0e89baed20bfd09de8cb9bc3"
    "1b"
)
KNOWN_LEAF = (
    b'{"baseModelDigest":"50629b5db748be1071182bea955872390498f78a016a2d19252f3a72e897dc1c",'
    b'"chainId":31337,"format":"consortium.update-record/1","jobId":7,'
    b'"metricsDigest":"177a7ea3611fe6b138557deaf44941614b66c0ece1766308044c8b65c8ba2123",'
    b'"numExamples":1200,"participant":"0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",'
    b'"round":3,"signature":"' + KNOWN_SIGNATURE.encode() + b'",'
    b'"updateDigest":"2937013f2181810606b2a799b05bda2849f3e369a20982a4138f0e0a55984ce4",'
    b'"verifyingContract":"0x5FbDB2315678afecb367f032d93F642f64180aa3"}'
)

FAST = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def signed() -> SignedUpdateRecord:
    return sign_update_record(ACCOUNT, DOMAIN, RECORD)


def with_field(obj: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    return {**obj, field: value}


def test_sign_verify_round_trip(signed: SignedUpdateRecord) -> None:
    signed.verify(DOMAIN)
    assert signed.recover() == ACCOUNT.address
    text = json.dumps(signed.to_json(), indent=2)
    parsed = SignedUpdateRecord.from_json(json.loads(text))
    assert parsed == signed
    parsed.verify(DOMAIN)
    assert parsed.leaf() == signed.leaf()


def test_json_form_is_the_fixed_format(signed: SignedUpdateRecord) -> None:
    assert signed.to_json() == {
        "format": "consortium.update-record/1",
        "chainId": 31337,
        "verifyingContract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "jobId": 7,
        "round": 3,
        "participant": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        "updateDigest": sha256(b"update").hex(),
        "baseModelDigest": sha256(b"base model").hex(),
        "numExamples": 1200,
        "metricsDigest": sha256(b"metrics").hex(),
        "signature": signed.signature.hex(),
    }
    assert len(signed.to_json()["signature"]) == 130
    assert signed.leaf() == rfc8785.dumps(signed.to_json())


def test_signature_and_leaf_are_deterministic(signed: SignedUpdateRecord) -> None:
    again = sign_update_record(ACCOUNT, DOMAIN, RECORD)
    assert again == signed
    assert signed.signature.hex() == KNOWN_SIGNATURE
    assert signed.leaf() == KNOWN_LEAF


def test_signature_is_over_the_eip712_digest_a_contract_would_compute(
    signed: SignedUpdateRecord,
) -> None:
    """The typed-data hash written out with keccak and ABI words, as Solidity would do it."""

    def word(value: int | bytes | str) -> bytes:
        if isinstance(value, str):  # address
            return bytes(12) + bytes.fromhex(value[2:])
        if isinstance(value, bytes):
            return value
        return value.to_bytes(32)

    domain_type = (
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    domain_separator = keccak(
        keccak(domain_type)
        + keccak(b"ConsortiumLedger")
        + keccak(b"1")
        + word(DOMAIN.chain_id)
        + word(LEDGER)
    )
    record_type = (
        b"UpdateRecord(uint256 jobId,uint32 round,address participant,bytes32 updateDigest,"
        b"bytes32 baseModelDigest,uint64 numExamples,bytes32 metricsDigest)"
    )
    struct_hash = keccak(
        keccak(record_type)
        + word(RECORD.job_id)
        + word(RECORD.round)
        + word(RECORD.participant)
        + word(RECORD.update_digest)
        + word(RECORD.base_model_digest)
        + word(RECORD.num_examples)
        + word(RECORD.metrics_digest)
    )
    digest = keccak(b"\x19\x01" + domain_separator + struct_hash)
    sig = signed.signature
    signature = keys.Signature(
        vrs=(sig[64] - 27, int.from_bytes(sig[:32]), int.from_bytes(sig[32:64]))
    )
    public_key = signature.recover_public_key_from_msg_hash(digest)
    assert public_key.to_checksum_address() == ACCOUNT.address


@pytest.mark.parametrize(
    "other_domain",
    [Domain(1, LEDGER), Domain(31337, to_checksum_address("0x" + "e7" * 20))],
    ids=["other-chain", "other-contract"],
)
def test_a_record_signed_for_another_deployment_fails(other_domain: Domain) -> None:
    foreign = sign_update_record(ACCOUNT, other_domain, RECORD)
    foreign.verify(other_domain)
    with pytest.raises(RecordSignatureError, match=r"^update record is signed for chain \d+"):
        foreign.verify(DOMAIN)
    # Relabelling it for our deployment does not help: the signature covers the domain.
    relabelled = with_field(foreign.to_json(), "chainId", DOMAIN.chain_id)
    relabelled["verifyingContract"] = DOMAIN.verifying_contract
    with pytest.raises(RecordSignatureError, match=r" is signed by 0x[0-9a-fA-F]{40}: altered"):
        SignedUpdateRecord.from_json(relabelled).verify(DOMAIN)


def test_expected_domain_may_spell_the_contract_in_lower_case(signed: SignedUpdateRecord) -> None:
    signed.verify(Domain(DOMAIN.chain_id, LEDGER.lower()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jobId", 8),
        ("round", 4),
        ("participant", OTHER.address),
        ("updateDigest", sha256(b"other update").hex()),
        ("baseModelDigest", sha256(b"other base").hex()),
        ("numExamples", 1201),
        ("metricsDigest", sha256(b"other metrics").hex()),
    ],
)
def test_any_field_changed_after_signing_fails(
    signed: SignedUpdateRecord, field: str, value: object
) -> None:
    altered = SignedUpdateRecord.from_json(with_field(signed.to_json(), field, value))
    with pytest.raises(RecordSignatureError, match=r"^update record of participant 0x"):
        altered.verify(DOMAIN)


def test_a_record_signed_by_another_key_fails() -> None:
    signature = sign_typed(OTHER, DOMAIN, UPDATE_RECORD_TYPES, RECORD.message())
    forged = SignedUpdateRecord(DOMAIN, RECORD, signature)
    assert forged.recover() == OTHER.address
    with pytest.raises(
        RecordSignatureError,
        match=rf"^update record of participant {ACCOUNT.address} is signed by {OTHER.address}: ",
    ):
        forged.verify(DOMAIN)


def test_non_canonical_spellings_of_a_valid_signature_are_refused(
    signed: SignedUpdateRecord,
) -> None:
    for signature in non_canonical_forms(signed.signature):
        respelled = SignedUpdateRecord(DOMAIN, RECORD, signature)
        with pytest.raises(RecordSignatureError, match="not a canonical secp256k1 signature"):
            respelled.verify(DOMAIN)


@pytest.mark.parametrize(
    "signature",
    [
        bytes(65),
        b"\xff" * 65,
        (5).to_bytes(32) + (1).to_bytes(32) + b"\x1b",  # r is no x-coordinate on the curve
        b"\x01" * 64 + b"\x05",
    ],
    ids=["zeros", "ones", "r-off-curve", "bad-v"],
)
def test_garbage_signatures_raise_record_signature_error(signature: bytes) -> None:
    with pytest.raises(RecordSignatureError, match=r"^update record signature is "):
        SignedUpdateRecord(DOMAIN, RECORD, signature).verify(DOMAIN)


@FAST
@given(st.binary(min_size=65, max_size=65))
def test_random_signatures_never_verify(signature: bytes) -> None:
    with pytest.raises(RecordSignatureError):
        SignedUpdateRecord(DOMAIN, RECORD, signature).verify(DOMAIN)


def test_sign_refuses_a_key_that_is_not_the_participant() -> None:
    with pytest.raises(
        UsageError,
        match=rf"^account {OTHER.address} cannot sign the update record of participant ",
    ):
        sign_update_record(OTHER, DOMAIN, RECORD)


def test_sign_refuses_development_keys_on_real_chains() -> None:
    dev = Account.from_key(ANVIL_KEYS[1])
    record = UpdateRecord(**{**RECORD.__dict__, "participant": dev.address})
    sign_update_record(dev, DOMAIN, record).verify(DOMAIN)  # local chain: fine
    with pytest.raises(KeystoreError, match="well-known development key"):
        sign_update_record(dev, Domain(1, LEDGER), record)


BAD_JSON: list[tuple[str, object, str]] = [
    ("format", "consortium.update-record/2", r"'format' must be 'consortium.update-record/1'"),
    ("chainId", "31337", r"'chainId' must be an integer, not str"),
    ("chainId", 0, r"'chainId' must be between 1 and 2\*\*53 - 1, not 0"),
    ("verifyingContract", LEDGER.lower(), r"'verifyingContract' must be an EIP-55 checksummed"),
    ("jobId", -1, r"'jobId' must be between 0 and 2\*\*53 - 1, not -1"),
    ("jobId", MAX_JSON_INTEGER + 1, r"'jobId' must be between 0 and 2\*\*53 - 1"),
    ("round", MAX_ROUND + 1, r"'round' must be between 0 and 2\*\*32 - 1"),
    ("jobId", True, r"'jobId' must be an integer, not bool"),
    ("round", 3.0, r"'round' must be an integer, not float"),
    ("participant", ACCOUNT.address.lower(), r"'participant' must be an EIP-55 checksummed"),
    ("participant", "0x1234", r"'participant' must be an EIP-55 checksummed"),
    ("participant", None, r"'participant' must be an EIP-55 checksummed"),
    ("updateDigest", sha256(b"update").hex().upper(), r"'updateDigest' must be 64 lowercase hex"),
    ("baseModelDigest", "0x" + sha256(b"x").hex(), r"'baseModelDigest' must be 64 lowercase hex"),
    ("metricsDigest", sha256(b"x").hex()[:62], r"'metricsDigest' must be 64 lowercase hex"),
    ("metricsDigest", list(sha256(b"x")), r"'metricsDigest' must be 64 lowercase hex"),
    ("numExamples", "1200", r"'numExamples' must be an integer, not str"),
    ("signature", "00" * 64, r"'signature' must be 130 lowercase hex digits without a 0x prefix"),
    ("signature", "0x" + "00" * 65, r"'signature' must be 130 lowercase hex digits"),
    ("signature", "AB" * 65, r"'signature' must be 130 lowercase hex digits"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_JSON)
def test_from_json_names_the_bad_field(
    signed: SignedUpdateRecord, field: str, value: object, message: str
) -> None:
    with pytest.raises(UsageError, match=rf"^update record field {message}"):
        SignedUpdateRecord.from_json(with_field(signed.to_json(), field, value))


def test_from_json_refuses_missing_and_unknown_fields(signed: SignedUpdateRecord) -> None:
    obj = signed.to_json()
    del obj["round"], obj["signature"]
    with pytest.raises(UsageError, match=r"^update record lacks field\(s\) 'round', 'signature'$"):
        SignedUpdateRecord.from_json(obj)
    with pytest.raises(UsageError, match=r"^update record has unknown field\(s\) 'note'$"):
        SignedUpdateRecord.from_json(with_field(signed.to_json(), "note", "hi"))
    with pytest.raises(UsageError, match=r"^an update record must be a JSON object, not list$"):
        SignedUpdateRecord.from_json([signed.to_json()])


def test_records_built_in_code_are_validated_too() -> None:
    with pytest.raises(UsageError, match=r"^update record field 'updateDigest' must be 32 bytes$"):
        UpdateRecord(**{**RECORD.__dict__, "update_digest": bytes(31)})
    with pytest.raises(UsageError, match=r"^update record field 'participant' must be an EIP-55"):
        UpdateRecord(**{**RECORD.__dict__, "participant": ACCOUNT.address.lower()})
    with pytest.raises(UsageError, match=r"^update record field 'signature' must be 65 bytes$"):
        SignedUpdateRecord(DOMAIN, RECORD, bytes(64))


RECORDS = st.builds(
    UpdateRecord,
    job_id=st.integers(0, MAX_JSON_INTEGER),
    round=st.integers(0, MAX_ROUND),
    participant=st.binary(min_size=20, max_size=20).map(to_checksum_address),
    update_digest=st.binary(min_size=32, max_size=32),
    base_model_digest=st.binary(min_size=32, max_size=32),
    num_examples=st.integers(0, MAX_JSON_INTEGER),
    metrics_digest=st.binary(min_size=32, max_size=32),
)


@settings(max_examples=100, deadline=None)
@given(RECORDS, st.binary(min_size=65, max_size=65), st.integers(1, MAX_JSON_INTEGER))
def test_json_and_leaf_round_trip(record: UpdateRecord, signature: bytes, chain_id: int) -> None:
    signed = SignedUpdateRecord(Domain(chain_id, LEDGER), record, signature)
    leaf = signed.leaf()
    parsed = SignedUpdateRecord.from_json(json.loads(leaf))
    assert parsed == signed
    assert parsed.leaf() == leaf
    assert parsed.to_json()["format"] == UPDATE_RECORD_FORMAT


def unsigned(participant: str) -> SignedUpdateRecord:
    record = UpdateRecord(**{**RECORD.__dict__, "participant": to_checksum_address(participant)})
    return SignedUpdateRecord(DOMAIN, record, bytes(65))


def test_records_sort_by_lowercase_participant_address() -> None:
    addresses = [to_checksum_address(keccak(bytes([i]))[:20]) for i in range(24)]
    records = [unsigned(address) for address in addresses]
    # EIP-55 capitals sort before every lower-case letter, so the spelling must not decide.
    assert sorted(addresses) != sorted(addresses, key=str.lower)
    ordered = sort_records(records)
    assert [r.record.participant for r in ordered] == sorted(addresses, key=lambda a: int(a, 16))
    assert [sort_key(r) for r in ordered] == sorted(a.lower() for a in addresses)
    assert sort_records(reversed(records)) == ordered


def test_two_records_of_one_participant_are_refused() -> None:
    first = unsigned(ACCOUNT.address)
    second = SignedUpdateRecord(DOMAIN, first.record, b"\x01" * 65)
    with pytest.raises(
        UsageError, match=rf"^two update records of participant {ACCOUNT.address} in one round$"
    ):
        sort_records([first, unsigned(OTHER.address), second])
