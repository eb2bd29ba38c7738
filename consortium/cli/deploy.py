"""``consortium deploy``: found the consortium on a chain."""

from __future__ import annotations

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.params import ACCOUNT, account_option
from consortium.errors import UsageError
from consortium.ledger.deployment import Founder, deploy
from consortium.ledger.roles import Role


def _parse_founder(context: CliContext, text: str) -> Founder:
    """One ``--founder`` value; every error names the value, since there may be several."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"--founder takes ACCOUNT:NAME:ROLES, got {text!r}")
    who, name, roles = parts
    try:
        return Founder(
            context.resolve_address(ACCOUNT.convert(who, None, None)), name, Role.parse(roles)
        )
    except click.BadParameter as exc:
        raise UsageError(f"--founder {text!r}: {exc.message}") from None
    except UsageError as exc:
        raise UsageError(f"--founder {text!r}: {exc}") from None


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
    # Everything that can be checked locally is checked before anything is sent: a deployment
    # that cannot be recorded, or a typo in the third founder, must not leave orphan contracts.
    if path.exists():
        raise UsageError(
            f"{path} already records a deployment; move it away to deploy a new consortium"
        )
    parsed = [_parse_founder(context, f) for f in founders]
    addresses = [f.address for f in parsed]
    if len(set(addresses)) != len(addresses):
        raise UsageError("the same account is named as founder twice")
    signer = context.signer(account)
    deployment = deploy(
        context.chain(),
        signer,
        parsed,
        quorum_bps=config.governance.quorum_bps if quorum_bps is None else quorum_bps,
        proposal_lifetime=proposal_lifetime or config.governance.proposal_lifetime,
    )
    try:
        deployment.save(path)
    except (OSError, UsageError) as exc:
        # The contracts exist now; their addresses must not be lost with the failed write.
        raise UsageError(
            f"deployed registry {deployment.registry}, consents {deployment.consents}, "
            f"ledger {deployment.ledger} on chain {deployment.chain_id} at block "
            f"{deployment.block_number}, but could not record it in {path}: {exc}"
        ) from None
    click.echo(f"registry  {deployment.registry}")
    click.echo(f"consents  {deployment.consents}")
    click.echo(f"ledger    {deployment.ledger}")
    click.echo(
        f"deployed on chain {deployment.chain_id} at block {deployment.block_number}; "
        f"recorded in {path}"
    )
