"""An SME-credit job trained to its end on an embedded chain and exported: what the tests of
the auditor's disclosure checks audit."""

from __future__ import annotations

from pathlib import Path

from consortium.chain.embedded import EmbeddedChain
from consortium.ledger.client import Ledger
from consortium.orchestration.export import export_job
from consortium.scenarios import sme_credit, sme_training


def exported_job(
    chain: EmbeddedChain, out: Path, settings: sme_credit.SmeSettings
) -> tuple[sme_credit.SmeRun, Path]:
    """The run set up in ``out`` with ``settings``, trained, and its bundle's path."""
    run = sme_credit.set_up(chain, out, settings, lambda _: None)
    sme_training.run_rounds(chain, run, lambda _: None)
    ledger = Ledger(chain, run.deployment)
    exported = export_job(
        ledger, run.job_id, run.institute.store, run.institute.journal_reader(), out
    )
    return run, exported.bundle
