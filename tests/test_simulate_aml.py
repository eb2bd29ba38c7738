"""``consortium simulate aml``: the README's first command, through the CLI."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from bundle_files import read_manifest, read_rounds
from click.testing import CliRunner, Result

from consortium.chain.anvil import AnvilNode
from consortium.cli.main import cli
from consortium.ledger.deployment import Deployment
from consortium.lockfile import ExclusiveLock
from consortium.orchestration.bundle import BUNDLE_FORMAT


def simulate(*args: str) -> Result:
    return CliRunner().invoke(cli, ["simulate", "aml", *args])


def test_every_round_is_anchored_and_bundled(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = simulate("--banks", "3", "--rounds", "3", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    audit = report["audit"]
    assert (audit["status"], audit["rounds"], audit["failed"], audit["unverifiable"]) == (
        "pass",
        3,
        0,
        0,
    )
    rounds = report["rounds"]
    assert [r["anchor"]["round"] for r in rounds] == [1, 2, 3]
    assert all(r["anchor"]["participantCount"] == 3 and not r["refused"] for r in rounds)
    # Each round starts from the model the previous one anchored.
    for before, after in pairwise(rounds):
        assert after["anchor"]["previousModelDigest"] == before["anchor"]["modelDigest"]
    assert all(r["gasUsed"] <= 80_000 for r in rounds)
    assert rounds[-1]["metrics"]["validation"]["roc_auc"] > 0.75
    assert set(rounds[0]["timings"]) == {
        "preflight",
        "train",
        "verify",
        "aggregate",
        "anchor",
        "proofs",
        "receipts",
    }

    manifest = read_manifest(out / "bundle")
    assert manifest["format"] == BUNDLE_FORMAT and manifest["roundCount"] == 3
    assert [r["round"] for r in read_rounds(out / "bundle")] == [1, 2, 3]
    assert (out / "bundle.tar.gz").stat().st_size > 0
    for party in ("institute", "bank-0", "bank-1", "bank-2", "regulator"):
        assert (out / "parties" / party / "key.json").is_file()
    # The standard deployment record, for the CLI's read commands, is the scenario's.
    scenario = json.loads((out / "scenario.json").read_text())
    assert Deployment.load(out / "deployment.json").to_json() == scenario["deployment"]

    again = simulate("--out", str(out))
    assert again.exit_code == 2
    assert "already holds a scenario" in again.stderr


def test_the_human_report_is_a_round_table() -> None:
    result = simulate("--banks", "2", "--rounds", "2")
    assert result.exit_code == 0, result.output
    for column in ("round", "loss", "AUC", "participants", "root", "gas", "tx"):
        assert column in result.stdout
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("audit of 2 rounds: VERIFIED: every check holds (")


def test_resume_needs_the_run_and_its_node(tmp_path: Path) -> None:
    assert "--resume needs the --out" in simulate("--resume").stderr
    embedded = simulate("--resume", "--out", str(tmp_path))
    assert embedded.exit_code == 2 and "embedded chain" in embedded.stderr


def test_set_up_only_needs_a_new_out_and_a_node(tmp_path: Path) -> None:
    for args in (
        ["--set-up-only"],
        ["--set-up-only", "--out", str(tmp_path / "run")],
        ["--set-up-only", "--out", str(tmp_path / "run"), "--chain", "http://x", "--resume"],
    ):
        result = simulate(*args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            "error: --set-up-only needs a new --out and the node to run on (--chain URL)"
        ]


def test_local_epochs_are_part_of_the_job(tmp_path: Path) -> None:
    """--epochs reaches every bank's training and the model spec the job commits to."""
    models = {}
    for epochs in (1, 3):
        out = tmp_path / f"epochs-{epochs}"
        result = simulate(
            "--banks", "2", "--rounds", "1", "--epochs", str(epochs), "--out", str(out), "--json"
        )
        assert result.exit_code == 0, result.output
        models[epochs] = json.loads(result.stdout)["rounds"][0]["anchor"]["modelDigest"]
        scenario = json.loads((out / "scenario.json").read_text())
        assert scenario["settings"]["epochs"] == epochs
        spec = read_manifest(out / "bundle")["job"]["modelSpec"]
        objects = out / "bundle" / "objects"
        assert (
            json.loads((objects / spec[:2] / spec[2:]).read_bytes())["training"]["epochs"] == epochs
        )
    assert models[1] != models[3]
    assert "--epochs" in simulate("--epochs", "0").stderr


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    return result.stderr.rstrip("\n")


def test_an_out_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    error = one_line_error(simulate("--out", str(a_file / "run")))
    assert error == f"error: cannot use --out {a_file / 'run'}: Not a directory"


