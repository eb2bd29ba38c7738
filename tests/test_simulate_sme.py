"""``consortium simulate sme-credit``: the vertical scenario through the CLI, generated data or
CSV files, ending in the audit of its bundle."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from consortium.cli.main import cli
from consortium.fl.party_csv import write_party_csv
from consortium.scenarios.sme_data import generate_sme

SMALL = ("--businesses", "1000", "--key-bits", "1024", "--max-rounds", "3")


def simulate(*args: str) -> Result:
    return CliRunner().invoke(cli, ["simulate", "sme-credit", *args])


def test_the_job_is_anchored_audited_and_scored(tmp_path: Path) -> None:
    result = simulate(*SMALL, "--out", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    audit = report["audit"]
    assert (audit["status"], audit["rounds"], audit["failed"]) == ("pass", 3, 0)
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    quality = report["quality"]
    assert set(quality) == {
        "federatedAuc", "bankOnlyAuc", "centralizedAuc", "lift", "gapToCentralized", "evaluated",
    }  # fmt: skip
    assert quality["evaluated"] > 0 and 0.5 < quality["federatedAuc"] <= 1
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    assert manifest["protocol"] == "hetero-lr/1"
    # The bundle names no business: the generator's ids all start SME-, and none is in it.
    for path in (tmp_path / "run" / "bundle").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"SME-" not in content, path


def test_the_human_report_has_the_epochs_the_quality_and_the_verdict() -> None:
    result = simulate(*SMALL)
    assert result.exit_code == 0, result.output
    for text in ("SME-credit job 1", "held-out AUC", "bank's features only", "VERIFIED"):
        assert text in result.output
    # Without --out the run's directory is removed: the referral list is not said to be kept.
    assert "listed (pass --out to keep the list)" in result.output


def test_csv_files_take_the_generators_place(tmp_path: Path) -> None:
    data = generate_sme(5, businesses=1000)
    write_party_csv(data.bank, tmp_path / "bank.csv")
    write_party_csv(data.platform, tmp_path / "platform.csv")
    result = simulate(
        *SMALL, "--bank-csv", str(tmp_path / "bank.csv"),
        "--platform-csv", str(tmp_path / "platform.csv"), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["audit"]["status"] == "pass"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,label,x\nSME-1,1,2\nSME-1,0,3\n", "duplicate"),
        ("id,label,x\nSME-1,1,abc\n", "not a number"),
        ("id,x\nSME-1,2\n", "label"),
    ],
)
def test_a_bad_csv_file_is_one_line_naming_it(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bank.csv").write_text(content)
    data = generate_sme(5, businesses=300)
    write_party_csv(data.platform, tmp_path / "platform.csv")
    result = simulate(
        *SMALL, "--bank-csv", str(tmp_path / "bank.csv"),
        "--platform-csv", str(tmp_path / "platform.csv"),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "bank.csv") in lines[0] and message in lines[0]


def test_one_csv_file_alone_is_a_usage_error(tmp_path: Path) -> None:
    result = simulate("--bank-csv", str(tmp_path / "bank.csv"))
    assert result.exit_code == 2
    assert "give both --bank-csv and --platform-csv" in result.output


@pytest.mark.parametrize(
    ("shared", "message"),
    [
        (0, "share 0 consented businesses"),
        # Some 50 shared, consented rows: fewer than a batch needs.
        (60, "batches need at least"),
    ],
    ids=["empty", "too-small-for-a-batch"],
)
def test_an_intersection_with_nothing_to_train_is_one_line_naming_both_files(
    tmp_path: Path, shared: int, message: str
) -> None:
    data = generate_sme(5, businesses=300)
    write_party_csv(data.bank, tmp_path / "bank.csv")
    kept = set(data.bank.ids[:shared])
    ids = tuple(b if b in kept else f"X-{i}" for i, b in enumerate(data.platform.ids))
    write_party_csv(replace(data.platform, ids=ids), tmp_path / "platform.csv")
    result = simulate(
        *SMALL, "--bank-csv", str(tmp_path / "bank.csv"),
        "--platform-csv", str(tmp_path / "platform.csv"),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert str(tmp_path / "bank.csv") in lines[0] and str(tmp_path / "platform.csv") in lines[0]
