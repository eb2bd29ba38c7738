"""``consortium chain``: the local anvil node, and the dev-chain faucet.

The node runs detached, with its state file under the configured data directory, so a member
can stop it at the end of the day and start it again with every member, consent and anchor in
place.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

import click

from consortium.chain.anvil import AnvilNode, NodeStatus
from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json, emit_table
from consortium.cli.params import json_option

WEI_PER_ETHER = 10**18
MAX_WEI = 2**256 - 1
_EXACT_DIGITS = 100  # enough for any uint256 amount of wei, with its fraction


class EtherType(click.ParamType):
    """A positive amount of ether, converted to wei exactly.

    Read as a decimal, not a float: a float turns ``nan``, ``inf`` and ``1e400`` into values
    that no wei amount (a uint256) can be, and rounds ordinary amounts.
    """

    name = "ETHER"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            ether = Decimal(text)
        except InvalidOperation:
            self.fail(f"{text!r} is not a number", param, ctx)
        if not ether.is_finite() or ether <= 0:
            self.fail(f"{text} is not a positive amount", param, ctx)
        with localcontext(prec=_EXACT_DIGITS):
            wei = int(ether * WEI_PER_ETHER)
        if wei > MAX_WEI:
            self.fail(f"{text} ether is more than any account can hold (uint256 wei)", param, ctx)
        if wei == 0:
            self.fail(f"{text} ether is less than 1 wei", param, ctx)
        return wei


def _node(context: CliContext) -> AnvilNode:
    config = context.config
    return AnvilNode(
        config.data_dir, config.anvil.host, config.anvil.port, chain_id=config.anvil.chain_id,
        archive=config.anvil.archive,
    )  # fmt: skip


def _warn_if_not_configured(context: CliContext, node: AnvilNode) -> None:
    """A node the CLI's other commands will not talk to is almost always a config mistake."""
    if context.config.network.url.rstrip("/") != node.url:
        click.echo(
            f"warning: network.url is {context.config.network.url}, not this node's {node.url}",
            err=True,
        )


def _describe(status: NodeStatus) -> str:
    if not status.running:
        return "stopped"
    if status.block_number is None:
        return f"running (pid {status.pid}) on {status.url}, not answering yet"
    return (
        f"running (pid {status.pid}) on {status.url}, chain id {status.chain_id}, "
        f"block {status.block_number}"
    )


@click.group()
def chain() -> None:
    """Run a local development node (anvil) and fund accounts on it."""


@chain.command()
@pass_context
def start(context: CliContext) -> None:
    """Start the local node, restoring its state from the data directory.

    With anvil.archive = true in the configuration the node also keeps every past block's
    state across restarts, so that audits of earlier rounds still verify.
    """
    node = _node(context)
    restored = node.state_file.exists()
    was_running = node.status().running
    status = node.start()
    _warn_if_not_configured(context, node)
    if was_running:
        click.echo(f"already {_describe(status)}")
        return
    origin = f"restored from {node.state_file}" if restored else f"new state in {node.state_file}"
    archive = "; archive node: every block's state is kept across restarts" if node.archive else ""
    click.echo(f"{_describe(status)}; {origin}{archive}")


@chain.command()
@pass_context
def stop(context: CliContext) -> None:
    """Stop the local node; its state is written to the data directory first."""
    node = _node(context)
    if node.stop():
        click.echo(f"stopped; state kept in {node.state_file}")
    else:
        click.echo("not running")


@chain.command()
@json_option
@pass_context
def status(context: CliContext, as_json: bool) -> None:
    """Whether the local node runs, on which URL, and at which block.

    A process that the pid file names but that is not this configuration's node is reported
    as such, and as not running.
    """
    node = _node(context)
    current = node.status()
    if current.foreign_pid is not None:
        click.echo(f"warning: {node.describe_foreign(current.foreign_pid)}", err=True)
    if as_json:
        emit_json(
            {
                "running": current.running,
                "pid": current.pid,
                "url": current.url,
                "chainId": current.chain_id,
                "blockNumber": current.block_number,
                "stateFile": current.state_file,
                "foreignPid": current.foreign_pid,
            }
        )
        return
    emit_table(
        None,
        ("running", "url", "chain id", "block", "pid", "state file"),
        [
            (
                current.running,
                current.url,
                current.chain_id,
                current.block_number,
                current.pid,
                current.state_file,
            )
        ],
    )


@chain.command()
@click.argument("account")
@click.option("--ether", "wei", type=EtherType(), default="100", show_default=True, help="Amount.")
@pass_context
def fund(context: CliContext, account: str, wei: int) -> None:
    """Send ether to ACCOUNT (address or keystore name) from the dev chain's faucet.

    Only local development chains have a faucet; on any other chain members fund their
    accounts the way that network prescribes.
    """
    address = context.resolve_address(account)
    context.chain().fund(address, wei)
    balance = context.chain().w3.eth.get_balance(address)
    click.echo(f"sent {_ether(wei)} ETH to {address}; balance {_ether(balance)} ETH")


def _ether(wei: int) -> str:
    """``wei`` in ether, exactly and without trailing zeros."""
    return f"{Decimal(wei) / WEI_PER_ETHER:f}".rstrip("0").rstrip(".")
