"""The backend interface behaves the same on the embedded chain and on anvil."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from hexbytes import HexBytes

from consortium.chain.anvil import AnvilNode
from consortium.chain.backend import connect
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.chain.rpc import RpcChain
from consortium.errors import ChainUnavailable, TransactionRejected, UsageError

ETH_TESTER_CHAIN_ID = 131277322940537
DAY = 86_400


def test_connect_embedded() -> None:
    chain = connect("embedded")
    assert isinstance(chain, EmbeddedChain)
    assert chain.chain_id == chain.w3.eth.chain_id == ETH_TESTER_CHAIN_ID
    assert chain.is_local_dev
    assert chain.w3.eth.get_block("latest")["gasLimit"] >= 30_000_000


def test_connect_embedded_checks_the_configured_chain_id() -> None:
    with pytest.raises(UsageError, match="chain id 1 is configured"):
        connect("embedded", chain_id=1)


def test_connect_rejects_other_urls() -> None:
    with pytest.raises(UsageError, match="unsupported chain URL"):
        connect("ws://127.0.0.1:8546")


@pytest.mark.anvil
def test_connect_rpc(anvil_node: AnvilNode) -> None:
    chain = connect(anvil_node.url, chain_id=anvil_node.chain_id, poll_latency=0.01)
    try:
        assert isinstance(chain, RpcChain)
        assert chain.chain_id == anvil_node.chain_id
        assert chain.poll_latency == 0.01
        assert chain.is_local_dev
        assert "anvil" in chain.description and anvil_node.url in chain.description
    finally:
        chain.close()


@pytest.mark.anvil
def test_rpc_chain_id_mismatch_is_a_usage_error(anvil_node: AnvilNode) -> None:
    with pytest.raises(UsageError, match=f"is chain id {anvil_node.chain_id}, but chain id 5 is"):
        connect(anvil_node.url, chain_id=5)


def test_unreachable_url_fails_fast_in_one_line(unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}"
    started = time.monotonic()
    with pytest.raises(ChainUnavailable) as caught:
        connect(url)
    assert str(caught.value) == f"cannot reach {url}: connection refused"
    assert time.monotonic() - started < 2.0  # no retry back-off on the probe


def test_fund_sends_a_signed_transfer(chain: Chain) -> None:
    account = Account.create()
    chain.fund(account.address, 12345)
    chain.fund(account.address, 5)
    assert chain.w3.eth.get_balance(account.address) == 12350


@pytest.mark.anvil
def test_fund_signs_again_when_another_sender_took_the_nonce(
    anvil_chain: RpcChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a second ``chain fund`` racing this one does: it reads the same pending nonce and
    its transfer is mined first, so the node answers "nonce too low" to this one."""
    eth = anvil_chain.w3.eth
    anvil_chain.fund(Account.create().address, 1)  # the faucet has a used nonce to race for
    read_nonce = eth.get_transaction_count
    reads = iter([lambda *args: read_nonce(*args) - 1])  # the first read is already stale
    monkeypatch.setattr(eth, "get_transaction_count", lambda *args: next(reads, read_nonce)(*args))
    account = Account.create()
    anvil_chain.fund(account.address, 777)
    assert eth.get_balance(account.address) == 777


def test_fund_beyond_the_faucet_is_rejected_in_one_line(chain: Chain) -> None:
    faucet = Account.from_key(chain._faucet_key).address
    too_much = chain.w3.eth.get_balance(faucet) + 1
    with pytest.raises(TransactionRejected, match=r"^funding 0x\w+: the node refused: \S[^\n]*$"):
        chain.fund(Account.create().address, too_much)


def test_fee_fields_follow_the_fee_market(chain: Chain) -> None:
    fees = chain.fee_fields()
    assert set(fees) == {"maxFeePerGas", "maxPriorityFeePerGas"}  # both chains have a base fee
    assert fees["maxFeePerGas"] >= fees["maxPriorityFeePerGas"] > 0


def test_increase_time_moves_block_timestamp(chain: Chain) -> None:
    before = chain.w3.eth.get_block("latest")["timestamp"]
    chain.increase_time(DAY)
    chain.fund(Account.create().address, 1)  # the next transaction sees the new time
    assert chain.w3.eth.get_block("latest")["timestamp"] >= before + DAY


def test_increase_time_only_forward(embedded_chain: EmbeddedChain) -> None:
    with pytest.raises(UsageError, match="only moves forward"):
        embedded_chain.increase_time(-1)


def test_dev_facilities_refuse_other_chains(
    embedded_chain: EmbeddedChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_chain, "chain_id", 1)
    assert not embedded_chain.is_local_dev
    with pytest.raises(UsageError, match="cannot fund accounts on chain id 1"):
        embedded_chain.fund(Account.create().address, 1)
    with pytest.raises(UsageError, match="cannot move the clock on chain id 1"):
        embedded_chain.increase_time(60)


def test_receipt_timeout_names_the_transaction(chain: Chain) -> None:
    never_sent = HexBytes(b"\x17" * 32)
    with pytest.raises(ChainUnavailable, match=f"{never_sent.to_0x_hex()} was not mined"):
        chain.wait_for_receipt(never_sent, timeout=0.2)
