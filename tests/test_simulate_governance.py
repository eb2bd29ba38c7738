"""``consortium simulate governance``: the README's first command until training lands."""

from __future__ import annotations

import json

from click.testing import CliRunner

from consortium.cli.main import cli


def test_walkthrough_passes_on_the_embedded_chain() -> None:
    result = CliRunner().invoke(cli, ["simulate", "governance", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    actions = [step["action"] for step in report["steps"]]
    assert actions[0] == "deploy" and "relay signed grant" in actions
    refused = next(s for s in report["steps"] if s["action"] == "grant itself consent")
    assert refused["outcome"] == "refused by the chain: NotDatasetOwner"


def test_an_unreachable_chain_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["simulate", "governance", "--chain", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.stderr == "error: cannot reach http://127.0.0.1:9: connection refused\n"
