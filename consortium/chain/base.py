"""What every chain connection offers the code above it, whichever backend carries it.

Code above the chain sees only standard Ethereum JSON-RPC through ``Chain.w3``, so the same code
runs on the in-process eth-tester chain (tests, one-process simulations) and on any node (a
local anvil, or a permissioned network such as Besu). The few facilities that only a
development chain offers (a faucet, moving the clock) live here, refuse to run on any other
chain, and are the only place that may use non-standard RPC methods.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.types import BlockData, TxReceipt

from consortium.crypto.devkeys import LOCAL_CHAIN_IDS
from consortium.errors import ChainUnavailable, TransactionFailed, TransactionRejected, UsageError

# Same as anvil's default, so that gas behaves alike on both backends; deployments need ~30M.
BLOCK_GAS_LIMIT = 30_000_000
TIP_TTL = 30.0
MAX_POLL_INTERVAL = 0.25
FUND_ATTEMPTS = 20
"""How often :meth:`Chain.fund` signs anew when another sender took the faucet's nonce; each
retry waits a random moment of up to :data:`FUND_BACKOFF` seconds times the attempt, so that
racing senders spread out instead of colliding again."""
FUND_BACKOFF = 0.02
_NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced")
"""What nodes answer for a nonce that another transaction has used or holds pending."""


SPARED_MIDDLEWARE = ("validation", "ens_name_to_address")
"""web3's default middleware this project has no use for. The validator looks the chain id up
and normalises the parameters of every call to check the chain id of transactions, which are
all signed here with the chain id that :func:`~consortium.chain.backend.connect` checked once
(about 0.7 ms of an eth_call's 2 ms on a local node), and it refuses the long ``extraData`` of
the blocks of QBFT networks; addresses here are never ENS names."""


def lean(w3: Web3) -> Web3:
    """``w3`` without :data:`SPARED_MIDDLEWARE`."""
    for name in SPARED_MIDDLEWARE:
        w3.middleware_onion.remove(name)
    return w3


class Chain(ABC):
    """A connected chain: a web3 handle plus what callers must know about the endpoint."""

    w3: Web3
    chain_id: int
    description: str
    poll_latency: float
    confirmations: int = 1
    """How many blocks must hold a transaction before its receipt is handed out: 1 is the block
    that mines it; more wait for blocks on top of it, so that a reorganisation of the newest
    blocks (a network with probabilistic finality) cannot undo what the caller acts on."""

    def __init__(self) -> None:
        self._nonces: dict[str, int] = {}
        self._nonce_lock = threading.Lock()
        self._tip: tuple[float, int] | None = None  # (when read, priority fee in wei)
        self._with_code: set[str] = set()

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
        nodes that hold no keys. Several processes may fund at once (parallel test runs, two
        terminals): a transfer whose nonce another one took first is rejected by the node,
        unsent, and is signed again with the next nonce.
        """
        self._require_local_dev("fund accounts")
        faucet = Account.from_key(self._faucet_key)
        for attempt in range(FUND_ATTEMPTS):
            tx_hash = self._send_from_faucet(faucet, address, wei)
            if tx_hash is not None:
                break
            time.sleep(random.uniform(0, FUND_BACKOFF * (attempt + 1)))
        else:
            raise TransactionRejected(
                f"funding {address}: other transactions took the faucet's nonce "
                f"{FUND_ATTEMPTS} times in a row; try again"
            )
        if self.wait_for_receipt(tx_hash)["status"] != 1:
            raise TransactionFailed(f"funding {address} failed: {tx_hash.to_0x_hex()}")

    def _send_from_faucet(self, faucet: LocalAccount, address: str, wei: int) -> HexBytes | None:
        """The hash of the sent transfer; None if its nonce was taken meanwhile."""
        tx: dict[str, Any] = {
            "from": faucet.address,
            "to": to_checksum_address(address),
            "value": wei,
            "chainId": self.chain_id,
            "nonce": self.w3.eth.get_transaction_count(faucet.address, "pending"),
            **self.fee_fields(),
        }
        try:
            tx["gas"] = self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
            return self.w3.eth.send_raw_transaction(faucet.sign_transaction(tx).raw_transaction)
        except Web3RPCError as exc:
            reason = rpc_message(exc)
            if any(taken in reason.lower() for taken in _NONCE_TAKEN):
                return None
            raise TransactionRejected(f"funding {address}: the node refused: {reason}") from None

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

    def has_code(self, address: str) -> bool:
        """Whether a contract is deployed at ``address``. A yes is remembered for this
        connection, since code once deployed stays (these contracts cannot self-destruct), so
        every ledger opened on it, one per party, asks once between them."""
        if address not in self._with_code and self.w3.eth.get_code(address):  # type: ignore[arg-type]
            self._with_code.add(address)
        return address in self._with_code

    def take_nonce(self, address: str) -> int:
        """The nonce ``address``'s next transaction takes. Read from the node once (its pending
        count), then counted here: every transactor of this connection shares the count, and
        an account has one sending process (a coordinator's journal lock makes it so), so a
        request per transaction is spared. :meth:`forget_nonce` makes the next one read again.
        """
        with self._nonce_lock:
            nonce = self._nonces.get(address)
            if nonce is None:
                nonce = self.w3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
            self._nonces[address] = nonce + 1
            return nonce

    def forget_nonce(self, address: str) -> None:
        """Drops the counted nonce of ``address``: the node refused a transaction of it."""
        with self._nonce_lock:
            self._nonces.pop(address, None)

    def fee_fields(self, latest: BlockData | None = None) -> dict[str, int]:
        """Fee fields for a transaction sent now: EIP-1559 where the chain has a base fee,
        else a legacy gas price (permissioned networks often run without the London fee market).
        ``latest`` spares the read of the latest block to a caller that has just read it.
        """
        block = self.w3.eth.get_block("latest") if latest is None else latest
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": self.w3.eth.gas_price}
        tip = self._priority_fee()
        # Twice the base fee keeps the transaction valid through several full blocks.
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip}

    def _priority_fee(self) -> int:
        """The node's suggested priority fee, read at most every :data:`TIP_TTL` seconds: it
        moves with demand over minutes, not between two transactions of a round."""
        now = time.monotonic()
        if self._tip is None or now - self._tip[0] > TIP_TTL:
            self._tip = (now, self.w3.eth.max_priority_fee)
        return self._tip[1]

    def wait_for_receipt(self, tx_hash: HexBytes, timeout: float = 120.0) -> TxReceipt:
        """The receipt of ``tx_hash`` once mined and :attr:`confirmations` blocks deep, the
        one wait every confirmed transaction goes through.

        Polled first at this chain's poll latency (an instantly mining node answers within
        it), then less and less often, up to every :data:`MAX_POLL_INTERVAL` seconds: a network
        with a block time of seconds would otherwise be asked hundreds of times per
        transaction, each answer costing this process the time its other threads (a pipelined
        round's training) need. With more than one confirmation the head is read before the
        receipt on every poll, so the depth counted is never more than the chain's; the
        receipt is read again each time, so one that a reorganisation dropped is waited for
        again and one moved to another block is counted from there. One confirmation asks
        for the receipt only.
        """
        deadline = time.monotonic() + timeout
        delay = self.poll_latency
        while True:
            head = self.w3.eth.block_number if self.confirmations > 1 else None
            try:
                receipt: TxReceipt | None = self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                receipt = None
            depth = _depth(receipt, head)
            if receipt is not None and depth >= self.confirmations:
                return receipt
            if time.monotonic() + delay > deadline:
                raise self._unconfirmed(tx_hash, timeout, receipt, depth)
            time.sleep(delay)
            delay = min(max(delay * 1.5, 0.001), max(MAX_POLL_INTERVAL, self.poll_latency))

    def _unconfirmed(
        self, tx_hash: HexBytes, timeout: float, receipt: TxReceipt | None, depth: int
    ) -> ChainUnavailable:
        """The timeout of :meth:`wait_for_receipt`, naming the confirmations it waited for."""
        where = f"within {timeout:g} s on {self.description}"
        if receipt is None:
            asked = f" ({self.confirmations} confirmations asked)" if self.confirmations > 1 else ""
            return ChainUnavailable(
                f"transaction {tx_hash.to_0x_hex()} was not mined {where}{asked}"
            )
        return ChainUnavailable(
            f"transaction {tx_hash.to_0x_hex()} was mined in block {receipt['blockNumber']} "
            f"but had {depth} of the {self.confirmations} confirmations asked {where}"
        )

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


def _depth(receipt: TxReceipt | None, head: int | None) -> int:
    """How many blocks hold ``receipt`` with ``head`` the latest: 0 unmined, and 1, the block
    that mined it, when the head was not read (one confirmation asks for no more)."""
    if receipt is None:
        return 0
    if head is None:
        return 1
    return max(head - int(receipt["blockNumber"]) + 1, 0)


def rpc_message(exc: Exception) -> str:
    """The node's own error message, without web3's dict repr around it."""
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
        error = exc.rpc_response.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)