def test_party_keys_are_private_to_their_owner(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert simulate("--banks", "2", "--rounds", "1", "--out", str(out)).exit_code == 0
    for party in ("institute", "bank-0", "bank-1", "regulator"):
        directory = out / "parties" / party
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, party
        assert stat.S_IMODE((directory / "key.json").stat().st_mode) == 0o600, party


def test_temporary_directories_are_made_only_without_out_and_abandoned_ones_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert simulate("--banks", "2", "--rounds", "1", "--out", str(tmp_path / "run")).exit_code == 0
    assert list(scratch.iterdir()) == []

    killed = scratch / "consortium-aml-killed"  # its owner died: the lock is free
    (killed / "parties").mkdir(parents=True)
    (killed / "owner.lock").write_text("process 1 (consortium simulate aml)")
    stale_empty = scratch / "consortium-aml-old"
    stale_empty.mkdir()
    os.utime(stale_empty, (1, 1))
    young_empty, in_use = scratch / "consortium-aml-new", scratch / "consortium-aml-live"
    young_empty.mkdir()
    in_use.mkdir()
    with ExclusiveLock(in_use / "owner", "a live run's directory"):
        assert simulate("--banks", "2", "--rounds", "1").exit_code == 0
    assert sorted(p.name for p in scratch.iterdir()) == [in_use.name, young_empty.name]


@pytest.fixture
def node_run(anvil_node: AnvilNode, tmp_path: Path) -> Path:
    """The --out directory of a finished one-round run on the session's node."""
    out = tmp_path / "run"
    args = ("--chain", anvil_node.url, "--banks", "2", "--rounds", "1", "--out", str(out))
    assert simulate(*args).exit_code == 0
    return out


@pytest.mark.anvil
def test_a_resume_adds_rounds_and_keeps_every_other_setting(
    anvil_node: AnvilNode, node_run: Path
) -> None:
    def resume(*args: str) -> Result:
        return simulate("--chain", anvil_node.url, "--out", str(node_run), "--resume", *args)

    scenario = node_run / "scenario.json"
    for option, value, before in (("--banks", "3", 2), ("--seed", "8", 7), ("--epochs", "2", 1)):
        assert one_line_error(resume(option, value)) == (
            f"error: {option} {value} differs from this run's {before} ({scenario}): a resumed "
            "run keeps its banks, seed, epochs"
        )
    more = resume("--rounds", "2", "--banks", "2", "--json")
    assert more.exit_code == 0, more.output
    report = json.loads(more.stdout)
    # Round 1 is the earlier run's, taken from the journal; round 2 is new.
    assert [(r["anchor"]["round"], r["resumed"]) for r in report["rounds"]] == [
        (1, True),
        (2, False),
    ]
    assert report["audit"]["rounds"] == 2
    assert json.loads(scenario.read_text())["settings"]["rounds"] == 2
    assert one_line_error(resume("--rounds", "1")) == (
        f"error: --rounds 1 is fewer than this run's 2 ({scenario}): a resumed run can add "
        "rounds, not drop them"
    )
    again = resume("--json")  # as before: two rounds, both done
    assert again.exit_code == 0, again.output
    assert len(json.loads(again.stdout)["rounds"]) == 2


@pytest.mark.anvil
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda text: text[: len(text) // 2], "is not JSON"),
        (lambda text: "[1, 2]", "is not a consortium.simulation/1 file"),
        (lambda text: text.replace('"banks": 2', '"banks": "2"'), "settings.banks must be an"),
        (lambda text: text.replace('"jobId": 1', '"jobId": null'), "jobId must be an integer"),
        (lambda text: text.replace('"bank-1"', '"../bank-1"'), "'../bank-1' is not a party"),
        (lambda text: text.replace('"settings"', '"setings"'), "missing field settings"),
    ],
    ids=["truncated", "not-a-scenario", "banks-text", "job-null", "party-path", "no-settings"],
)
def test_a_damaged_scenario_file_is_refused_in_one_line(
    anvil_node: AnvilNode, node_run: Path, damage: Callable[[str], str], expected: str
) -> None:
    scenario = node_run / "scenario.json"
    scenario.write_text(damage(scenario.read_text()))
    result = simulate("--chain", anvil_node.url, "--out", str(node_run), "--resume")
    assert expected in one_line_error(result)


@pytest.mark.anvil
def test_a_scenario_on_a_chain_reset_since_is_refused(tmp_path: Path, unused_port: int) -> None:
    node = AnvilNode(tmp_path / "node", port=unused_port)
    node.start()
    try:
        out = tmp_path / "run"
        base = ("--chain", node.url, "--out", str(out))
        assert simulate(*base, "--banks", "2", "--rounds", "1").exit_code == 0
        node.stop()
        node.state_file.unlink()
        node.start()
        error = one_line_error(simulate(*base, "--resume"))
        assert error.startswith(f"error: {out / 'scenario.json'} names contracts with no code ")
        assert error.endswith(": the chain was reset? start a new run with another --out")
    finally:
        node.stop()
