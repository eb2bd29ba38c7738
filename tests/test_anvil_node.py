"""The CLI's local anvil node: start, status, stop, and state that survives a restart."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3.contract import Contract
from web3.exceptions import Web3Exception

from consortium.chain.anvil import ANVIL_ENV, AnvilNode, find_anvil
from consortium.chain.reverts import RevertDecoder
from consortium.chain.rpc import RpcChain
from consortium.chain.transact import Transactor
from consortium.errors import ChainUnavailable, UsageError

pytestmark = pytest.mark.anvil


@pytest.fixture
def node(tmp_path: Path, unused_port: int, request: pytest.FixtureRequest) -> Iterator[AnvilNode]:
    """A node of the test's own, not started; an archive node when the test passes True as
    the fixture's (indirect) parameter."""
    try:
        find_anvil()
    except UsageError as exc:
        pytest.skip(str(exc))
    archive = getattr(request, "param", False)
    node = AnvilNode(tmp_path / "data", port=unused_port, chain_id=31337, archive=archive)
    yield node
    node.stop()


def deployed_probe(
    node: AnvilNode, artifact: dict[str, Any]
) -> tuple[RpcChain, Transactor, Contract]:
    """A connection to ``node``, a funded deployer's transactor, and the RevertProbe it
    deployed."""
    chain = RpcChain(node.url, 31337, poll_latency=0.005)
    deployer = Account.create()
    chain.fund(deployer.address, 10**18)
    transactor = Transactor(chain, deployer, RevertDecoder([artifact["abi"]]))
    address, _ = transactor.deploy(artifact["abi"], artifact["bytecode"])
    return chain, transactor, chain.w3.eth.contract(address=address, abi=artifact["abi"])


def test_start_status_stop(node: AnvilNode) -> None:
    assert not node.status().running

    status = node.start()
    assert status.running and status.pid is not None
    assert (status.url, status.chain_id, status.block_number) == (node.url, 31337, 0)
    assert status.state_file == node.state_file
    assert node.pid_file.read_text().strip() == str(status.pid)
    assert node.log_file.is_file()

    assert node.stop() is True
    assert not node.status().running
    assert not node.pid_file.exists()
    assert node.state_file.is_file()  # dumped on SIGTERM
    assert node.stop() is False  # idempotent


def test_start_twice_reports_the_running_node(node: AnvilNode) -> None:
    first = node.start()
    second = node.start()
    assert second.running and second.pid == first.pid


def test_restart_keeps_chain_state(node: AnvilNode, revert_probe: dict[str, Any]) -> None:
    node.start()
    artifact = revert_probe
    payee = Account.create().address
    chain, transactor, probe = deployed_probe(node, artifact)
    address = probe.address
    receipt = transactor.send(probe.functions.bump())
    chain.fund(payee, 777)
    before = (
        chain.w3.eth.block_number,
        chain.w3.eth.get_code(address),
        chain.w3.eth.get_balance(payee),
        probe.functions.counter().call(),
    )
    chain.close()

    node.stop()
    node.start()

    chain = RpcChain(node.url, 31337, poll_latency=0.005)
    probe = chain.w3.eth.contract(address=address, abi=artifact["abi"])
    after = (
        chain.w3.eth.block_number,
        chain.w3.eth.get_code(address),
        chain.w3.eth.get_balance(payee),
        probe.functions.counter().call(),
    )
    assert after == before
    assert chain.w3.eth.get_transaction_receipt(receipt["transactionHash"])["status"] == 1
    chain.close()


def test_stale_pid_file_is_cleaned_up(node: AnvilNode) -> None:
    node.pid_file.parent.mkdir(parents=True)
    node.pid_file.write_text(f"{_pid_of_finished_process()}\n")

    assert not node.status().running
    assert not node.pid_file.exists()
    assert node.start().running


def test_a_pid_file_naming_another_program_is_never_signalled(node: AnvilNode) -> None:
    """A pid recycled after a reboot names some other program: it is not the node, and
    stopping the node must not signal it."""
    node.pid_file.parent.mkdir(parents=True)
    with subprocess.Popen(["sleep", "60"]) as other:
        _wait_for_exec(other.pid, b"sleep")
        node.pid_file.write_text(f"{other.pid}\n")
        status = node.status()
        assert (status.running, status.pid, status.foreign_pid) == (False, None, other.pid)
        with pytest.raises(UsageError, match=rf"names process {other.pid} \(sleep 60\), which is"):
            node.stop()
        assert other.poll() is None and node.pid_file.exists()
        # Starting replaces the pid file: the node it names is then this one.
        assert node.start().pid != other.pid
        other.kill()


def _wait_for_exec(pid: int, program: bytes) -> None:
    """Popen may return while its child is still between fork and exec."""
    deadline = time.monotonic() + 5
    while not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(program):
        assert time.monotonic() < deadline, f"process {pid} did not start {program!r}"
        time.sleep(0.01)


def test_another_configurations_anvil_is_not_this_node(node: AnvilNode, tmp_path: Path) -> None:
    """Same data directory, another port: the anvil the pid file names serves another
    configuration, and this one's stop must leave it alone."""
    node.start()
    elsewhere = AnvilNode(node.dir.parent, port=node.port + 1, chain_id=31337)
    assert elsewhere.status().foreign_pid == node.status().pid
    with pytest.raises(UsageError, match=rf"not this configuration's anvil \(port {node.port + 1}"):
        elsewhere.stop()
    assert node.status().running


def test_port_taken_by_another_program(node: AnvilNode) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((node.host, node.port))
        squatter.listen()
        with pytest.raises(UsageError, match=rf"port {node.port} .* is in use"):
            node.start()


def test_corrupt_state_file_fails_start_with_the_log_line(node: AnvilNode) -> None:
    node.state_file.parent.mkdir(parents=True)
    node.state_file.write_text("{not json")
    with pytest.raises(ChainUnavailable, match=r"anvil exited during start-up: .*state"):
        node.start()
    assert not node.pid_file.exists()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ANVIL_ENV, raising=False)
    monkeypatch.setattr("consortium.chain.anvil.NPM_BINARY", Path("node_modules/none/anvil"))
    with pytest.raises(UsageError, match="anvil not found: run `npm ci`"):
        find_anvil()
    monkeypatch.setenv(ANVIL_ENV, "/nonexistent/anvil")
    with pytest.raises(UsageError, match="is not an executable file"):
        find_anvil()


def _pid_of_finished_process() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("node", [False, True], ids=["plain", "archive"], indirect=True)
def test_past_state_survives_a_restart_only_on_an_archive_node(
    node: AnvilNode, revert_probe: dict[str, Any]
) -> None:
    """What an audit after a restart needs: a call as of a block before the restart."""
    node.start()
    chain, transactor, probe = deployed_probe(node, revert_probe)
    past = transactor.send(probe.functions.bump())["blockNumber"]
    transactor.send(probe.functions.bump())
    assert probe.functions.counter().call(block_identifier=past) == 1
    chain.close()

    node.stop()
    node.start()
    chain = RpcChain(node.url, 31337, poll_latency=0.005)
    probe = chain.w3.eth.contract(address=probe.address, abi=revert_probe["abi"])
    assert probe.functions.counter().call() == 2
    if node.archive:
        assert probe.functions.counter().call(block_identifier=past) == 1
    else:
        with pytest.raises(Web3Exception):
            probe.functions.counter().call(block_identifier=past)
    chain.close()
