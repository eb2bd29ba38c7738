"""Waiting for confirmations, on an anvil node that mines only when told to (``evm_mine``).

A receipt must come back only once its block has the configured number of blocks counted
with it, be waited for again when a reorganisation drops it, and a wait that runs out must
say how many confirmations it had; with one confirmation nothing beyond the receipt is asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ANVIL_CHAIN_ID, isolate_cli, start_anvil
from eth_account import Account
from hexbytes import HexBytes
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, TxReceipt

from consortium.chain.anvil import AnvilNode
from consortium.chain.backend import connect
from consortium.chain.base import MAX_POLL_INTERVAL
from consortium.chain.reverts import RevertDecoder
from consortium.chain.rpc import RpcChain
from consortium.chain.transact import Transactor
from consortium.cli.context import CliContext
from consortium.config import load_config
from consortium.crypto.devkeys import ANVIL_KEYS
from consortium.errors import ChainUnavailable, ConfigError, UsageError

pytestmark = pytest.mark.anvil

SENDER = Account.from_key(ANVIL_KEYS[1])
# Long enough for several polls at the longest interval: a wait that should go on is seen to.
STILL_WAITING = 4 * MAX_POLL_INTERVAL


@pytest.fixture(scope="module")
def manual_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """An anvil of this module's own, mining a block only on ``evm_mine``."""
    node = start_anvil(tmp_path_factory.mktemp("manual-anvil"))
    setup = RpcChain(node.url)
    _rpc(setup, "evm_setAutomine", False)
    setup.close()
    yield node
    node.stop()


@pytest.fixture
def connect_to(manual_node: AnvilNode) -> Iterator[Callable[[int], RpcChain]]:
    """Connections to the node asking for a given number of confirmations."""
    chains: list[RpcChain] = []

    def make(confirmations: int) -> RpcChain:
        chains.append(RpcChain(manual_node.url, ANVIL_CHAIN_ID, 0.005, confirmations=confirmations))
        return chains[-1]

    yield make
    for chain in chains:
        chain.close()


@pytest.fixture
def waiter() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def _rpc(chain: RpcChain, method: str, *params: Any) -> Any:
    response = chain.w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, response
    return response["result"]


def mine(chain: RpcChain, blocks: int = 1) -> int:
    """Mines ``blocks`` blocks; the new head's number."""
    for _ in range(blocks):
        _rpc(chain, "evm_mine")
    return chain.w3.eth.block_number


def transfer(chain: RpcChain) -> tuple[HexBytes, HexBytes]:
    """Sends a signed transfer that stays pending until a block is mined; (hash, raw bytes)."""
    tx = {
        "to": Account.create().address,
        "value": 1,
        "gas": 21_000,
        "chainId": chain.chain_id,
        "nonce": chain.w3.eth.get_transaction_count(SENDER.address, "pending"),
        **chain.fee_fields(),
    }
    raw = HexBytes(SENDER.sign_transaction(tx).raw_transaction)
    return HexBytes(chain.w3.eth.send_raw_transaction(raw)), raw


def still_waiting(future: Future[TxReceipt]) -> bool:
    time.sleep(STILL_WAITING)
    return not future.done()


def test_a_receipt_comes_back_once_enough_blocks_count_it(
    connect_to: Callable[[int], RpcChain], waiter: ThreadPoolExecutor
) -> None:
    chain = connect_to(3)
    tx_hash, _ = transfer(chain)
    future = waiter.submit(chain.wait_for_receipt, tx_hash, 30)
    mined_in = mine(chain)
    assert still_waiting(future)  # 1 of 3: the block that mined it
    mine(chain)
    assert still_waiting(future)  # 2 of 3
    head = mine(chain)
    receipt = future.result(timeout=10)
    assert (receipt["blockNumber"], head) == (mined_in, mined_in + 2)

    # A transaction confirmed long ago comes back at once, without a poll's wait.
    started = time.monotonic()
    assert chain.wait_for_receipt(tx_hash, 30)["blockNumber"] == mined_in
    assert time.monotonic() - started < MAX_POLL_INTERVAL


