"""``consortium export``: the coordinator's bundle, from its store and journal, as configured.

One AML simulation (2 banks, 2 rounds) runs per module against the session's anvil node with
``--out``, which keeps the institute's (the coordinator's) store and journal and the bundle
the simulation exported itself. Each test then exports through the CLI with a configuration
pointing at that node and deployment, as a coordinator would: the bundle must be the very one
the simulation wrote (the archive is reproducible, so even its bytes are equal), and every
refusal is a one-line error with exit 2, before anything is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import ANVIL_CHAIN_ID

from consortium.chain.anvil import AnvilNode
from consortium.cli.main import cli

pytestmark = pytest.mark.anvil

Run = Callable[..., Result]


@dataclass(frozen=True)
class Simulation:
    url: str
    out: Path  # the simulation's --out: scenario.json, parties/, bundle/, bundle.tar.gz

    @property
    def institute(self) -> Path:
        return self.out / "parties" / "institute"


@pytest.fixture(scope="module")
def simulation(anvil_node: AnvilNode, tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    out = tmp_path_factory.mktemp("export") / "run"
    args = ["--chain", anvil_node.url, "--out", str(out), "--banks", "2", "--rounds", "2"]
    result = CliRunner().invoke(cli, ["simulate", "aml", *args])
    assert result.exit_code == 0, result.output
    return Simulation(anvil_node.url, out)


@pytest.fixture
def run(simulation: Simulation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``consortium --config C ...`` in ``tmp_path``, C pointing at the simulation's node and
    at a copy of its deployment record; the data directory is ``data``."""
    monkeypatch.chdir(tmp_path)
    for variable in ("CONFIG", "NETWORK", "CHAIN_ID", "DATA_DIR", "DEPLOYMENT_FILE"):
        monkeypatch.delenv(f"CONSORTIUM_{variable}", raising=False)
    deployment_file = tmp_path / "deployment.json"
    shutil.copy(simulation.out / "deployment.json", deployment_file)
    config = tmp_path / "consortium.toml"
    config.write_text(
        f'[network]\nurl = "{simulation.url}"\nchain_id = {ANVIL_CHAIN_ID}\n'
        'poll_latency = 0.01\n\n[paths]\ndata_dir = "data"\n'
        f'deployment_file = "{deployment_file}"\n'
    )
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["--config", str(config), *args], prog_name="consortium")

    return invoke


