"""``consortium job``: training jobs as the ledger records them, and closing one.

A coordinator creates a job and anchors its rounds while running it (``consortium simulate
aml``, or the Python API); these commands read jobs for anyone, and let the coordinator end
one. Closing is how a job ends for good: after a participant left or a consent was revoked
the contract accepts no further anchor of the job, and its coordinator closes it rather than
leave it open.
"""

from __future__ import annotations

from typing import Any

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json, emit_table, timestamp
from consortium.cli.params import ID, account_option, json_option
from consortium.ledger.jobs import Job, JobProgress


@click.group()
def job() -> None:
    """Read training jobs, and close one as its coordinator."""


def _job_json(j: Job) -> dict[str, Any]:
    return {
        "id": j.id,
        "status": j.status,
        "coordinator": j.coordinator,
        "consumer": j.consumer,
        "purpose": j.purpose,
        "rounds": j.last_round,
        "lastAnchorBlock": j.last_anchor_block or None,
        "headModel": j.head_model_digest,
        "modelUses": j.model_use_count,
        "initialModel": j.initial_model_digest,
        "modelSpec": j.model_spec_digest,
        "participants": list(j.participants),
        "datasets": list(j.dataset_ids),
        "createdAt": j.created_at,
        "createdBlock": j.created_block,
    }


@job.command("list")
@json_option
@pass_context
def list_jobs(context: CliContext, as_json: bool) -> None:
    """List every job of the deployment, oldest first."""
    jobs = context.ledger().jobs
    found = [jobs.get(job_id) for job_id in range(1, jobs.count() + 1)]
    if as_json:
        emit_json([_job_json(j) for j in found])
        return
    rows = [
        (
            j.id, j.status, j.purpose, j.consumer, j.last_round, len(j.participants),
            len(j.dataset_ids), timestamp(j.created_at),
        )
        for j in found
    ]  # fmt: skip
    columns = (
        "id", "status", "purpose", "consumer", "rounds", "participants", "datasets", "created",
    )  # fmt: skip
    emit_table("jobs", columns, rows)


def _next_anchor(progress: JobProgress) -> str:
    if progress.status != "open":
        return "none: the job is closed"
    if progress.check_still_holds:
        return (
            "fast path: membership and consents unchanged since the last full check (for a "
            "round of the participants it covered, or some of them)"
        )
    return "re-checks the round's participants' membership and their datasets' consents"


@job.command("show")
@click.argument("job_id", type=ID)
@json_option
@pass_context
def show(context: CliContext, job_id: int, as_json: bool) -> None:
    """Show one job: its parties, datasets, anchored rounds and head model."""
    jobs = context.ledger().jobs
    j = jobs.get(job_id)
    progress = jobs.progress(job_id)
    if as_json:
        emit_json({**_job_json(j), "checkStillHolds": progress.check_still_holds})
        return
    for label, value in (
        ("id", j.id),
        ("status", j.status),
        ("purpose", j.purpose),
        ("coordinator", j.coordinator),
        ("consumer", j.consumer),
        ("rounds", f"{j.last_round} anchored" + (
            f", the last in block {j.last_anchor_block}" if j.last_round else ""
        )),
        ("head model", j.head_model_digest.hex()),
        ("model uses", f"{j.model_use_count} recorded"),
        ("initial", j.initial_model_digest.hex()),
        ("model spec", j.model_spec_digest.hex()),
        ("created", f"{timestamp(j.created_at)} in block {j.created_block}"),
        ("next anchor", _next_anchor(progress)),
    ):  # fmt: skip
        click.echo(f"{label:12} {value}")
    for participant in j.participants:
        click.echo(f"{'participant':12} {participant}")
    click.echo(f"{'datasets':12} {', '.join(map(str, j.dataset_ids))}")


@job.command("close")
@click.argument("job_id", type=ID)
@account_option
@pass_context
def close(context: CliContext, job_id: int, account: str) -> None:
    """Close JOB_ID for good: the contract then accepts no further round. Only the job's
    coordinator can close it.

    Safe to re-run: a job that is already closed is reported, and nothing is sent.
    """
    ledger = context.ledger(account)
    current = ledger.jobs.get(job_id)
    rounds = f"{current.last_round} round{'s' if current.last_round != 1 else ''}"
    if current.status == "closed":
        click.echo(f"job {job_id} is already closed after {rounds}; nothing sent")
        return
    ledger.jobs.close(job_id)
    click.echo(f"job {job_id} closed after {rounds}; head model {current.head_model_digest.hex()}")
