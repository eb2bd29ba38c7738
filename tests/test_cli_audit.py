"""``consortium audit``'s output: every check of every round, streamed as the audit goes.

The command prints what :func:`verify_bundle` yields as it yields it, so the table and the JSON
document must hold exactly the library's results for the same bundle, and the command's memory
must stay as flat in the number of rounds as the library's. The bundles are those of
tests/test_audit.py: its AML scenario on an embedded chain, exported; the command reaches that
chain through a replaced ``open_chain``, as there.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import shutil
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from audit_scenario import Scenario, reach_scenario_chain, run_scenario
from bundle_files import write_rounds
from click.testing import CliRunner

import consortium.cli.audit as cli_audit
from consortium.audit import CheckResult, Verdict, open_bundle, verify_bundle
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.cli.main import cli
from consortium.errors import ChainUnavailable

WIDE = "2000"
"""Columns for the table, so that no detail is folded across lines and each can be found whole."""
FLAT = 200_000
"""Bytes of Python memory that auditing 16 rounds may take beyond auditing 4. Holding the 12
extra rounds' results (as the command once did) took 0.6 MB for ``--json`` and 1.3 MB for the
table; what does grow is rich's cache of cell widths (bounded, about 60 kB by then)."""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    chain = EmbeddedChain()
    yield run_scenario(chain, tmp_path_factory.mktemp("cli-audit"))
    chain.close()


