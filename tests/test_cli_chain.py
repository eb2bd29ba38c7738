"""``consortium chain`` and a whole consortium, driven as a user drives it: real processes.

The node is started by the CLI itself, on a free port and with its state under a temporary
data directory; the test then stops and starts it and checks that every member, dataset and
consent survived.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

CONSORTIUM = Path(sys.executable).parent / "consortium"


class Cli:
    """Runs ``consortium`` in one working directory with one environment."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env

    def __call__(self, *args: str, account: str | None = None, ok: bool = True) -> str:
        env = dict(self.env, CONSORTIUM_ACCOUNT=account) if account else self.env
        result = subprocess.run(
            [str(CONSORTIUM), *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stderr, result.stderr
        if ok:
            assert result.returncode == 0, f"{args}: {result.stderr}"
        return result.stdout if ok else result.stderr

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json"))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    port = free_port()
    (tmp_path / "hardhat-free-config.toml").write_text(
        f'[network]\nurl = "http://127.0.0.1:{port}"\nchain_id = 31337\npoll_latency = 0.01\n'
        f"[anvil]\nport = {port}\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSORTIUM_")}
    env.update(CONSORTIUM_PASSWORD="correct horse", CONSORTIUM_SCRYPT_N="1024")
    runner = Cli(tmp_path, env)
    yield runner
    runner("chain", "stop")


def test_members_and_consents_survive_a_node_restart(cli: Cli) -> None:
    assert cli.json("chain", "status")["running"] is False
    assert "new state" in cli("chain", "start")
    assert "already running" in cli("chain", "start")

    for name in ("bank", "logistics", "institute", "regulator"):
        cli("account", "new", name)
        cli("chain", "fund", name, "--ether", "10")
    cli(
        "deploy",
        "--founder", "bank:Bank A:provider,consumer",
        "--founder", "logistics:Logistics Platform:provider",
        "--founder", "institute:Research Institute:coordinator,auditor",
        account="institute",
    )  # fmt: skip
    cli("member", "propose", "add", "regulator", "--name", "Regulator", "--roles", "auditor",
        account="bank")  # fmt: skip
    assert "executed" in cli("member", "vote", "1", account="logistics")
    refused = cli("member", "vote", "1", account="institute", ok=False)
    assert refused == "error: Proposal 1 has already been executed.\n"

    cli("dataset", "register", "shipments", "--schema-digest", "ab" * 32, account="logistics")
    bank = cli.json("account", "list")
    bank_address = next(a["address"] for a in bank if a["name"] == "bank")
    cli("consent", "grant", "1", bank_address, "--purpose", "sme-credit", "--until", "+30d",
        account="logistics")  # fmt: skip
    before = _ledger_view(cli)
    assert len(before["members"]) == 4
    assert [c["state"] for c in before["consents"]] == ["valid"]

    assert "state kept" in cli("chain", "stop")
    assert cli.json("chain", "status")["running"] is False
    assert "restored from" in cli("chain", "start")
    assert _ledger_view(cli) == before

    # The restarted chain goes on accepting transactions from where it stopped.
    cli("consent", "revoke", "1", bank_address, "--purpose", "sme-credit", account="logistics")
    assert [c["state"] for c in _ledger_view(cli)["consents"]] == ["revoked"]


def _ledger_view(cli: Cli) -> dict[str, object]:
    return {
        "members": cli.json("member", "list"),
        "datasets": cli.json("dataset", "list"),
        "consents": cli.json("consent", "list"),
    }


def test_stop_when_stopped_and_fund_refused_without_node(cli: Cli) -> None:
    assert cli("chain", "stop").strip() == "not running"
    error = cli("chain", "fund", "0x" + "11" * 20, ok=False)
    assert error.startswith("error: cannot reach http://127.0.0.1:")
    assert len(error.splitlines()) == 1


def test_an_archive_node_is_started_when_configured(cli: Cli) -> None:
    config = cli.workdir / "hardhat-free-config.toml"
    config.write_text(config.read_text() + "archive = true\n")
    started = cli("chain", "start")
    assert "archive node: every block's state is kept across restarts" in started
    pid = cli.json("chain", "status")["pid"]
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--preserve-historical-states" in command


def test_stop_and_status_leave_a_process_that_is_not_the_node_alone(cli: Cli) -> None:
    """The pid file names another program (its pid recycled after a reboot, say)."""
    pid_file = cli.workdir / ".consortium" / "anvil" / "anvil.pid"
    pid_file.parent.mkdir(parents=True)
    with subprocess.Popen(["sleep", "60"]) as other:
        while not Path(f"/proc/{other.pid}/cmdline").read_bytes().startswith(b"sleep"):
            time.sleep(0.01)  # Popen may return between fork and exec
        pid_file.write_text(f"{other.pid}\n")
        refused = cli("chain", "stop", ok=False)
        assert refused.startswith(f"error: {pid_file} names process {other.pid} (sleep 60), ")
        assert refused.endswith(": left running; remove the pid file if the node is gone\n")
        assert "which is not this configuration's anvil (port " in refused
        assert len(refused.splitlines()) == 1
        assert other.poll() is None
        status = cli.json("chain", "status")
        assert (status["running"], status["pid"], status["foreignPid"]) == (False, None, other.pid)
        other.kill()
    assert cli("chain", "stop").strip() == "not running"


def test_a_file_where_the_node_directory_should_be_is_one_line(cli: Cli) -> None:
    blocker = cli.workdir / ".consortium" / "anvil"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")
    try:
        for command in (("chain", "start"), ("chain", "status"), ("chain", "stop")):
            error = cli(*command, ok=False)
            assert error.splitlines() == [
                f"error: the anvil node's directory {blocker} cannot be made: {blocker} is a "
                "file; move it away"
            ], command
    finally:
        blocker.unlink()
