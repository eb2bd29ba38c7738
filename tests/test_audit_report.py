"""``consortium audit BUNDLE --report FILE``: the audit as a self-contained, safe HTML page.

One AML scenario (3 banks, 3 rounds) runs once per module on the embedded chain, and the CLI
is pointed at it by replacing ``open_chain``, as in tests/test_audit.py. The report must hold
the verdict, one row per round, embedded PNG plots and a timeline of events in block order;
it must fetch nothing, escape whatever the bundle says, read logs only in bounded ranges
from the deployment block, and never change the verdict or the exit code.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_scenario import ROUNDS, Scenario, reach_scenario_chain, run_scenario
from bundle_files import edit_document
from click.testing import CliRunner, Result

import consortium.cli.audit as cli_audit
from consortium.audit import CheckResult, Scope, open_bundle, verify_bundle
from consortium.audit.report import MAX_PROBLEMS_PER_ROUND, AuditReport, ScopeChecks
from consortium.audit.timeline import block_ranges
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.cli.main import cli
from consortium.ledger.client import Ledger

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert('bundle')</script>"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    chain = EmbeddedChain()
    yield run_scenario(chain, tmp_path_factory.mktemp("report"))
    chain.close()


@pytest.fixture
def on_scenario_chain(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> Chain:
    return reach_scenario_chain(scenario, monkeypatch)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args, "--chain", "http://node"])


def copy_bundle(scenario: Scenario, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scenario.bundle, tmp_path / "bundle"))


def round_rows(page: str) -> list[tuple[str, int]]:
    """(class, round) of each row of the per-round table."""
    return [
        (css, int(number))
        for css, number in re.findall(r'<tr class="round ([a-z]+)" data-round="(\d+)"', page)
    ]


def timeline_rows(page: str) -> list[tuple[int, str]]:
    """(block, event name) of each row of the timeline."""
    return [
        (int(block), name)
        for block, name in re.findall(r'<tr class="event [^"]*" data-block="(\d+)" '
                                      r'data-event="([A-Za-z]+)"', page)
    ]  # fmt: skip


# ------------------------------------------------------------------------------ the page


def test_the_report_of_an_untouched_bundle(
    scenario: Scenario, on_scenario_chain: Chain, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "audit.html"  # a missing directory is created
    result = invoke(str(scenario.bundle), "--report", str(path))
    assert result.exit_code == 0, result.output
    # The terminal output is the plain audit's.
    assert result.stdout.rstrip().splitlines()[-1].startswith("VERIFIED: every check holds")
    page = path.read_text(encoding="utf-8")

    verdict = result.stdout.rstrip().splitlines()[-1]
    assert f'<p class="verdict pass" id="verdict">{verdict}</p>' in page
    manifest = scenario.manifest
    for fact in (manifest["deployment"]["ledger"], str(manifest["chainId"]), "generated at"):
        assert fact in page
    assert round_rows(page) == [("pass", n) for n in range(1, ROUNDS + 1)]
    assert 'class="cell fail"' not in page

    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # metrics, gas, participants, timeline
    assert all(base64.b64decode(image, validate=True).startswith(PNG_MAGIC) for image in images)

    # Self-contained: nothing to fetch, nothing to run.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(?:src|href)="(?!data:image/png;base64,|#)', page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "default-src 'none'" in page

    events = timeline_rows(page)
    blocks = [block for block, _ in events]
    assert blocks == sorted(blocks)
    assert blocks[0] >= manifest["deployment"]["block_number"]
    names = [name for _, name in events]
    assert {"MemberAdded", "ConsentGranted", "DatasetRegistered", "JobCreated"} <= set(names)
    anchors = [block for block, name in events if name == "RoundAnchored"]
    assert anchors == [r["anchor"]["blockNumber"] for r in scenario.rounds]
    assert blocks[-1] == anchors[-1]  # the scan stops at the last anchor
    # Membership and consent came before the rounds that depended on them.
    assert max(b for b, n in events if n in ("MemberAdded", "ConsentGranted")) < anchors[0]


def test_json_output_and_a_report_together(
    scenario: Scenario, on_scenario_chain: Chain, tmp_path: Path
) -> None:
    path = tmp_path / "audit.html"
    result = invoke(str(scenario.bundle), "--json", "--report", str(path))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"]["ok"]
    assert f"{report['verdict']['passed']} passed" in path.read_text()


def test_log_scans_are_bounded_and_start_at_the_deployment(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    eth = scenario.chain.w3.eth
    scans: list[dict[str, Any]] = []
    real = eth.get_logs

    def recording(params: dict[str, Any]) -> Any:
        scans.append(params)
        return real(params)

    monkeypatch.setattr(eth, "get_logs", recording)
    deployment = scenario.manifest["deployment"]
    start = deployment["block_number"]
    end = scenario.rounds[-1]["anchor"]["blockNumber"]
    with open_bundle(scenario.bundle) as bundle:
        report = AuditReport(bundle)
        for result in verify_bundle(bundle, scenario.chain):
            report.add(result)
        # The checks read the registries' events once, in one range here, for the events check.
        assert [(s["fromBlock"], s["toBlock"], s["address"]) for s in scans] == [
            (start, end, [deployment["registry"], deployment["consents"]])
        ]
        scans.clear()
        chunked = report.render(scenario.chain, chunk=5)
        whole = report.render(scenario.chain)
    assert scans and all(s["fromBlock"] >= start and s["toBlock"] <= end for s in scans)
    assert all(s["toBlock"] - s["fromBlock"] < 2_000 for s in scans)
    assert min(s["fromBlock"] for s in scans) == start
    # Ranges of 5 blocks give the same timeline as one range.
    assert timeline_rows(chunked) == timeline_rows(whole)


def test_a_deployment_block_the_chain_contradicts_does_not_start_the_scan_at_zero(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle_dir = copy_bundle(scenario, tmp_path)
    edit_document(bundle_dir, lambda m: m["deployment"].update(block_number=0))
    eth = scenario.chain.w3.eth
    starts: list[int] = []
    real = eth.get_logs
    monkeypatch.setattr(eth, "get_logs", lambda p: starts.append(p["fromBlock"]) or real(p))
    with open_bundle(bundle_dir) as bundle:
        report = AuditReport(bundle)
        for result in verify_bundle(bundle, scenario.chain):
            report.add(result)
        page = report.render(scenario.chain)
        created = Ledger(scenario.chain, bundle.deployment).jobs.get(bundle.job.id).created_block
    assert starts and min(starts) == created > 0
    assert "deployment block 0 is not where registry" in page


def test_chunks_cover_the_range_exactly() -> None:
    assert list(block_ranges(6, 24, 5)) == [(6, 10), (11, 15), (16, 20), (21, 24)]
    assert list(block_ranges(7, 7)) == [(7, 7)]
    assert list(block_ranges(8, 7)) == []


# ------------------------------------------------------------------------------ damage


def test_a_tampered_bundle_shows_its_failure_and_keeps_exit_code_1(
    scenario: Scenario, on_scenario_chain: Chain, tmp_path: Path
) -> None:
    bundle = copy_bundle(scenario, tmp_path)
    metrics = scenario.rounds[1]["metrics"]
    damaged = next(bundle.rglob(metrics[2:]))
    damaged.chmod(0o644)
    damaged.write_bytes(damaged.read_bytes() + b" ")

    plain = invoke(str(bundle))
    path = tmp_path / "audit.html"
    reported = invoke(str(bundle), "--report", str(path))
    assert plain.exit_code == reported.exit_code == 1
    assert plain.stdout == reported.stdout
    page = path.read_text()
    assert '<p class="verdict fail" id="verdict">NOT VERIFIED' in page
    rows = dict((number, css) for css, number in round_rows(page))
    assert rows[2] == "fail" and rows[1] == "pass"
    row_2 = page[page.index('data-round="2"') : page.index('data-round="3"')]
    assert 'class="cell fail"' in row_2 and '<li class="fail">' in row_2
    assert metrics in row_2  # the failure message names the damaged object


def test_bundle_strings_are_escaped(
    scenario: Scenario, on_scenario_chain: Chain, tmp_path: Path
) -> None:
    bundle = copy_bundle(scenario, tmp_path)
    participant = scenario.manifest["job"]["participants"][0]

    def inject(manifest: dict[str, Any]) -> None:
        manifest["job"]["purpose"] = SCRIPT
        manifest["rounds"][0]["refused"] = {participant: f'"><img src=x onerror=alert(1)>{SCRIPT}'}

    edit_document(bundle, inject)
    path = tmp_path / "audit.html"
    result = invoke(str(bundle), "--report", str(path))
    assert result.exit_code == 1, result.output
    page = path.read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;bundle&#x27;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "round fail" in page  # the job check and round 1's metrics check both object


# ------------------------------------------------------------------------------ errors


def test_an_unwritable_report_is_refused_before_the_audit(
    scenario: Scenario,
    on_scenario_chain: Chain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audit ran")

    monkeypatch.setattr(cli_audit, "verify_bundle", no_audit)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, reason in (
        (blocker / "audit.html", f"cannot write the report to {blocker / 'audit.html'}: "),
        (tmp_path, "is a directory"),
    ):
        result = invoke(str(scenario.bundle), "--report", str(target))
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and reason in line


def test_a_report_that_fails_late_keeps_the_verdicts_exit_code(
    scenario: Scenario,
    on_scenario_chain: Chain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full_disk(path: Path, page: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_audit, "write_report", full_disk)
    path = tmp_path / "audit.html"
    result = invoke(str(scenario.bundle), "--report", str(path))
    assert result.exit_code == 0 and "VERIFIED" in result.stdout
    assert "cannot write the report" in result.stderr and not path.exists()

    def broken(self: AuditReport, chain: Chain) -> str:
        raise RuntimeError("plot failed")

    monkeypatch.setattr(AuditReport, "render", broken)
    result = invoke(str(scenario.bundle), "--report", str(path))
    assert result.exit_code == 0 and "VERIFIED" in result.stdout
    assert result.stderr.strip() == "error: the report could not be generated: plot failed"


def test_failure_messages_kept_per_round_are_capped() -> None:
    scope = ScopeChecks(1)
    for index in range(MAX_PROBLEMS_PER_ROUND + 5):
        scope.add(Scope(1, 1, f"p{index}").failed("update", "bad"))
    scope.add(CheckResult("lineage", 1, None, True, "fine"))
    assert len(scope.problems) == MAX_PROBLEMS_PER_ROUND and scope.omitted == 5
    assert scope.status == "fail" and scope.tallies["update"].failed == MAX_PROBLEMS_PER_ROUND + 5
