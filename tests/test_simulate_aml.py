"""``consortium simulate aml``: the README's first command, through the CLI."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from bundle_files import read_manifest, read_rounds
from click.testing import CliRunner, Result

from consortium.cli.main import cli
from consortium.ledger.deployment import Deployment
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
    assert set(rounds[0]["timings"]) == {"train", "verify", "aggregate", "anchor", "receipts"}

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
