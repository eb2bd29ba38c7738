"""``consortium simulate``: whole scenarios in one process, on the embedded chain or a node."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress

from consortium.audit import Verdict, open_bundle, verify_bundle
from consortium.chain.backend import Chain, connect
from consortium.cli.output import emit_json, emit_table
from consortium.cli.params import epochs_option, json_option
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.orchestration.engine import RoundResult
from consortium.orchestration.export import export_job
from consortium.protocol.messages import anchor_to_json
from consortium.scenarios import aml
from consortium.scenarios.governance import Step, run_governance

chain_option = click.option(
    "--chain",
    "chain_url",
    default="embedded",
    show_default=True,
    help="'embedded' (in-process) or the JSON-RPC URL of a local dev node.",
)


@click.group()
def simulate() -> None:
    """Run a whole consortium scenario in one process."""


@simulate.command("governance")
@chain_option
@json_option
def governance(chain_url: str, as_json: bool) -> None:
    """Found a consortium, vote members in and out, grant, relay and revoke consents."""
    console = Console(stderr=True, quiet=as_json)
    with console.status("founding the consortium") as status:

        def report(step: Step) -> None:
            status.update(f"{step.actor}: {step.action}")

        result = run_governance(connect(chain_url), report=report)
    if as_json:
        emit_json(
            {
                "deployment": result.deployment.to_json(),
                "steps": [s.__dict__ for s in result.steps],
                "ok": True,
            }
        )
        return
    emit_table(
        "governance walkthrough", ("actor", "action", "outcome"),
        [(s.actor, s.action, s.outcome) for s in result.steps],
    )  # fmt: skip
    click.echo(f"walkthrough passed: {len(result.steps)} steps verified against the chain")


@simulate.command("aml")
@chain_option
@click.option("--banks", type=click.IntRange(2, 50), default=4, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=7, show_default=True)
@epochs_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep every party's store and journal, and the job's bundle, here [default: a "
    "temporary directory, removed afterwards].",
)
@click.option("--resume", is_flag=True, help="Finish the interrupted run recorded in --out.")
@json_option
def aml_command(
    chain_url: str, banks: int, rounds: int, seed: int, epochs: int, out: Path | None,
    resume: bool, as_json: bool,
) -> None:  # fmt: skip
    """Banks train a shared AML risk model; every round is anchored and checked."""
    if resume and out is None:
        raise UsageError("--resume needs the --out directory of the interrupted run")
    if resume and chain_url == "embedded":
        raise UsageError(
            "--resume needs the node the run used (--chain URL): the embedded chain lived "
            "and died with the interrupted process"
        )
    console = Console(stderr=True, quiet=as_json)
    chain = connect(chain_url)
    with tempfile.TemporaryDirectory(prefix="consortium-aml-") as scratch:
        directory = out or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        with console.status("setting up the consortium") as status:
            if resume:
                run = aml.load(chain, directory)
            else:
                settings = aml.AmlSettings(banks, rounds, seed, epochs)
                run = aml.set_up(chain, directory, settings, report=status.update)
        results = _run_with_progress(console, chain, run)
        ledger = Ledger(chain, run.deployment)
        bundle = export_job(
            ledger, run.job_id, run.institute.store, run.institute.journal_reader(), directory
        ).bundle
        verdict = _audit(chain, bundle)
        if as_json:
            emit_json(
                {
                    "jobId": run.job_id,
                    "chainId": chain.chain_id,
                    "deployment": run.deployment.to_json(),
                    "rounds": [_round_json(r) for r in results],
                    "bundle": str(bundle) if out else None,
                    "audit": {**verdict.to_json(), "rounds": verdict.rounds},
                }
            )
            click.get_current_context().exit(verdict.exit_code)
        emit_table(
            f"AML job {run.job_id}: {len(run.banks)} banks, chain {chain.chain_id}",
            ("round", "loss", "AUC", "participants", "root", "gas", "tx"),
            [_round_row(r) for r in results],
        )
        where = f"; bundle in {bundle}" if out else ""
        click.echo(f"audit of {verdict.rounds} rounds: {verdict.describe()}{where}")
        click.get_current_context().exit(verdict.exit_code)


def _audit(chain: Chain, bundle: Path) -> Verdict:
    """The auditor's full verification of the exported bundle against the chain, run while
    the chain (the embedded one lives only as long as this process) is still there."""
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        for result in verify_bundle(opened, chain):
            verdict.add(result)
    return verdict


def _run_with_progress(console: Console, chain: Chain, run: aml.AmlRun) -> list[RoundResult]:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training rounds", total=run.settings.rounds)

        def advance(result: RoundResult) -> None:
            auc = result.metrics["validation"]["roc_auc"]
            progress.update(task, advance=1, description=f"round {result.round}: AUC {auc:.3f}")

        return aml.run_rounds(chain, run, advance)


def _round_json(result: RoundResult) -> dict[str, object]:
    return {
        "round": result.round,
        "anchor": anchor_to_json(result.anchor),
        "transaction": result.tx_hash,
        "gasUsed": result.gas_used,
        "metrics": result.metrics,
        "refused": result.refused,
        "timings": result.timings,
        "resumed": result.resumed,
    }


def _round_row(result: RoundResult) -> tuple[object, ...]:
    validation = result.metrics["validation"]
    auc = validation["roc_auc"]
    return (
        result.round,
        f"{validation['log_loss']:.4f}",
        "-" if auc is None else f"{auc:.4f}",
        f"{result.anchor.participant_count}"
        + (f" ({len(result.refused)} refused)" if result.refused else ""),
        result.anchor.merkle_root.hex()[:16] + "…",
        f"{result.gas_used:,}",
        result.tx_hash[:12] + "…",
    )
