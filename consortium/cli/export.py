"""``consortium export``: the coordinator hands over a job's audit bundle.

The bundle (docs/audit-bundle.md) is built from the coordinator's own state, which is what
holds every record, update and model it anchored:

- by default, under the configured data directory: the store ``<data_dir>/coordinator/store``
  and the journal ``<data_dir>/coordinator/journal.jsonl``;
- with ``--from DIR``, a directory holding ``store/`` and ``journal.jsonl`` (for example a
  simulation's ``parties/institute``).

The deployment is the one the journal's first entry records (where the coordinator anchored
the job), or, for a journal that records none, the configured one; the chain endpoint is the
configured one. Before anything is written the command checks that the job exists on chain
and that every round the journal says it anchored is the anchor the chain holds, so that a
journal of another deployment, chain or job cannot become a bundle that only the auditor would
find wrong. The export is written beside its final place and renamed into it
(:func:`~consortium.orchestration.bundle.export_bundle`); an existing bundle is only replaced
with ``--force``.

The export never writes to the coordinator's journal or store: a coordinator may be running
the job's next round meanwhile. The bundle then holds the rounds the journal had finished
anchoring when the export read it; a round anchored on chain but not yet journaled is left
out, and the command warns, since the auditor's completeness check will say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json
from consortium.cli.params import json_option
from consortium.errors import ChainRevert, UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import Job
from consortium.orchestration.bundle import export_bundle
from consortium.protocol.messages import anchor_from_json
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal, JournalReader

COORDINATOR_DIR = "coordinator"
STORE_DIR = "store"
JOURNAL_FILE = "journal.jsonl"
BUNDLE_DIR = "bundle"
ARCHIVE_FILE = "bundle.tar.gz"


def coordinator_dir(context: CliContext, source: Path | None) -> Path:
    """The directory holding the coordinator's ``store/`` and ``journal.jsonl``."""
    return source if source is not None else context.config.data_dir / COORDINATOR_DIR


def journal_deployment(journal: Journal) -> Deployment | None:
    """The deployment the coordinator recorded in the journal's first entry; None for a
    journal that records none (one begun before the entry carried it)."""
    bound = journal.last("job")
    if bound is None or "deployment" not in bound:
        return None
    source = f"{journal.path}: its job entry"
    deployment = Deployment.from_json(bound["deployment"], source=source)
    if (deployment.ledger, deployment.chain_id) != (bound.get("ledger"), bound.get("chainId")):
        raise UsageError(f"{source} names two deployments: the journal is damaged")
    return deployment


def anchored_rounds(journal: Journal, job_id: int) -> list[dict[str, Any]]:
    """The journal's ``anchored`` entries of job ``job_id`` in round order.

    A journal is one job's (the exporter reads every ``anchored`` and ``intent`` entry in
    it), so a journal naming other jobs is refused rather than mixed into the bundle.
    """
    entries = journal.find("anchored")
    jobs = sorted({_job_of(entry, journal.path) for entry in entries})
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
    return journal.newest_per_round("anchored")


def _job_of(entry: dict[str, Any], path: Path) -> int:
    anchor = entry.get("anchor")
    job = anchor.get("jobId") if isinstance(anchor, dict) else None
    if not isinstance(job, int) or isinstance(job, bool):
        raise UsageError(f"{path}: entry {entry.get('seq')} is an anchored round without a job")
    return job


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


def check_against_chain(ledger: Ledger, job_id: int, entries: list[dict[str, Any]]) -> None:
    """Checks that the journaled rounds are 1, 2, ... and that each journaled anchor is the
    one the chain holds.

    One view call per round: cheap beside the export itself, and it turns a journal of another
    deployment (or a damaged one) into an error here instead of a bundle that fails its audit.
    """
    where = f"chain {ledger.chain.chain_id} (ledger {ledger.deployment.ledger})"
    for expected, entry in enumerate(entries, start=1):
        anchor = anchor_from_json(entry["anchor"])
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


