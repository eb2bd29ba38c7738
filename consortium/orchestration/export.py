"""Exporting a job's audit bundle from a coordinator's journal and store, checked first.

The one export path, for ``consortium export`` and the simulations alike. Before anything is
written it checks that the job exists on chain and that every round the journal says it
anchored is the anchor the chain holds, so that a journal of another deployment, chain or job
cannot become a bundle that only the auditor would find wrong. The bundle itself is written by
:func:`consortium.orchestration.bundle.export_bundle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from consortium.errors import ChainRevert, UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import Job
from consortium.orchestration import journal_entries
from consortium.orchestration.bundle import export_bundle
from consortium.orchestration.journal_entries import AnchorMined
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal


@dataclass(frozen=True)
class Export:
    """A written bundle: its directory, the rounds it holds and the rounds the chain holds."""

    bundle: Path
    rounds: int
    chain_rounds: int


def export_job(
    ledger: Ledger, job_id: int, store: ArtifactStore, journal: Journal, out: Path
) -> Export:
    """Checks the journal against the chain, then writes ``out/bundle`` and its archive.

    A round anchored on chain but not yet journaled is left out (a coordinator may be running
    the job's next round meanwhile); ``chain_rounds`` says so, and the audit's completeness
    check will too.
    """
    job = job_on_chain(ledger, job_id)
    entries = anchored_rounds(journal, job_id)
    check_against_chain(ledger, job_id, entries)
    return Export(export_bundle(ledger, job_id, store, journal, out), len(entries), job.last_round)


def journal_deployment(journal: Journal) -> Deployment | None:
    """The deployment the coordinator recorded in the journal's first entry; None for a
    journal that records none (one begun before the entry carried it)."""
    bound = journal_entries.job_binding(journal)
    if bound is None:
        return None
    source = f"{journal.path}: its job entry"
    deployment = bound.recorded_deployment(source)
    if deployment is None:
        return None
    if (deployment.ledger, deployment.chain_id) != (bound.ledger, bound.chain_id):
        raise UsageError(f"{source} names two deployments: the journal is damaged")
    return deployment


def anchored_rounds(journal: Journal, job_id: int) -> list[AnchorMined]:
    """The journal's newest anchor of each round of job ``job_id``, in round order.

    A journal is one job's (the exporter reads every ``anchored`` and ``intent`` entry in
    it), so a journal naming other jobs is refused rather than mixed into the bundle.
    """
    jobs = sorted({anchored.anchor.job_id for anchored in journal_entries.all_anchored(journal)})
    if job_id not in jobs:
        recorded = f" (it records job {', '.join(map(str, jobs))})" if jobs else ""
        raise UsageError(
            f"the coordinator journal {journal.path} has no anchored round of job "
            f"{job_id}{recorded}"
        )
    if len(jobs) > 1:
        raise UsageError(
            f"the coordinator journal {journal.path} holds rounds of jobs "
            f"{', '.join(map(str, jobs))}; a bundle is exported from the journal of one job"
        )
    return journal_entries.newest_anchored(journal)


def job_on_chain(ledger: Ledger, job_id: int) -> Job:
    """The job as the chain has it; an unknown job is a usage error naming the ledger."""
    try:
        return ledger.jobs.get(job_id)
    except ChainRevert as exc:
        if exc.name == "UnknownJob":
            raise UsageError(
                f"job {job_id} does not exist on chain {ledger.chain.chain_id} "
                f"(ledger {ledger.deployment.ledger})"
            ) from None
        raise


def check_against_chain(ledger: Ledger, job_id: int, entries: list[AnchorMined]) -> None:
    """Checks that the journaled rounds are 1, 2, ... and that each journaled anchor is the
    one the chain holds.

    One view call per round: cheap beside the export itself, and it turns a journal of another
    deployment (or a damaged one) into an error here instead of a bundle that fails its audit.
    """
    where = f"chain {ledger.chain.chain_id} (ledger {ledger.deployment.ledger})"
    for expected, anchored in enumerate(entries, start=1):
        anchor = anchored.anchor
        if anchor.round != expected:
            raise UsageError(
                f"the coordinator journal has no anchored round {expected} of job {job_id} "
                f"before round {anchor.round}"
                if anchor.round > expected
                else f"the coordinator journal records round {anchor.round} of job {job_id} twice"
            )
        try:
            stored: bytes | None = ledger.jobs.round_commitment(job_id, anchor.round)
        except ChainRevert as exc:
            if exc.name != "UnknownRound":
                raise
            stored = None
        if stored != anchor.commitment():
            held = "no anchor" if stored is None else f"commitment 0x{stored.hex()}"
            raise UsageError(
                f"round {anchor.round} of job {job_id} in the coordinator journal is not what "
                f"{where} holds ({held}): the journal is not this deployment's, or is damaged"
            )
