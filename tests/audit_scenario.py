"""A small AML job, run and exported, for the tests of the auditor and its command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bundle_files import read_manifest, read_rounds

import consortium.cli.audit as cli_audit
from consortium.chain.base import Chain
from consortium.ledger.client import Ledger
from consortium.orchestration.bundle import export_bundle
from consortium.scenarios import aml

ROUNDS = 3


@dataclass(frozen=True)
class Scenario:
    chain: Chain
    run: aml.AmlRun
    out: Path
    bundle: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.bundle)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return read_rounds(self.bundle)


def run_scenario(chain: Chain, out: Path, rounds: int = ROUNDS) -> Scenario:
    """Sets up and runs the AML scenario on ``chain`` and exports its bundle into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    settings = aml.AmlSettings(banks=3, rounds=rounds, seed=7)
    run = aml.set_up(chain, out, settings, report=lambda _: None)
    aml.run_rounds(chain, run, lambda _: None)
    ledger = Ledger(chain, run.deployment)
    bundle = export_bundle(
        ledger, run.job_id, run.institute.store, run.institute.journal_reader(), out
    )
    return Scenario(chain, run, out, bundle)


def reach_scenario_chain(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> Chain:
    """Makes the audit commands reach the scenario's embedded chain whatever URL they get, and
    leave it open for the next test."""
    monkeypatch.setattr(scenario.chain, "close", lambda: None)
    monkeypatch.setattr(cli_audit, "open_chain", lambda url: scenario.chain)
    return scenario.chain