@pytest.fixture(scope="module")
def damaged(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the scenario's bundle with round 2's metrics object changed: failed rows."""
    bundle = Path(shutil.copytree(scenario.bundle, tmp_path_factory.mktemp("damaged") / "b"))
    metrics = next(bundle.rglob(scenario.rounds[1]["metrics"][2:]))
    metrics.chmod(0o644)
    metrics.write_bytes(metrics.read_bytes() + b" ")
    return bundle


@pytest.fixture(params=["untouched", "damaged"])
def bundle(request: pytest.FixtureRequest, scenario: Scenario) -> Path:
    return scenario.bundle if request.param == "untouched" else request.getfixturevalue("damaged")


@pytest.fixture
def on_scenario_chain(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> Chain:
    return reach_scenario_chain(scenario, monkeypatch)


def library_results(chain: Chain, bundle: Path) -> list[CheckResult]:
    with open_bundle(bundle) as opened:
        return list(verify_bundle(opened, chain))


def verdict_of(results: list[CheckResult]) -> Verdict:
    verdict = Verdict()
    for result in results:
        verdict.add(result)
    return verdict


# ------------------------------------------------------------------------------ the table


def expected_rows(results: list[CheckResult]) -> list[tuple[str, str, str]]:
    """(round, check, result) of each check of each round, in the order the check first
    appears there: what the table's rows must say."""
    groups: dict[tuple[str, str], list[CheckResult]] = {}
    for result in results:
        where = "job" if result.round is None else str(result.round)
        groups.setdefault((where, result.name), []).append(result)
    return [(where, name, summary(members)) for (where, name), members in groups.items()]


def summary(members: list[CheckResult]) -> str:
    bad = [r for r in members if not r.ok]
    if not bad:
        return f"pass {len(members)}/{len(members)}"
    status = "unverifiable" if all(r.unverifiable for r in bad) else "FAIL"
    return f"{status} {len(bad)}/{len(members)}"


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of every row under the heading (a failure's further details included)."""
    return [
        [cell.strip() for cell in line.split("│")] for line in stdout.splitlines() if "│" in line
    ]


def test_the_table_holds_every_check_of_every_round(
    scenario: Scenario, bundle: Path, on_scenario_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", WIDE)
    expected = library_results(scenario.chain, bundle)
    result = CliRunner().invoke(cli, ["audit", str(bundle), "--chain", "http://node"])
    verdict = verdict_of(expected)
    assert result.exit_code == verdict.exit_code, result.output

    rows = table_rows(result.stdout)
    assert [tuple(row[:3]) for row in rows if row[0]] == expected_rows(expected)
    details = [row[3] for row in rows]
    for failure in (r for r in expected if not r.ok):
        sentence = failure.message.partition(": ")[2]  # after "job J, round R"
        assert any(detail.endswith(sentence) for detail in details), failure.message
    lines, ledger = result.stdout.splitlines(), scenario.run.deployment.ledger
    assert lines[0] == f"audit of job 1 on chain {scenario.chain.chain_id}, ledger {ledger}"
    assert lines[-1] == verdict.describe()


def test_the_rounds_line_up_as_one_table(
    scenario: Scenario, damaged: Path, on_scenario_chain: Chain
) -> None:
    """Each round is printed as its own table: their columns must start where the heading's do."""
    stdout = CliRunner().invoke(cli, ["audit", str(damaged), "--chain", "http://node"]).stdout
    heading = next(line for line in stdout.splitlines() if "┃" in line)
    columns = [i for i, c in enumerate(heading) if c == "┃"]
    for line in stdout.splitlines():
        if "│" in line:
            assert [i for i, c in enumerate(line) if c == "│"][:3] == columns, line


# ------------------------------------------------------------------------------ the JSON


def test_the_json_is_one_document_holding_every_result(
    scenario: Scenario, bundle: Path, on_scenario_chain: Chain
) -> None:
    expected = library_results(scenario.chain, bundle)
    result = CliRunner().invoke(cli, ["audit", str(bundle), "--chain", "http://node", "--json"])
    verdict = verdict_of(expected)
    assert result.exit_code == verdict.exit_code, result.output
    document = {
        "bundle": str(bundle),
        "jobId": 1,
        "chainId": scenario.chain.chain_id,
        "ledger": scenario.run.deployment.ledger,
        "results": [r.to_json() for r in expected],
        "verdict": verdict.to_json(),
    }
    # Written a result at a time, it reads exactly as if printed whole.
    assert result.stdout == json.dumps(document, indent=2) + "\n"


# ------------------------------------------------------------------------------ memory


class Sink(io.TextIOBase):
    """Standard output that keeps nothing: the output of a long audit is not the command's
    memory (CliRunner would hold all of it)."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


def collecting(
    verify: Callable[..., Iterator[CheckResult]],
) -> Callable[..., Iterator[CheckResult]]:
    """``verify`` with garbage collected as each round starts: a reverted call leaves a
    reference cycle that the collector frees whenever it next runs, and that timing is not
    the command's (tests/test_audit.py's ``audit_peak`` does the same)."""

    def results(*args: Any, **kwargs: Any) -> Iterator[CheckResult]:
        last: int | None = None
        for result in verify(*args, **kwargs):
            if result.round != last:
                last = result.round
                gc.collect()
            yield result

    return results


def repeated_rounds(scenario: Scenario, directory: Path, count: int) -> Path:
    """A copy of the scenario's bundle whose rounds.jsonl holds round 1's entry ``count``
    times, numbered 1 to ``count``: every line is read and checked (most checks fail, as
    these are not the chain's rounds), and every check printed. Unlike tests/test_audit.py's
    ``many_rounds`` the lines are not padded: parsing a padded line would set the peak and
    hide what the command keeps."""
    bundle = Path(shutil.copytree(scenario.bundle, directory / "bundle"))
    first = scenario.rounds[0]
    write_rounds(bundle, [{**first, "round": n} for n in range(1, count + 1)])
    return bundle


def command_peak(bundle: Path, *options: str) -> int:
    """The peak of the Python memory ``consortium audit BUNDLE`` holds (tracemalloc); what
    existed before it is frozen out of the collections, which keeps them quick."""
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(Sink()), pytest.raises(SystemExit) as exited:
            cli.main(["audit", str(bundle), "--chain", "http://node", *options])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.unfreeze()
    assert exited.value.code == 1  # the repeated rounds are not the chain's: they fail
    return peak


@pytest.mark.parametrize("options", [(), ("--json",)], ids=["table", "json"])
def test_the_command_memory_is_flat_in_the_number_of_rounds(
    scenario: Scenario,
    on_scenario_chain: Chain,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    options: tuple[str, ...],
) -> None:
    """Every result is printed as it comes, not kept: auditing four times as many rounds
    takes next to no more memory."""
    monkeypatch.setattr(cli_audit, "verify_bundle", collecting(verify_bundle))
    command_peak(repeated_rounds(scenario, tmp_path / "warm-up", 1), *options)  # lazy caches
    bundles = {count: repeated_rounds(scenario, tmp_path / str(count), count) for count in (4, 16)}
    # Each count is measured twice, the two interleaved, and its lower peak kept: a one-off
    # allocation of the process that lands in one window (seen once in a full run beside other
    # tests' modules, never alone) is not the command's; what the command holds is in both.
    measured: dict[int, list[int]] = {4: [], 16: []}
    for count in (4, 16, 4, 16):
        measured[count].append(command_peak(bundles[count], *options))
    peaks = {count: min(values) for count, values in measured.items()}
    assert peaks[16] - peaks[4] < FLAT, measured


# ------------------------------------------------------------------------------ the chain gone


@pytest.fixture
def node_gone_from_round_2(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> str:
    """The node stops answering when the audit asks for round 2's anchoring block, as if it
    went away midway; returns the error the command must end with."""
    chain = reach_scenario_chain(scenario, monkeypatch)
    block = scenario.rounds[1]["anchor"]["blockNumber"]
    get_block = chain.w3.eth.get_block

    def unreachable_from_round_2(number: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(number, int) and number >= block:
            raise requests.ConnectionError("connection refused")
        return get_block(number, *args, **kwargs)

    monkeypatch.setattr(chain.w3.eth, "get_block", unreachable_from_round_2)
    return f"error: cannot read block {block}: connection refused"


def test_an_audit_the_chain_leaves_midway_still_ends_with_a_verdict(
    scenario: Scenario, node_gone_from_round_2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", WIDE)
    result = CliRunner().invoke(cli, ["audit", str(scenario.bundle), "--chain", "http://node"])
    assert result.exit_code == ChainUnavailable.exit_code
    assert result.stderr.splitlines() == [node_gone_from_round_2]
    rounds = {row[0] for row in table_rows(result.stdout) if row[0]}
    assert {"job", "1"} <= rounds and "3" not in rounds
    assert result.stdout.splitlines()[-1].startswith(
        "NOT VERIFIED: the audit stopped before its end ("
    )


def test_the_json_of_an_audit_the_chain_leaves_midway_is_still_one_document(
    scenario: Scenario, node_gone_from_round_2: str
) -> None:
    result = CliRunner().invoke(
        cli, ["audit", str(scenario.bundle), "--chain", "http://node", "--json"]
    )
    assert result.exit_code == ChainUnavailable.exit_code
    assert result.stderr.splitlines() == [node_gone_from_round_2]
    document = json.loads(result.stdout)
    assert {r["round"] for r in document["results"]} >= {None, 1}
    assert 3 not in {r["round"] for r in document["results"]}
    verdict = document["verdict"]
    assert verdict["ok"] is False
    assert verdict["status"] == "incomplete"
    assert verdict["stopped"] == node_gone_from_round_2.removeprefix("error: ")
    assert (
        verdict["passed"] == len(document["results"]) - verdict["failed"] - verdict["unverifiable"]
    )
