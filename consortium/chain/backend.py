"""The one small interface everything above the chain talks to, and its two implementations.

Code above this module sees only standard Ethereum JSON-RPC through ``Chain.w3``, so the same
code runs on the in-process eth-tester chain (tests, one-process simulations) and on any node
(a local anvil, or a permissioned network such as Besu). The few facilities that only a
development chain offers (a faucet, moving the clock) live here, refuse to run on any other
chain, and are the only place that may use non-standard RPC methods.
"""

from __future__ import annotations

import ast
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import requests
from eth.abc import SignedTransactionAPI, StateAPI
from eth.estimators.gas import binary_gas_search
from eth.exceptions import PyEVMError
from eth.vm.spoof import SpoofTransaction
from eth_abi import abi
from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed as EthTesterFailure
from eth_tester.exceptions import ValidationError as EthTesterValidationError
from eth_utils import ValidationError as EthValidationError
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import TimeExhausted
from web3.types import BlockData, RPCEndpoint, RPCResponse, TxReceipt

from consortium.chain.reverts import ERROR_SELECTOR
from consortium.crypto.devkeys import ANVIL_KEYS, ETH_TESTER_KEYS, LOCAL_CHAIN_IDS
from consortium.errors import ChainUnavailable, TransactionFailed, UsageError

EMBEDDED = "embedded"
# Same as anvil's default, so that gas behaves alike on both backends; deployments need ~30M.
BLOCK_GAS_LIMIT = 30_000_000
_REVERTED = "execution reverted"
# Added to an estimate from one run; covers gas that depends on the gas left (e.g. CALL's 1/64).
_ESTIMATE_MARGIN = 5_000


class Chain(ABC):
    """A connected chain: a web3 handle plus what callers must know about the endpoint."""

    w3: Web3
    chain_id: int
    description: str
    poll_latency: float

    @property
    def is_local_dev(self) -> bool:
        """True on the throw-away development chains whose well-known keys hold the funds."""
        return self.chain_id in LOCAL_CHAIN_IDS

    @property
    @abstractmethod
    def _faucet_key(self) -> str:
        """The well-known prefunded development key that :meth:`fund` spends from."""

    @abstractmethod
    def _advance_clock(self, seconds: int) -> None:
        """Backend-specific part of :meth:`increase_time`."""

    def fund(self, address: str, wei: int) -> None:
        """Sends ``wei`` to ``address`` from the dev chain's prefunded account (dev chains only).

        The transfer is signed locally like every other transaction, so it works the same on
        nodes that hold no keys.
        """
        self._require_local_dev("fund accounts")
        faucet = Account.from_key(self._faucet_key)
        tx: dict[str, Any] = {
            "from": faucet.address,
            "to": to_checksum_address(address),
            "value": wei,
            "chainId": self.chain_id,
            "nonce": self.w3.eth.get_transaction_count(faucet.address, "pending"),
            **self.fee_fields(),
        }
        tx["gas"] = self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        tx_hash = self.w3.eth.send_raw_transaction(faucet.sign_transaction(tx).raw_transaction)
        if self.wait_for_receipt(tx_hash)["status"] != 1:
            raise TransactionFailed(f"funding {address} failed: {tx_hash.to_0x_hex()}")

    def increase_time(self, seconds: int) -> None:
        """Moves the chain's clock forward: the next block's timestamp is at least ``seconds``
        later than the latest one's (dev chains only).

        A development facility for tests and simulations that must see proposals expire or
        consent windows close without waiting; a real network's clock cannot be moved.
        """
        self._require_local_dev("move the clock")
        if seconds < 0:
            raise UsageError("the chain's clock only moves forward")
        self._advance_clock(seconds)

    def fee_fields(self, latest: BlockData | None = None) -> dict[str, int]:
        """Fee fields for a transaction sent now: EIP-1559 where the chain has a base fee,
        else a legacy gas price (permissioned networks often run without the London fee market).
        ``latest`` spares the read of the latest block to a caller that has just read it.
        """
        block = self.w3.eth.get_block("latest") if latest is None else latest
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": self.w3.eth.gas_price}
        tip = self.w3.eth.max_priority_fee
        # Twice the base fee keeps the transaction valid through several full blocks.
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip}

    def wait_for_receipt(self, tx_hash: HexBytes, timeout: float = 120.0) -> TxReceipt:
        """The receipt of ``tx_hash`` once mined, polled at this chain's poll latency."""
        try:
            return self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=timeout, poll_latency=self.poll_latency
            )
        except TimeExhausted:
            raise ChainUnavailable(
                f"transaction {tx_hash.to_0x_hex()} was not mined within {timeout:g} s "
                f"on {self.description}"
            ) from None

    @abstractmethod
    def close(self) -> None:
        """Releases the connection; the object is unusable afterwards."""

    def _require_local_dev(self, what: str) -> None:
        if not self.is_local_dev:
            local = ", ".join(str(i) for i in sorted(LOCAL_CHAIN_IDS))
            raise UsageError(
                f"cannot {what} on chain id {self.chain_id}: only local development chains "
                f"({local}) allow it"
            )


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

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except EthTesterFailure as exc:
            return self._error(_revert_error(str(exc.args[0]) if exc.args else ""))
        except (EthTesterValidationError, EthValidationError, PyEVMError) as exc:
            return self._error({"code": -32000, "message": str(exc)})

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
        genesis = PyEVMBackend.generate_genesis_params(overrides={"gas_limit": BLOCK_GAS_LIMIT})
        self.tester = EthereumTester(_RawRevertBackend(genesis_parameters=genesis))
        self.w3 = Web3(_EmbeddedProvider(self.tester))
        self.chain_id = self.w3.eth.chain_id
        self.description = f"embedded eth-tester chain (chain id {self.chain_id})"
        self.poll_latency = 0.0  # every transaction is mined before send returns

    @property
    def _faucet_key(self) -> str:
        return ETH_TESTER_KEYS[0]

    def _advance_clock(self, seconds: int) -> None:
        # time_travel mines one block at the given timestamp; the next tx lands one second later.
        pending = self.tester.get_block_by_number("pending")["timestamp"]
        if seconds:
            self.tester.time_travel(pending + seconds)

    def close(self) -> None:
        """Nothing to release: the chain lives in this process's memory until dropped."""


