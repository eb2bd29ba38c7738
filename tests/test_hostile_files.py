"""Every JSON file a command reads, given as something hostile: nested past what the parser can
recurse, too large, a FIFO, a device. Each must end in one ``error:`` line and exit 2, promptly.

Keystore files are covered with the rest of the keystore in test_keystore.py and
test_cli_account.py; bundles in test_audit.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_process import one_line_error, run_cli_process
from click.testing import CliRunner, Result
from conftest import isolate_cli

from consortium.chain import artifacts
from consortium.chain.embedded import EmbeddedChain
from consortium.cli.main import cli
from consortium.errors import UsageError
from consortium.scenarios import aml
from consortium.scenarios.parties import Party

NESTED = "[" * 100_000 + "]" * 100_000
TOO_DEEP = "is not readable JSON: it nests arrays and objects more than 64 deep"
SCHEMA = ("dataset", "register", "loans", "-a", "bank", "--schema")
RELAY = ("consent", "relay", "-a", "bank")

Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``consortium`` run in process in an empty ``tmp_path``."""
    isolate_cli(monkeypatch, tmp_path)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), prog_name="consortium")

    return invoke


def error_of(result: Result) -> str:
    """The single ``error: ...`` line of a command that failed with exit code 2."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_nested_schema_grant_or_deployment_is_one_line(run: Run, tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text(NESTED)
    assert error_of(run(*SCHEMA, "deep.json")) == f"error: schema file deep.json {TOO_DEEP}"
    assert error_of(run(*RELAY, "deep.json")) == f"error: signed grant deep.json {TOO_DEEP}"
    (tmp_path / ".consortium").mkdir()
    deployment = tmp_path / ".consortium" / "deployment.json"
    deployment.write_text(NESTED)
    assert error_of(run("dataset", "list")) == f"error: deployment file {deployment} {TOO_DEEP}"


def test_a_schema_larger_than_any_schema_is_refused(run: Run, tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text('"' + "x" * 2**20 + '"')
    assert error_of(run(*SCHEMA, "big.json")) == (
        "error: schema file big.json is larger than 1,048,576 bytes, the limit for a schema file"
    )


def test_a_fifo_or_a_device_is_refused_promptly(tmp_path: Path) -> None:
    """Run as a process with a deadline: a regression would block or read without end."""
    os.mkfifo(tmp_path / "fifo.json")
    fifo = "it is a FIFO, not a regular file"
    device = "it is a character device, not a regular file"
    schema = run_cli_process(tmp_path, *SCHEMA, "fifo.json")
    assert one_line_error(schema) == f"error: cannot read schema file fifo.json: {fifo}"
    grant = run_cli_process(tmp_path, *RELAY, "fifo.json")
    assert one_line_error(grant) == f"error: cannot read signed grant fifo.json: {fifo}"
    schema = run_cli_process(tmp_path, *SCHEMA, "/dev/zero")
    assert one_line_error(schema) == f"error: cannot read schema file /dev/zero: {device}"
    grant = run_cli_process(tmp_path, *RELAY, "/dev/zero")
    assert one_line_error(grant) == f"error: cannot read signed grant /dev/zero: {device}"
    (tmp_path / "zero.toml").write_text('[paths]\ndeployment_file = "/dev/zero"\n')
    deployment = run_cli_process(tmp_path, "--config", "zero.toml", "dataset", "list")
    assert one_line_error(deployment) == f"error: cannot read deployment file /dev/zero: {device}"


def test_a_nested_contract_artifact_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "ARTIFACTS_DIR", tmp_path)
    artifacts.load_artifact.cache_clear()
    (tmp_path / "TrainingLedger.json").write_text(NESTED)
    try:
        with pytest.raises(UsageError) as info:
            artifacts.load_artifact("TrainingLedger")
    finally:
        artifacts.load_artifact.cache_clear()
    assert str(info.value) == f"contract artifact {tmp_path / 'TrainingLedger.json'} {TOO_DEEP}"


def test_a_nested_scenario_or_party_key_is_refused(
    tmp_path: Path, embedded_chain: EmbeddedChain
) -> None:
    (tmp_path / aml.SCENARIO_FILE).write_text(NESTED)
    with pytest.raises(UsageError) as info:
        aml.load(embedded_chain, tmp_path)
    assert str(info.value) == f"scenario file {tmp_path / aml.SCENARIO_FILE} {TOO_DEEP}"

    key = tmp_path / "parties" / "bank" / "key.json"
    key.parent.mkdir(parents=True)
    key.write_text("[" * 30_000 + "]" * 30_000)  # within the size bound of a key file
    with pytest.raises(UsageError) as info:
        Party.load("bank", tmp_path)
    assert str(info.value) == f"party key file {key} {TOO_DEEP}"
