"""The embedded chain: eth-tester on py-evm, in this process, behind the same :class:`Chain`.

Imported only when an embedded chain is asked for (:func:`consortium.chain.backend.connect`),
since py-evm and eth-tester are slow to import and every other command talks to a node.
"""

from __future__ import annotations

import ast
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from eth.abc import SignedTransactionAPI, StateAPI
from eth.estimators.gas import binary_gas_search
from eth.exceptions import PyEVMError
from eth.vm.spoof import SpoofTransaction
from eth_abi import abi
from eth_abi.exceptions import DecodingError
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed as EthTesterFailure
from eth_tester.exceptions import ValidationError as EthTesterValidationError
from eth_utils import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint, RPCResponse

from consortium.chain.base import BLOCK_GAS_LIMIT, Chain, lean
from consortium.chain.reverts import ERROR_SELECTOR
from consortium.crypto.devkeys import ETH_TESTER_KEYS

_REVERTED = "execution reverted"
# Added to an estimate from one run; covers gas that depends on the gas left (e.g. CALL's 1/64).
_ESTIMATE_MARGIN = 5_000


class _RawRevertBackend(PyEVMBackend):
    """py-evm backend that keeps revert data intact.

    Stock eth-tester decodes ``Error(string)`` data into its text on ``eth_call`` and lets web3
    try to decode every revert of ``eth_estimateGas`` as a string, which turns a custom error
    with one string argument into an indistinguishable plain reason. Here every revert carries
    ``repr(data)`` so that :class:`_EmbeddedProvider` can recover the exact bytes.
    """

    def is_eip838_error(self, error: Exception) -> bool:
        return False

    def estimate_gas(self, transaction: dict[str, Any], block_number: Any = "latest") -> int:
        self.chain.gas_estimator = _run_once_gas_estimate  # the chain object is replaced on reverts
        try:
            return super().estimate_gas(transaction, block_number)
        except EthTesterFailure as exc:
            inner = exc.args[0] if exc.args else None
            if isinstance(inner, Exception):
                raise EthTesterFailure(str(inner)) from exc
            raise


def _run_once_gas_estimate(state: StateAPI, transaction: SignedTransactionAPI) -> int:
    """A gas estimate from one run at the block limit, checked by a second run.

    py-evm's binary search runs a transaction about seventeen times per estimate, which is
    most of what an anchor costs on the embedded chain. One run tells the gas the execution
    used (before refunds); with the 1/64 that every call must leave behind and a margin, a
    second run confirms the figure is enough. Anything unusual falls back to the search, which
    also raises the revert that the first run hit.
    """
    with _reverted(state):
        computation = state.apply_transaction(
            SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
        )
    if not computation.is_error:
        used = transaction.intrinsic_gas + computation.get_gas_used()
        candidate = min(used * 64 // 63 + _ESTIMATE_MARGIN, state.gas_limit)
        with _reverted(state):
            checked = state.apply_transaction(
                SpoofTransaction(transaction, gas=candidate, gas_price=0)
            )
        if not checked.is_error:
            return candidate
    return binary_gas_search(state, transaction)


@contextlib.contextmanager
def _reverted(state: StateAPI) -> Iterator[None]:
    snapshot = state.snapshot()
    try:
        yield
    finally:
        state.revert(snapshot)


class _EmbeddedProvider(EthereumTesterProvider):
    """EthereumTesterProvider whose failures look like a JSON-RPC node's.

    eth-tester raises Python exceptions (its own TransactionFailed, py-evm's OutOfGas, ...)
    where a node answers with a JSON-RPC error; turning them into error responses lets web3
    raise the same exceptions, with the same revert data, as it does against anvil or Besu.
    """

    def __init__(self, tester: EthereumTester) -> None:
        super().__init__(tester)
        # py-evm is not thread-safe; a pipelined coordinator reads and sends from two threads,
        # as a node's clients do, so requests are served one at a time, as a node serves them.
        self._serving = threading.Lock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._serving:
            return self._serve(method, params)

    def _serve(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_call" and params:
            params = self._node_call(*params)
        try:
            return super().make_request(method, params)
        except EthTesterFailure as exc:
            return self._error(_revert_error(str(exc.args[0]) if exc.args else ""))
        except ContractLogicError as exc:  # web3's eth-tester glue decodes some reverts itself
            data = exc.data if isinstance(exc.data, str) else "0x"
            return self._error({"code": 3, "message": _REVERTED, "data": data})
        except (EthTesterValidationError, EthValidationError, PyEVMError) as exc:
            return self._error({"code": -32000, "message": str(exc)})

    def _node_call(self, request: dict[str, Any], block: Any = "latest") -> list[Any]:
        """An ``eth_call`` as a node takes it, as eth-tester takes it: a sender (the first
        account, where the caller named none) and a block number as an integer, not hex."""
        if "from" not in request:
            request = {**request, "from": self.ethereum_tester.get_accounts()[0]}
        if isinstance(block, str) and block.startswith("0x"):
            block = int(block, 16)
        return [request, block]

    def _error(self, error: dict[str, Any]) -> RPCResponse:
        response = {"jsonrpc": "2.0", "id": repr(self._current_request_id), "error": error}
        self._current_request_id += 1
        return response  # type: ignore[return-value]


def _revert_error(text: str) -> dict[str, Any]:
    """The JSON-RPC error a node sends for a failed call, from eth-tester's exception text."""
    literal = text.removeprefix(_REVERTED).removeprefix(": ")
    if not literal.startswith(("b'", 'b"')):  # not a revert: invalid opcode, stack error, ...
        return {"code": -32603, "message": f"EVM error: {literal}"}
    data = ast.literal_eval(literal)
    message = _REVERTED
    if data[:4] == ERROR_SELECTOR:
        with contextlib.suppress(DecodingError):
            message += f": {abi.decode(['string'], data[4:])[0]}"
    return {"code": 3, "message": message, "data": HexBytes(data).to_0x_hex()}


class EmbeddedChain(Chain):
    """A fresh in-process chain (eth-tester on py-evm) that auto-mines one block per tx.

    Each mined block gets a timestamp one second or more after its parent, so consecutive
    transactions see strictly increasing ``block.timestamp``. Never scan its logs from block 0:
    its ``eth_getLogs`` slows down with the square of the number of events.
    """

    def __init__(self) -> None:
        super().__init__()
        genesis = PyEVMBackend.generate_genesis_params(overrides={"gas_limit": BLOCK_GAS_LIMIT})
        self.tester = EthereumTester(_RawRevertBackend(genesis_parameters=genesis))
        self.w3 = lean(Web3(_EmbeddedProvider(self.tester)))
        self.chain_id = self.w3.eth.chain_id
        self.description = f"embedded eth-tester chain (chain id {self.chain_id})"
        self.poll_latency = 0.0  # every transaction is mined before send returns

    @property
    def _faucet_key(self) -> str:
        return ETH_TESTER_KEYS[0]

    def take_nonce(self, address: str) -> int:
        """Always the chain's own count: a request here costs no round trip, and a test may
        rewind the chain to a snapshot, which a count kept here would not follow."""
        return int(self.w3.eth.get_transaction_count(address, "pending"))  # type: ignore[arg-type]

    def _advance_clock(self, seconds: int) -> None:
        # time_travel mines one block at the given timestamp; the next tx lands one second later.
        pending = self.tester.get_block_by_number("pending")["timestamp"]
        if seconds:
            self.tester.time_travel(pending + seconds)

    def close(self) -> None:
        """Nothing to release: the chain lives in this process's memory until dropped."""
