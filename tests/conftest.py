"""Chains for tests: a fresh embedded chain per test, and one anvil node per session.

Tests that take the ``chain`` fixture run once on each backend, so every behaviour the project
relies on is checked on eth-tester and on a real JSON-RPC node alike. The anvil runs are
marked ``anvil`` (deselect them with ``-m "not anvil"``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solc_fixture import REVERT_PROBE, compile_contract

from consortium.chain.anvil import AnvilNode, find_anvil
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.chain.rpc import RpcChain
from consortium.errors import UsageError

ANVIL_CHAIN_ID = 31337


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolate_cli(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Runs ``consortium`` in ``directory`` with none of the caller's ``CONSORTIUM_*`` settings,
    a fast scrypt and a known password."""
    monkeypatch.chdir(directory)
    for variable in (
        "CONFIG",
        "NETWORK",
        "CHAIN_ID",
        "CONFIRMATIONS",
        "DATA_DIR",
        "KEYSTORE_DIR",
        "DEPLOYMENT_FILE",
        "ACCOUNT",
    ):
        monkeypatch.delenv(f"CONSORTIUM_{variable}", raising=False)
    monkeypatch.setenv("CONSORTIUM_SCRYPT_N", "1024")
    monkeypatch.setenv("CONSORTIUM_PASSWORD", "pw")


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture
def embedded_chain() -> Iterator[EmbeddedChain]:
    chain = EmbeddedChain()
    yield chain
    chain.close()


def start_anvil(directory: Path, **options: Any) -> AnvilNode:
    """An anvil node started on a free port with its data in ``directory`` (chain id
    ANVIL_CHAIN_ID unless ``options`` say otherwise); the test is skipped where npm's anvil is
    not installed. The caller stops it."""
    try:
        find_anvil()
    except UsageError as exc:
        pytest.skip(str(exc))
    node = AnvilNode(directory, port=free_port(), **{"chain_id": ANVIL_CHAIN_ID, **options})
    node.start()
    return node


@pytest.fixture(scope="session")
def anvil_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """One anvil node for the whole session, on a free port, with its data in a temp dir."""
    # Every test funds fresh accounts from one faucet: far more than anvil's default 10,000.
    node = start_anvil(tmp_path_factory.mktemp("anvil-session"), balance_ether=10**9)
    yield node
    node.stop()


@pytest.fixture
def anvil_chain(anvil_node: AnvilNode) -> Iterator[RpcChain]:
    chain = RpcChain(anvil_node.url, ANVIL_CHAIN_ID, poll_latency=0.005)
    yield chain
    chain.close()


@pytest.fixture(scope="session")
def revert_probe() -> dict[str, Any]:
    """ABI, bytecode and userdoc of a test contract that reverts in every way Solidity can."""
    return compile_contract(REVERT_PROBE, "RevertProbe")


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest) -> Chain:
    """The same test on both backends."""
    fixture = "embedded_chain" if request.param == "embedded" else "anvil_chain"
    return request.getfixturevalue(fixture)
