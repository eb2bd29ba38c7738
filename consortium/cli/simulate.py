"""``consortium simulate``: whole scenarios in one process, on the embedded chain or a node."""

from __future__ import annotations

import click
from rich.console import Console

from consortium.chain.backend import connect
from consortium.cli.output import emit_json, emit_table
from consortium.cli.params import json_option
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
