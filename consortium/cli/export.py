"""``consortium export``: the coordinator hands over a job's audit bundle.

The bundle (docs/audit-bundle.md) is built from the coordinator's own state, which is what
holds every record, update and model it anchored:

- by default, under the configured data directory: the store ``<data_dir>/coordinator/store``
  and the journal ``<data_dir>/coordinator/journal.jsonl``;
- with ``--from DIR``, a directory holding ``store/`` and ``journal.jsonl`` (for example a
  simulation's ``parties/institute``).

The deployment is the one the journal's first entry records (where the coordinator anchored
the job), or, for a journal that records none, the configured one; the chain endpoint is the
configured one. The checks and the export are the simulations' too
(:func:`~consortium.orchestration.export.export_job`): nothing is written before the journal's
anchors are found to be the chain's, and an existing bundle is only replaced with ``--force``.

The export never writes to the coordinator's journal or store: a coordinator may be running
the job's next round meanwhile. The bundle then holds the rounds the journal had finished
anchoring when the export read it; a round anchored on chain but not yet journaled is left
out, and the command warns, since the auditor's completeness check will say so.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json
from consortium.cli.params import ID, json_option
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.orchestration.export import export_job, journal_deployment
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import JournalReader

COORDINATOR_DIR = "coordinator"
STORE_DIR = "store"
JOURNAL_FILE = "journal.jsonl"
BUNDLE_DIR = "bundle"
ARCHIVE_FILE = "bundle.tar.gz"


coordinator_dir_option = click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding the coordinator's store/ and journal.jsonl, e.g. a simulation's "
    "parties/institute [default: <data_dir>/coordinator].",
)


def coordinator_dir(context: CliContext, source: Path | None) -> Path:
    """The directory holding the coordinator's ``store/`` and ``journal.jsonl``."""
    return source if source is not None else context.config.data_dir / COORDINATOR_DIR


def _size(directory: Path) -> tuple[int, int]:
    """(number of objects, bytes) of a bundle directory."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    objects = sum(1 for p in files if p.parent.parent.name == "objects")
    return objects, sum(p.stat().st_size for p in files)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


@click.command("export")
@click.option("--job", "job_id", type=ID, required=True, help="The job's id.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write bundle/ and bundle.tar.gz into (created if needed).",
)
@coordinator_dir_option
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
    console = Console(stderr=True, quiet=as_json)
    with console.status(f"checking the journal against the chain and exporting job {job_id}"):
        done = export_job(ledger, job_id, ArtifactStore(store_root), journal, out)
    written = done.bundle
    objects, size = _size(written)
    rounds, chain_rounds = done.rounds, done.chain_rounds
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
