"""``consortium journal``: the coordinator's write-ahead journal, and its repair.

The journal (:mod:`consortium.store.journal`) is what lets a coordinator resume a job
after a crash. One damaged past what opening it cuts (a torn last line) is refused by resume
and export; ``consortium journal repair`` rebuilds it from the chain and the coordinator's
store (:mod:`consortium.orchestration.repair`), keeping the damaged file beside it.
"""

from __future__ import annotations

from pathlib import Path

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.export import (
    JOURNAL_FILE,
    STORE_DIR,
    coordinator_dir,
    coordinator_dir_option,
)
from consortium.cli.output import emit_json
from consortium.cli.params import ID, json_option
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.orchestration.export import job_on_chain
from consortium.orchestration.repair import journaled_deployment, repair_journal
from consortium.store.artifacts import ArtifactStore


@click.group()
def journal() -> None:
    """The coordinator's journal: repair one that resume and export refuse."""


@journal.command("repair")
@click.option("--job", "job_id", type=ID, required=True, help="The job's id.")
@coordinator_dir_option
@json_option
@pass_context
def repair(context: CliContext, job_id: int, source: Path | None, as_json: bool) -> None:
    """Rebuild the coordinator's journal of job JOB from the chain and its store.

    Every round the chain has anchored gets its entries back from the chain's event and the
    stored records; work announced for later rounds is kept, so a resume finishes it. The
    damaged file is kept as journal.jsonl.damaged-<time>; a sound journal is left untouched.
    """
    directory = coordinator_dir(context, source)
    path = directory / JOURNAL_FILE
    if not path.is_file():
        raise UsageError(f"no coordinator journal at {path}")
    store = ArtifactStore(directory / STORE_DIR)
    ledger = Ledger(context.chain(), journaled_deployment(path) or context.deployment())
    job_on_chain(ledger, job_id)
    report = repair_journal(path, store, ledger, job_id)
    if as_json:
        emit_json(
            {
                "journal": str(report.path),
                "changed": report.changed,
                "entries": report.entries,
                "damagedLines": report.damaged_lines,
                "rebuiltRounds": report.rebuilt_rounds,
                "droppedEntries": report.dropped_entries,
                "keptCopy": str(report.kept_copy) if report.kept_copy else None,
            }
        )
        return
    if not report.changed:
        click.echo(f"{path} is sound ({report.entries} entries): nothing to repair")
        return
    rebuilt = ", ".join(map(str, report.rebuilt_rounds)) or "none"
    click.echo(
        f"repaired {path}: {report.entries} entries; {len(report.damaged_lines)} damaged "
        f"line(s) dropped, {report.dropped_entries} entry(ies) superseded; rounds rebuilt "
        f"from the chain: {rebuilt}; the damaged journal is kept as {report.kept_copy}"
    )