def _size(directory: Path) -> tuple[int, int]:
    """(number of objects, bytes) of a bundle directory."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    objects = sum(1 for p in files if p.parent.parent.name == "objects")
    return objects, sum(p.stat().st_size for p in files)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


@click.command("export")
@click.option("--job", "job_id", type=click.IntRange(1), required=True, help="The job's id.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write bundle/ and bundle.tar.gz into (created if needed).",
)
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding the coordinator's store/ and journal.jsonl, e.g. a simulation's "
    "parties/institute [default: <data_dir>/coordinator].",
)
@click.option("--force", is_flag=True, help="Replace a bundle already in --out.")
@json_option
@pass_context
def export(
    context: CliContext,
    job_id: int,
    out: Path,
    source: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Export the audit bundle of job JOB from the coordinator's store and journal.

    Writes OUT/bundle/ and OUT/bundle.tar.gz (docs/audit-bundle.md), which an auditor checks
    with `consortium audit OUT/bundle`. The coordinator's store and journal are read from
    <data_dir>/coordinator/store and <data_dir>/coordinator/journal.jsonl, or from --from
    DIR/store and DIR/journal.jsonl. The deployment is the one the journal records (else the
    configured one); the chain is the configured one.
    """
    directory = coordinator_dir(context, source)
    # Everything local is checked before the chain is contacted.
    bundle, archive = out / BUNDLE_DIR, out / ARCHIVE_FILE
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is not a directory")
    existing = [p for p in (bundle, archive) if p.exists()]
    if existing and not force:
        raise UsageError(
            f"{existing[0]} already exists; pass --force to replace it, or another --out"
        )
    journal_path = directory / JOURNAL_FILE
    if not journal_path.is_file():
        hint = (
            f"--from must name a directory holding {STORE_DIR}/ and {JOURNAL_FILE}"
            if source is not None
            else f"the default place, <data_dir>/{COORDINATOR_DIR}; pass --from for another"
        )
        raise UsageError(f"no coordinator journal at {journal_path} ({hint})")
    store_root = directory / STORE_DIR
    if not (store_root / "objects").is_dir():
        raise UsageError(f"no coordinator store at {store_root} (its objects/ is missing)")
    journal = JournalReader(journal_path)

    deployment = journal_deployment(journal) or context.deployment()
    ledger = Ledger(context.chain(), deployment)
    job = job_on_chain(ledger, job_id)
    entries = anchored_rounds(journal, job_id)
    console = Console(stderr=True, quiet=as_json)
    with console.status(f"checking {len(entries)} journaled anchors against the chain"):
        check_against_chain(ledger, job_id, entries)
    with console.status(f"exporting {len(entries)} rounds of job {job_id}"):
        out.mkdir(parents=True, exist_ok=True)
        written = export_bundle(ledger, job_id, ArtifactStore(store_root), journal, out)
    objects, size = _size(written)
    rounds, chain_rounds = len(entries), job.last_round
    if chain_rounds > rounds:
        click.echo(
            f"warning: job {job_id} has {chain_rounds} rounds anchored on chain, the journal "
            f"{rounds}: the bundle holds rounds 1 to {rounds}, and its audit will find it "
            "incomplete (export again once the coordinator has journaled the rest)",
            err=True,
        )
    if as_json:
        emit_json(
            {
                "jobId": job_id,
                "chainId": ledger.chain.chain_id,
                "rounds": rounds,
                "chainRounds": chain_rounds,
                "bundle": str(written),
                "archive": str(archive),
                "objects": objects,
                "bytes": size,
                "archiveBytes": archive.stat().st_size,
                "source": str(directory),
            }
        )
        return
    click.echo(f"bundle   {written}  ({objects} objects, {_megabytes(size)})")
    click.echo(f"archive  {archive}  ({_megabytes(archive.stat().st_size)})")
    click.echo(
        f"exported job {job_id}: {rounds} anchored round{'s' if rounds != 1 else ''} "
        f"from {directory}"
    )
