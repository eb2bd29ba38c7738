"""Reverts read the same on both backends, whichever way the chain reports them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_abi import abi
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed as EthTesterFailure
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from consortium.chain.base import Chain
from consortium.chain.reverts import ERROR_SELECTOR, PANIC_SELECTOR, RevertDecoder
from consortium.chain.transact import Transactor
from consortium.errors import ChainRevert, TransactionFailed, TransactionRejected

MEMBER = to_checksum_address("0x00000000000000000000000000000000deadbeef")
PROPOSAL = bytes(range(32))
DEADLINE = 1_700_000_000

# (function, arguments) -> (error name, decoded arguments, message); the same on every backend
# and on every path (gas estimate, eth_call, replay of a mined failure).
CASES: list[tuple[str, tuple[Any, ...], str, dict[str, Any], str]] = [
    (
        "failCustom",
        (MEMBER,),
        "NotMember",
        {"account": MEMBER},
        f"{MEMBER} is not an active member.",
    ),
    (
        "failExpired",
        (PROPOSAL, DEADLINE),
        "Expired",
        {"proposalId": PROPOSAL, "deadline": DEADLINE},
        f"Proposal 0x{PROPOSAL.hex()} expired at {DEADLINE}; `nobody` is not a parameter.",
    ),
    (
        "failUndocumented",
        (),
        "Undocumented",
        {"code": 7, "what": "seven", "delta": -3},
        "Undocumented(code=7, what=seven, delta=-3)",
    ),
    ("failNoArgs", (), "NoArgs", {}, "NoArgs()"),
    ("failRequire", (), "Error", {"reason": "counter must be zero"}, "counter must be zero"),
    ("failPanic", (0,), "Panic", {"code": 0x12}, "panic 0x12: division or modulo by zero"),
    ("failEmpty", (), "EmptyRevert", {}, "reverted without a reason"),
    (
        "viewCustom",
        (MEMBER,),
        "NotMember",
        {"account": MEMBER},
        f"{MEMBER} is not an active member.",
    ),
]
CASE_IDS = [case[0] for case in CASES]


class Probe:
    """The test contract deployed on one chain, with a funded sender."""

    def __init__(self, chain: Chain, artifact: dict[str, Any]) -> None:
        self.chain = chain
        self.account: LocalAccount = Account.create()
        chain.fund(self.account.address, 10**19)
        self.decoder = RevertDecoder([artifact["abi"]], [artifact["userdoc"]])
        self.transactor = Transactor(chain, self.account, self.decoder)
        address, _ = self.transactor.deploy(artifact["abi"], artifact["bytecode"])
        self.contract: Contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])

    def fn(self, name: str, args: tuple[Any, ...]) -> ContractFunction:
        return self.contract.functions[name](*args)

    def via_estimate(self, fn: ContractFunction) -> None:
        nonce = self.nonce()
        try:
            self.transactor.send(fn)
        finally:
            assert self.nonce() == nonce, "the revert must surface before anything is sent"

    def via_call(self, fn: ContractFunction) -> None:
        self.transactor.call(fn)

    def via_mined_failure(self, fn: ContractFunction, gas: int = 300_000) -> None:
        """Sends ``fn`` with a fixed gas limit, which skips the estimate, so it is mined."""
        tx = fn.build_transaction(
            {
                "from": self.account.address,
                "gas": gas,
                "nonce": self.nonce(),
                "chainId": self.chain.chain_id,
                **self.chain.fee_fields(),  # type: ignore[typeddict-item]
            }
        )
        tx_hash = self.chain.w3.eth.send_raw_transaction(
            self.account.sign_transaction(tx).raw_transaction
        )
        try:
            self.transactor.confirm(tx_hash)
        finally:
            assert self.chain.w3.eth.get_transaction_receipt(tx_hash)["status"] == 0

    def nonce(self) -> int:
        return self.chain.w3.eth.get_transaction_count(self.account.address)

    def outcome(
        self, path: str, name: str, args: tuple[Any, ...]
    ) -> tuple[str, dict[str, Any], str]:
        send: Callable[[ContractFunction], None] = getattr(self, path)
        with pytest.raises(ChainRevert) as caught:
            send(self.fn(name, args))
        return caught.value.name, caught.value.args_by_name, str(caught.value)


PATHS = ["via_estimate", "via_call", "via_mined_failure"]


@pytest.mark.parametrize("path", PATHS)
def test_reverts_decode_to_the_contract_errors(
    chain: Chain, revert_probe: dict[str, Any], path: str
) -> None:
    probe = Probe(chain, revert_probe)
    for function, args, name, decoded, message in CASES:
        assert probe.outcome(path, function, args) == (name, decoded, message), function


@pytest.mark.anvil
def test_both_backends_report_identical_reverts(
    embedded_chain: Chain, anvil_chain: Chain, revert_probe: dict[str, Any]
) -> None:
    probes = [Probe(embedded_chain, revert_probe), Probe(anvil_chain, revert_probe)]
    outcomes = [
        [probe.outcome(path, function, args) for path in PATHS for function, args, *_ in CASES]
        for probe in probes
    ]
    assert outcomes[0] == outcomes[1]


def test_send_returns_the_successful_receipt(chain: Chain, revert_probe: dict[str, Any]) -> None:
    probe = Probe(chain, revert_probe)
    receipt = probe.transactor.send(probe.contract.functions.bump())
    assert receipt["status"] == 1
    assert probe.transactor.call(probe.contract.functions.counter()) == 1
    assert Transactor.call_view(probe.contract.functions.counter(), probe.decoder) == 1


def test_mined_failure_without_a_reason_names_the_transaction(
    chain: Chain, revert_probe: dict[str, Any]
) -> None:
    probe = Probe(chain, revert_probe)
    # Enough for the intrinsic cost, not for the storage write: out of gas, no revert data.
    with pytest.raises(TransactionFailed, match=r"transaction 0x[0-9a-f]{64} failed in block"):
        probe.via_mined_failure(probe.contract.functions.bump(), gas=22_000)


def test_unfunded_sender_is_rejected(chain: Chain, revert_probe: dict[str, Any]) -> None:
    probe = Probe(chain, revert_probe)
    broke = Transactor(chain, Account.create(), probe.decoder)
    with pytest.raises(TransactionRejected, match="rejected the transaction from"):
        broke.send(probe.contract.functions.bump())


# Decoding without a chain: every shape of data and exception.

ABI = [
    {
        "type": "error",
        "name": "Mixed",
        "inputs": [
            {"name": "", "type": "bool"},
            {"name": "who", "type": "address[]"},
            {
                "name": "pair",
                "type": "tuple",
                "components": [
                    {"name": "id", "type": "bytes4"},
                    {"name": "note", "type": "string"},
                ],
            },
        ],
    },
    {"type": "error", "name": "Noted", "inputs": [{"name": "amount", "type": "uint256"}]},
    {"type": "function", "name": "ignored", "inputs": [], "outputs": []},
]
USERDOC = {"errors": {"Noted(uint256)": [{"notice": "`amount` is too much, `amount`!"}]}}
DECODER = RevertDecoder([ABI], [USERDOC])
ADDRESS = to_checksum_address("0x" + "ab" * 20)


def encoded(signature: str, types: list[str], values: list[Any]) -> bytes:
    return function_signature_to_4byte_selector(signature) + abi.encode(types, values)


def test_struct_array_and_unnamed_arguments() -> None:
    data = encoded(
        "Mixed(bool,address[],(bytes4,string))",
        ["bool", "address[]", "(bytes4,string)"],
        [True, [ADDRESS.lower()], (b"\x01\x02\x03\x04", "hi")],
    )
    revert = DECODER.decode(data)
    assert revert.name == "Mixed"
    assert revert.args_by_name == {
        "arg0": True,
        "who": [ADDRESS],
        "pair": (b"\x01\x02\x03\x04", "hi"),
    }
    assert str(revert) == f"Mixed(arg0=true, who=[{ADDRESS}], pair=(0x01020304, hi))"


def test_notice_substitutes_every_occurrence() -> None:
    revert = DECODER.decode(encoded("Noted(uint256)", ["uint256"], [10**20]))
    assert str(revert) == f"{10**20} is too much, {10**20}!"


@pytest.mark.parametrize(
    ("data", "name", "args", "message"),
    [
        (b"", "EmptyRevert", {}, "reverted without a reason"),
        (
            ERROR_SELECTOR + abi.encode(["string"], ["nope"]),
            "Error",
            {"reason": "nope"},
            "nope",
        ),
        (
            PANIC_SELECTOR + abi.encode(["uint256"], [0x01]),
            "Panic",
            {"code": 1},
            "panic 0x01: assertion failed",
        ),
        (
            PANIC_SELECTOR + abi.encode(["uint256"], [0x99]),
            "Panic",
            {"code": 0x99},
            "panic 0x99: unknown panic code",
        ),
        (
            bytes.fromhex("deadbeef01"),
            "UnknownError",
            {"selector": "0xdeadbeef", "data": "0xdeadbeef01"},
            "unknown error 0xdeadbeef (revert data 0xdeadbeef01)",
        ),
    ],
    ids=["empty", "error-string", "panic", "unknown-panic", "unknown-selector"],
)
def test_builtin_and_unknown_errors(
    data: bytes, name: str, args: dict[str, Any], message: str
) -> None:
    revert = DECODER.decode(data)
    assert (revert.name, revert.args_by_name, str(revert)) == (name, args, message)


def test_malformed_data_of_a_known_error_is_kept_as_hex() -> None:
    truncated = encoded("Noted(uint256)", ["uint256"], [1])[:10]
    assert DECODER.decode(truncated).name == "UnknownError"


NOTED = encoded("Noted(uint256)", ["uint256"], [5])


def _rpc_error(error: dict[str, Any]) -> Web3RPCError:
    """What web3 raises for an error response it does not recognise as a revert (Besu's
    "Execution reverted", capitalised, is one)."""
    response = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, **error}}
    return Web3RPCError(str(response["error"]), rpc_response=response)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ContractCustomError(HexBytes(NOTED).to_0x_hex(), data=HexBytes(NOTED).to_0x_hex()), NOTED),
        (ContractLogicError("execution reverted", data=None), b""),
        (ContractLogicError("execution reverted", data="no data"), b""),
        (ContractLogicError("reverted", data={"data": HexBytes(NOTED).to_0x_hex()}), NOTED),
        (_rpc_error({"message": "Execution reverted", "data": HexBytes(NOTED).to_0x_hex()}), NOTED),
        (_rpc_error({"message": "Execution reverted"}), b""),
        (_rpc_error({"message": "EVM error OutOfGas"}), None),
        (EthTesterFailure(f"execution reverted: {NOTED!r}"), NOTED),
        (
            EthTesterFailure("execution reverted: plain"),
            ERROR_SELECTOR + abi.encode(["string"], ["plain"]),
        ),
        (ValueError("not a revert"), None),
    ],
    ids=[
        "custom",
        "logic-none",
        "logic-no-data",
        "logic-dict",
        "rpc-data",
        "rpc-revert-no-data",
        "rpc-no-revert",
        "tester-bytes",
        "tester-text",
        "other",
    ],
)
def test_revert_data_shapes(exc: Exception, expected: bytes | None) -> None:
    revert = DECODER.from_exception(exc)
    if expected is None:
        assert revert is None
    else:
        decoded = DECODER.decode(expected)
        assert revert is not None
        assert (revert.name, revert.args_by_name, str(revert)) == (
            decoded.name,
            decoded.args_by_name,
            str(decoded),
        )
