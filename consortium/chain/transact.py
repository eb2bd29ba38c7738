"""Sending contract calls as locally signed transactions, with every failure made readable.

Keys never leave this process: transactions are signed with eth-account and submitted raw, so
the same code works against nodes that hold no accounts (Besu, a public endpoint). Gas is
always estimated, because the estimate is where a node reports a revert with its data; a
hard-coded limit would instead mine a failed transaction. Receipts are always checked, and a
failed one is replayed as a call to recover the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import BlockIdentifier, TxParams, TxReceipt

from consortium.chain.base import Chain, rpc_message
from consortium.chain.reverts import RevertDecoder
from consortium.chain.views import call_data, call_view
from consortium.errors import ChainUnavailable, TransactionFailed, TransactionRejected

# Estimates are exact for the state they ran on; the margin absorbs state that changes
# between estimate and inclusion (another member's transaction landing first).
GAS_MARGIN_PERCENT = 20


@dataclass(frozen=True)
class SignedTransaction:
    """A transaction signed and ready to send: what a crash-safe caller journals."""

    tx_hash: HexBytes
    raw: HexBytes
    nonce: int


class Transactor:
    """Sends transactions for one account on one chain."""

    def __init__(
        self,
        chain: Chain,
        account: LocalAccount,
        decoder: RevertDecoder,
        *,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.chain = chain
        self.account = account
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout

    def send(self, fn: ContractFunction, *, value: int = 0) -> TxReceipt:
        """Sends ``fn`` and returns its successful receipt; a revert raises ChainRevert."""
        return self._transact(fn, value)

    def deploy(
        self, abi: list[dict[str, Any]], bytecode: str, *args: Any
    ) -> tuple[ChecksumAddress, TxReceipt]:
        """Deploys a contract; returns its address and the deployment receipt."""
        constructor = self.chain.w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args)
        receipt = self._transact(constructor, 0)
        return receipt["contractAddress"], receipt  # type: ignore[return-value]

    def confirm(self, tx_hash: HexBytes) -> TxReceipt:
        """Waits for ``tx_hash`` and returns its receipt, as deep as the chain's confirmations
        ask (:meth:`Chain.wait_for_receipt`), if it succeeded.

        A failed transaction is re-run as ``eth_call`` at its block to recover the reason
        (ChainRevert); without one, TransactionFailed names the transaction. Public so that a
        caller that journaled a hash before a crash can settle that transaction after it.
        """
        with _connection(self.chain.description):
            receipt = self.chain.wait_for_receipt(tx_hash, self.receipt_timeout)
            if receipt["status"] == 1:
                return receipt
            tx = self.chain.w3.eth.get_transaction(tx_hash)
            replay: TxParams = {
                "from": tx["from"],
                "data": tx["input"],
                "value": tx["value"],
                "gas": tx["gas"],
            }
            if tx.get("to"):
                replay["to"] = tx["to"]
            try:
                self.chain.w3.eth.call(replay, receipt["blockNumber"])
            except (ContractLogicError, Web3RPCError) as exc:
                revert = self.decoder.from_exception(exc)
                if revert is not None:
                    raise revert from None
                detail = f": {rpc_message(exc)}"
            else:
                detail = "; replaying it as a call did not reproduce the failure"
        raise TransactionFailed(
            f"transaction {tx_hash.to_0x_hex()} failed in block {receipt['blockNumber']}{detail}"
        )

    def call(self, fn: ContractFunction, block_identifier: BlockIdentifier = "latest") -> Any:
        """Calls a view function as this account (``msg.sender``); reverts raise ChainRevert."""
        return self.call_view(
            fn, self.decoder, block_identifier=block_identifier, sender=self.account.address
        )

    @staticmethod
    def call_view(
        fn: ContractFunction,
        decoder: RevertDecoder,
        *,
        block_identifier: BlockIdentifier = "latest",
        sender: str | None = None,
    ) -> Any:
        """Calls a view function without an account; reverts raise ChainRevert."""
        with _connection("the chain endpoint"):
            return call_view(fn, decoder, block_identifier=block_identifier, sender=sender)

    def sign(
        self, fn: ContractFunction | ContractConstructor, *, value: int = 0, gas: int | None = None
    ) -> SignedTransaction:
        """Estimates, fixes the nonce and fees of, and signs ``fn`` without sending it.

        Callers that must survive a crash journal the result before :meth:`broadcast`, so that
        after a restart they can tell a mined transaction from a lost one and resend the very
        same bytes. A revert found by the estimate raises ChainRevert here, before anything is
        sent. ``gas``, a limit the caller knows from an earlier estimate of the same call on the
        same kind of state (an anchor on the job's fast path), spares the estimate: a revert
        then shows as a failed receipt, which :meth:`confirm` replays for its reason.
        """
        w3 = self.chain.w3
        address = self.account.address
        params: TxParams = {"from": address, "value": value, "chainId": self.chain.chain_id}
        with _connection(self.chain.description):
            latest = w3.eth.get_block("latest")
            limit = int(latest["gasLimit"])
            params["gas"] = self._estimate(fn, params, limit) if gas is None else gas
            params.update(self.chain.fee_fields(latest))  # type: ignore[typeddict-item]
            params["nonce"] = self.chain.take_nonce(address)
            signed = self.account.sign_transaction(_transaction(fn, params))
        return SignedTransaction(
            HexBytes(signed.hash), HexBytes(signed.raw_transaction), int(params["nonce"])
        )

    def _estimate(
        self, fn: ContractFunction | ContractConstructor, params: TxParams, block_limit: int
    ) -> int:
        """The node's estimate plus a margin that never lifts a transaction that fits in a block
        above the block limit; a revert raises ChainRevert."""
        try:
            gas = fn.estimate_gas(params)
        except (ContractLogicError, Web3RPCError) as exc:
            revert = self.decoder.from_exception(exc)
            if revert is not None:
                raise revert from None
            raise self._rejected(exc) from None
        return max(gas, min(gas + gas * GAS_MARGIN_PERCENT // 100, block_limit))

    def broadcast(self, signed: SignedTransaction) -> HexBytes:
        """Submits a signed transaction; resubmitting one the node already holds is no error."""
        with _connection(self.chain.description):
            try:
                return HexBytes(self.chain.w3.eth.send_raw_transaction(signed.raw))
            except Web3RPCError as exc:
                if "already" in rpc_message(exc).lower():  # "already known", "already imported"
                    return signed.tx_hash
                self.chain.forget_nonce(self.account.address)  # another sender, or stale
                raise self._rejected(exc) from None

    def receipt(self, tx_hash: HexBytes) -> TxReceipt | None:
        """The receipt of ``tx_hash`` if it was mined, None while pending or unknown. On a
        chain that asks for more than one confirmation, a mined one is handed to
        :meth:`Chain.wait_for_receipt` and returned once confirmed there, so that a settled
        transaction is as deep as a confirmed one."""
        with _connection(self.chain.description):
            try:
                receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                return None
            if self.chain.confirmations > 1:
                return self.chain.wait_for_receipt(tx_hash, self.receipt_timeout)
            return receipt

    def is_known(self, tx_hash: HexBytes) -> bool:
        """Whether the node knows ``tx_hash`` at all, mined or pending. A node that restarted
        without its transaction pool has forgotten transactions it had not mined yet."""
        with _connection(self.chain.description):
            try:
                self.chain.w3.eth.get_transaction(tx_hash)
            except TransactionNotFound:
                return False
            return True

    def _transact(self, fn: ContractFunction | ContractConstructor, value: int) -> TxReceipt:
        try:
            tx_hash = self.broadcast(self.sign(fn, value=value))
        except TransactionRejected:
            # Most often a counted nonce another sender took: signed again from the node's
            # count (broadcast forgot the counted one), once.
            tx_hash = self.broadcast(self.sign(fn, value=value))
        return self.confirm(tx_hash)

    def _rejected(self, exc: Exception) -> TransactionRejected:
        return TransactionRejected(
            f"{self.chain.description} rejected the transaction from {self.account.address}: "
            f"{rpc_message(exc)}"
        )


def _transaction(fn: ContractFunction | ContractConstructor, params: TxParams) -> TxParams:
    """The transaction that calls ``fn`` with ``params`` (gas, fees and nonce all set): a call's
    data from its selector and web3's codec (:func:`~consortium.chain.views.call_data`), which
    spares web3's ``build_transaction`` its ABI look-up and formatters on every anchor; a
    deployment's from web3."""
    if isinstance(fn, ContractConstructor):
        return fn.build_transaction(params)
    return {**params, "to": fn.address, "data": call_data(fn)}  # type: ignore[typeddict-item]


@contextmanager
def _connection(where: str) -> Iterator[None]:
    """Turns a lost connection into ChainUnavailable, which the CLI reports in one line."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise ChainUnavailable(f"lost the connection to {where}: {type(exc).__name__}") from None