def test_a_settled_transaction_is_looked_up_as_deep_as_a_confirmed_one(
    connect_to: Callable[[int], RpcChain], waiter: ThreadPoolExecutor
) -> None:
    """Transactor.receipt, with which a coordinator settles a journaled anchor after a crash,
    answers None for a pending transaction and a mined one only once it is confirmed."""
    chain = connect_to(2)
    transactor = Transactor(chain, SENDER, RevertDecoder([]), receipt_timeout=30)
    tx_hash, _ = transfer(chain)
    assert transactor.receipt(tx_hash) is None
    mined_in = mine(chain)
    future = waiter.submit(transactor.receipt, tx_hash)
    assert still_waiting(future)
    mine(chain)
    receipt = future.result(timeout=10)
    assert receipt is not None and receipt["blockNumber"] == mined_in


def test_a_receipt_dropped_by_a_reorganisation_is_waited_for_again(
    connect_to: Callable[[int], RpcChain], waiter: ThreadPoolExecutor
) -> None:
    chain = connect_to(2)
    before = _rpc(chain, "evm_snapshot")
    tx_hash, raw = transfer(chain)
    future = waiter.submit(chain.wait_for_receipt, tx_hash, 30)
    first_block = mine(chain)
    first_hash = chain.w3.eth.get_transaction_receipt(tx_hash)["blockHash"]
    assert still_waiting(future)

    # The block that held it is replaced by an empty one (anvil's revert drops its
    # transactions), and the transaction is sent again and mined in the block after.
    assert _rpc(chain, "evm_revert", before) is True
    assert mine(chain) == first_block
    assert still_waiting(future)  # the old receipt's depth would now be 2
    chain.w3.eth.send_raw_transaction(raw)
    mined_again = mine(chain)
    assert still_waiting(future)
    mine(chain)
    receipt = future.result(timeout=10)
    assert receipt["blockNumber"] == mined_again == first_block + 1
    assert receipt["blockHash"] != first_hash


def test_a_wait_that_runs_out_names_the_confirmations(
    connect_to: Callable[[int], RpcChain],
) -> None:
    chain = connect_to(3)
    tx_hash, _ = transfer(chain)
    where = f"within 0.2 s on {chain.description}"
    with pytest.raises(ChainUnavailable) as unmined:
        chain.wait_for_receipt(tx_hash, 0.2)
    assert str(unmined.value) == (
        f"transaction {tx_hash.to_0x_hex()} was not mined {where} (3 confirmations asked)"
    )
    block = mine(chain)
    with pytest.raises(ChainUnavailable) as shallow:
        chain.wait_for_receipt(tx_hash, 0.2)
    assert str(shallow.value) == (
        f"transaction {tx_hash.to_0x_hex()} was mined in block {block} but had 1 of the 3 "
        f"confirmations asked {where}"
    )
    mine(chain)


def test_one_confirmation_asks_for_the_receipt_only(
    connect_to: Callable[[int], RpcChain],
) -> None:
    chain = connect_to(1)
    tx_hash, _ = transfer(chain)
    block = mine(chain)
    asked: list[str] = []

    class Counted(Web3Middleware):
        def request_processor(self, method: RPCEndpoint, params: Any) -> Any:
            asked.append(method)
            return method, params

    chain.w3.middleware_onion.add(Counted)
    assert chain.wait_for_receipt(tx_hash, 5)["blockNumber"] == block
    assert asked == ["eth_getTransactionReceipt"]


def test_confirmations_are_configured_and_reach_the_chain(
    manual_node: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_cli(monkeypatch, tmp_path)
    monkeypatch.delenv("CONSORTIUM_CONFIRMATIONS", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(f'[network]\nurl = "{manual_node.url}"\nconfirmations = 4\n')
    context = CliContext(config)
    assert context.chain().confirmations == 4
    context.chain().close()
    assert load_config(config, env={"CONSORTIUM_CONFIRMATIONS": "2"}).network.confirmations == 2
    assert load_config(env={}).network.confirmations == 1
    for bad in ("0", "101", "two"):
        with pytest.raises(ConfigError, match=r"network\.confirmations must be an integer in 1"):
            load_config(config, env={"CONSORTIUM_CONFIRMATIONS": bad})


def test_the_embedded_chain_and_a_node_refuse_what_they_cannot_wait_for(
    manual_node: AnvilNode,
) -> None:
    with pytest.raises(UsageError, match=r"^the embedded chain takes 1 confirmation, not 2: "):
        connect("embedded", confirmations=2)
    assert connect("embedded").confirmations == 1
    with pytest.raises(UsageError, match=r"^confirmations must be 1 or more, got 0$"):
        connect(manual_node.url, confirmations=0)