class RpcChain(Chain):
    """Any JSON-RPC endpoint over HTTP(S)."""

    def __init__(
        self,
        url: str,
        expected_chain_id: int | None = None,
        poll_latency: float = 0.05,
        *,
        request_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.poll_latency = poll_latency
        self._session = requests.Session()
        # web3 asks for the chain id around every call and estimate; an endpoint's chain id
        # does not change (connect() checks it once), so the provider answers from its cache.
        self.w3 = Web3(
            HTTPProvider(
                url,
                request_kwargs={"timeout": request_timeout},
                session=self._session,
                cache_allowed_requests=True,
                cacheable_requests={RPCEndpoint("eth_chainId")},
            )
        )
        client = self._probe()
        self.chain_id = self.w3.eth.chain_id
        if expected_chain_id is not None and self.chain_id != expected_chain_id:
            self.close()
            raise UsageError(
                f"{url} is chain id {self.chain_id}, but chain id {expected_chain_id} is configured"
            )
        self.description = f"{url} ({client}, chain id {self.chain_id})"

    def _probe(self) -> str:
        """The node's client version; ``web3_clientVersion`` is answered by every node and,
        unlike eth_* methods, is not retried by web3, so an unreachable URL fails fast."""
        try:
            response = self.w3.provider.make_request(RPCEndpoint("web3_clientVersion"), [])
        except requests.ConnectionError:
            self.close()
            raise ChainUnavailable(f"cannot reach {self.url}: connection refused") from None
        except requests.Timeout:
            self.close()
            raise ChainUnavailable(f"cannot reach {self.url}: timed out") from None
        except (requests.RequestException, ValueError) as exc:
            self.close()
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ChainUnavailable(f"cannot reach {self.url}: {reason}") from None
        return str(response.get("result", "unknown client"))

    @property
    def _faucet_key(self) -> str:
        return ANVIL_KEYS[0]

    def _advance_clock(self, seconds: int) -> None:
        # Dev-chain-only methods (anvil, hardhat, ganache); guarded by _require_local_dev.
        self.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
        self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    def close(self) -> None:
        self._session.close()


def connect(url: str, *, chain_id: int | None = None, poll_latency: float = 0.05) -> Chain:
    """The chain at ``url``: ``"embedded"`` for a fresh in-process chain, or an http(s) URL.

    ``chain_id``, when given, must match the endpoint's, so that a configuration pointing at
    the wrong network fails before anything is signed.
    """
    if url == EMBEDDED:
        chain: Chain = EmbeddedChain()
        if chain_id is not None and chain.chain_id != chain_id:
            raise UsageError(
                f"the embedded chain is chain id {chain.chain_id}, "
                f"but chain id {chain_id} is configured"
            )
        return chain
    if url.startswith(("http://", "https://")):
        return RpcChain(url, chain_id, poll_latency)
    raise UsageError(f"unsupported chain URL {url!r}: use 'embedded' or an http(s):// URL")