def one_line_error(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def assert_same_bundle(exported: Path, simulation: Simulation) -> None:
    """The exported bundle is the simulation's own, file for file and byte for byte."""
    ours, theirs = exported / "bundle", simulation.out / "bundle"
    files = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    assert all((ours / f).read_bytes() == (theirs / f).read_bytes() for f in files)
    archive = "bundle.tar.gz"
    assert (exported / archive).read_bytes() == (simulation.out / archive).read_bytes()


def test_export_from_a_coordinator_directory_is_the_simulations_bundle(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    out = tmp_path / "x"
    result = run("export", "--job", "1", "--from", str(simulation.institute), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_same_bundle(out, simulation)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"bundle   {out / 'bundle'}  (")
    assert lines[1].startswith(f"archive  {out / 'bundle.tar.gz'}  (")
    assert lines[2] == f"exported job 1: 2 anchored rounds from {simulation.institute}"
    assert result.stderr == ""
    # What the coordinator exported, the auditor verifies.
    audit = run("audit", str(out / "bundle"), "--json")
    assert audit.exit_code == 0, audit.output
    assert json.loads(audit.stdout)["verdict"]["ok"] is True


def test_export_reads_the_data_directory_by_default_and_reports_json(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    coordinator = tmp_path / "data" / "coordinator"
    shutil.copytree(simulation.institute / "store", coordinator / "store")
    shutil.copy(simulation.institute / "journal.jsonl", coordinator / "journal.jsonl")
    out = tmp_path / "x"
    result = run("export", "--job", "1", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rounds"] == report["chainRounds"] == 2
    assert report["source"] == str(coordinator) and report["bundle"] == str(out / "bundle")
    assert report["objects"] == len(list((out / "bundle" / "objects").rglob("*/*")))
    assert_same_bundle(out, simulation)


def test_an_existing_bundle_is_replaced_only_with_force(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    out = tmp_path / "x"
    args = ("export", "--job", "1", "--from", str(simulation.institute), "--out", str(out))
    assert run(*args).exit_code == 0
    (out / "bundle" / "manifest.json").write_text("{}")  # so that a replacement shows
    error = one_line_error(run(*args))
    assert f"{out / 'bundle'} already exists; pass --force" in error
    assert (out / "bundle" / "manifest.json").read_text() == "{}"
    # Only the archive left over from an earlier export also counts as a bundle there.
    shutil.rmtree(out / "bundle")
    assert "bundle.tar.gz already exists" in one_line_error(run(*args))
    assert run(*args, "--force").exit_code == 0
    assert_same_bundle(out, simulation)


def test_an_unknown_job_is_refused(run: Run, simulation: Simulation, tmp_path: Path) -> None:
    out = tmp_path / "x"
    result = run("export", "--job", "99", "--from", str(simulation.institute), "--out", str(out))
    error = one_line_error(result)
    assert "job 99 does not exist on chain 31337 (ledger 0x" in error
    assert not out.exists()


def test_a_directory_without_a_journal_is_refused(run: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "x"
    error = one_line_error(run("export", "--job", "1", "--from", str(empty), "--out", str(out)))
    assert f"no coordinator journal at {empty / 'journal.jsonl'}" in error
    assert not out.exists() and list(empty.iterdir()) == []
    # Nothing configured, nothing found: the default place is named.
    default = one_line_error(run("export", "--job", "1", "--out", str(out)))
    assert f"no coordinator journal at {tmp_path / 'data' / 'coordinator' / 'journal.jsonl'}" in (
        default
    )


def test_a_journal_without_anchored_rounds_of_the_job_is_refused(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    # A bank's directory has a store and a journal, but the bank anchors nothing.
    bank = simulation.out / "parties" / "bank-0"
    journal = (bank / "journal.jsonl").read_bytes()
    out = tmp_path / "x"
    error = one_line_error(run("export", "--job", "1", "--from", str(bank), "--out", str(out)))
    assert f"the coordinator journal {bank / 'journal.jsonl'} has no anchored round of job 1" in (
        error
    )
    assert (bank / "journal.jsonl").read_bytes() == journal and not out.exists()


def test_a_journal_of_another_deployment_is_refused(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    """A journaled anchor that is not the chain's (here its root altered) stops the export."""
    coordinator = tmp_path / "elsewhere"
    shutil.copytree(simulation.institute / "store", coordinator / "store")
    lines = (simulation.institute / "journal.jsonl").read_text().splitlines()
    anchored = [i for i, line in enumerate(lines) if json.loads(line)["kind"] == "anchored"]
    entry = json.loads(lines[anchored[1]])
    root = entry["anchor"]["merkleRoot"]
    entry["anchor"]["merkleRoot"] = ("0" if root[0] != "0" else "1") + root[1:]
    lines[anchored[1]] = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    (coordinator / "journal.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "x"
    error = one_line_error(
        run("export", "--job", "1", "--from", str(coordinator), "--out", str(out))
    )
    assert "round 2 of job 1 in the coordinator journal is not what chain 31337" in error
    assert not out.exists()


def test_a_torn_last_journal_line_is_skipped_and_left_alone(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    """A coordinator may be writing its journal during the export: a torn last line is not
    read, and not cut off either (the exporter never writes the coordinator's files)."""
    coordinator = tmp_path / "live"
    shutil.copytree(simulation.institute / "store", coordinator / "store")
    torn = (simulation.institute / "journal.jsonl").read_bytes() + b'{"kind":"open'
    (coordinator / "journal.jsonl").write_bytes(torn)
    out = tmp_path / "x"
    result = run("export", "--job", "1", "--from", str(coordinator), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (coordinator / "journal.jsonl").read_bytes() == torn
    assert_same_bundle(out, simulation)


# ------------------------------------------------------------------------ whose deployment


def coordinator_copy(
    simulation: Simulation, directory: Path, deployment: object, **entry: object
) -> Path:
    """A copy of the institute's store and journal whose first entry records ``deployment``
    (None: records none, as journals begun before the entry carried it), its other fields
    changed by ``entry``."""
    shutil.copytree(simulation.institute / "store", directory / "store")
    lines = (simulation.institute / "journal.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["kind"] == "job"
    first.pop("deployment")
    if deployment is not None:
        first["deployment"] = deployment
    lines[0] = json.dumps({**first, **entry}, separators=(",", ":"), sort_keys=True)
    (directory / "journal.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_the_deployment_comes_from_the_journal_without_any_configured(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    """What the README does: export a simulation's job, with no `consortium deploy` here."""
    (tmp_path / "deployment.json").unlink()
    out = tmp_path / "x"
    result = run("export", "--job", "1", "--from", str(simulation.institute), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_same_bundle(out, simulation)


def test_a_journal_recording_no_deployment_uses_the_configured_one(
    run: Run, simulation: Simulation, tmp_path: Path
) -> None:
    coordinator = coordinator_copy(simulation, tmp_path / "older", None)
    out = tmp_path / "x"
    args = ("export", "--job", "1", "--from", str(coordinator), "--out", str(out))
    assert run(*args).exit_code == 0
    assert_same_bundle(out, simulation)
    (tmp_path / "deployment.json").unlink()
    error = one_line_error(run(*args, "--force"))
    assert f"no deployment at {tmp_path / 'deployment.json'}: run `consortium deploy`" in error


@pytest.mark.parametrize(
    ("change", "entry", "expected"),
    [
        (
            {"chain_id": 1}, {"chainId": 1},
            "the deployment is on chain 1, but the endpoint is chain 31337",
        ),
        ({"ledger": "0x12"}, {}, "its job entry: ledger"),
        ({"ledger": "0x" + "12" * 20}, {}, "its job entry names two deployments"),
    ],
    ids=["another-chain", "malformed", "two-ledgers"],
)  # fmt: skip
def test_a_journal_recording_another_or_a_malformed_deployment_is_refused(
    run: Run,
    simulation: Simulation,
    tmp_path: Path,
    change: dict[str, Any],
    entry: dict[str, Any],
    expected: str,
) -> None:
    scenario = json.loads((simulation.out / "scenario.json").read_text())
    coordinator = coordinator_copy(
        simulation, tmp_path / "other", {**scenario["deployment"], **change}, **entry
    )
    out = tmp_path / "x"
    error = one_line_error(
        run("export", "--job", "1", "--from", str(coordinator), "--out", str(out))
    )
    assert expected in error
    assert not out.exists()
