"""``consortium deploy``: found the consortium on a chain."""

from __future__ import annotations

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.params import ROLES, account_option
from consortium.errors import UsageError
from consortium.ledger.deployment import Founder, deploy


def _parse_founder(context: CliContext, text: str) -> Founder:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"--founder takes ACCOUNT:NAME:ROLES, got {text!r}")
    who, name, roles = parts
    return Founder(context.resolve_address(who), name, ROLES.convert(roles, None, None))


@click.command("deploy")
@click.option(
    "--founder",
    "founders",
    multiple=True,
    required=True,
    help="ACCOUNT:NAME:ROLES of a founding member, e.g. bank-a:'Bank A':provider,consumer. "
    "Repeat for each founder.",
)
@click.option("--quorum-bps", type=click.IntRange(0, 9999), help="[default: from the config]")
@click.option(
    "--proposal-lifetime", type=click.IntRange(60, 31_536_000), help="Seconds [default: config]."
)
@account_option
@pass_context
def deploy_command(
    context: CliContext,
    founders: tuple[str, ...],
    quorum_bps: int | None,
    proposal_lifetime: int | None,
    account: str,
) -> None:
    """Deploy the registry, consent registry and training ledger; record their addresses."""
    config = context.config
    path = config.deployment_file
    chain = context.chain()
    if path.exists():
        raise UsageError(
            f"{path} already records a deployment; move it away to deploy a new consortium"
        )
    deployment = deploy(
        chain,
        context.signer(account),
        [_parse_founder(context, f) for f in founders],
        quorum_bps=config.governance.quorum_bps if quorum_bps is None else quorum_bps,
        proposal_lifetime=proposal_lifetime or config.governance.proposal_lifetime,
    )
    deployment.save(path)
    click.echo(f"registry  {deployment.registry}")
    click.echo(f"consents  {deployment.consents}")
    click.echo(f"ledger    {deployment.ledger}")
    click.echo(
        f"deployed on chain {deployment.chain_id} at block {deployment.block_number}; "
        f"recorded in {path}"
    )
