"""The ledger on a node run like a production network: its own chain id, a block every second,
and transactions that count only two blocks deep.

Nothing in the ledger may depend on anvil's instant mining or its development chain id. A
slice of tests/test_ledger.py runs here unchanged, imported, with this module's ``chain``
fixture in place of the embedded and anvil ones: a membership vote, a consent grant signed
offline and relayed, and a job with two anchored rounds read back. Every receipt handed out
on the way is checked to have had a block on top of its own by then.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import start_anvil
from hexbytes import HexBytes
from ledger_fixtures import DAY, PURPOSE, deploy_consortium
from test_ledger import (  # noqa: F401 (collected here too, on this module's chain)
    test_add_member_executes_when_approvals_exceed_quorum,
    test_anchor_rounds_chain_and_commitments,
    test_signed_grant_relayed_by_anyone,
)
from web3.types import RPCEndpoint, TxReceipt

from consortium.chain.anvil import AnvilNode
from consortium.chain.rpc import RpcChain
from consortium.crypto.eip712 import DOMAIN_NAME

pytestmark = pytest.mark.anvil

SLOW_CHAIN_ID = 4242
BLOCK_TIME = 1
CONFIRMATIONS = 2


class WatchedChain(RpcChain):
    """The slow node, asking for :data:`CONFIRMATIONS`, noting how deep each receipt it hands
    out is at that moment.

    Accounts are funded by anvil's ``anvil_setBalance``: chain id 4242 is no development
    chain, so :meth:`Chain.fund` rightly refuses it, and a balance set without a transaction
    leaves the test's minute to the ledger's own transactions.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url, SLOW_CHAIN_ID, poll_latency=0.05, confirmations=CONFIRMATIONS)
        self.depths: list[int] = []

    def wait_for_receipt(self, tx_hash: HexBytes, timeout: float = 120.0) -> TxReceipt:
        receipt = super().wait_for_receipt(tx_hash, timeout)
        self.depths.append(self.w3.eth.block_number - receipt["blockNumber"] + 1)
        return receipt

    def fund(self, address: str, wei: int) -> None:
        response = self.w3.provider.make_request(
            RPCEndpoint("anvil_setBalance"), [address, hex(wei)]
        )
        assert "error" not in response, response


@pytest.fixture(scope="module")
def slow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """The module's one anvil, with chain id 4242 and a block every second."""
    node = start_anvil(
        tmp_path_factory.mktemp("slow-anvil"), chain_id=SLOW_CHAIN_ID, block_time=BLOCK_TIME
    )
    yield node
    node.stop()


@pytest.fixture
def chain(slow_node: AnvilNode) -> Iterator[WatchedChain]:
    """Replaces conftest's ``chain`` for every test of this module, the imported ones too;
    fails the test if a receipt came back before a block was on top of its own."""
    chain = WatchedChain(slow_node.url)
    assert chain.chain_id == SLOW_CHAIN_ID and not chain.is_local_dev
    yield chain
    chain.close()
    assert chain.depths, "no transaction was confirmed"
    assert min(chain.depths) >= CONFIRMATIONS, f"receipts returned at depths {chain.depths}"


def test_the_deployment_and_the_signature_domains_carry_the_chain_id(
    chain: WatchedChain,
) -> None:
    c = deploy_consortium(chain)
    assert c.deployment.chain_id == SLOW_CHAIN_ID
    _, name, _, chain_id, verifying, _, _ = c.call("consents", "eip712Domain")
    assert (name, chain_id, verifying) == (DOMAIN_NAME, SLOW_CHAIN_ID, c.deployment.consents)
    logistics = c.ledgers[1]
    dataset = logistics.consents.register("shipments", b"\x01" * 32)
    now = logistics.now()
    grant = c.reader.consents.sign_grant(
        c.accounts[1], dataset, c.accounts[0].address, PURPOSE, now, now + DAY, deadline=now + 600
    )
    assert (grant.chain_id, grant.verifying_contract) == (SLOW_CHAIN_ID, c.deployment.consents)
