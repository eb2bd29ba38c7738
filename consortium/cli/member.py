"""``consortium member``: membership proposals, votes and the member list."""

from __future__ import annotations

from collections.abc import Callable

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json, emit_table, timestamp
from consortium.cli.params import ACCOUNT, ID, ROLES, account_option, json_option
from consortium.ledger.client import Ledger
from consortium.ledger.members import Member, Proposal, ProposalKind, ProposalOutcome
from consortium.ledger.roles import Role


@click.group()
def member() -> None:
    """Propose, vote on and list consortium members."""


@member.group()
def propose() -> None:
    """Open a proposal; your own approval is counted with it."""


def _report(outcome: ProposalOutcome) -> None:
    state = "executed" if outcome.executed else "open, waiting for approvals"
    click.echo(f"proposal {outcome.proposal_id}: {state}")


def _propose(
    ledger: Ledger,
    kind: ProposalKind,
    open_new: Callable[[], ProposalOutcome],
    *,
    account: str | None = None,
    name: str = "",
    roles: int = 0,
    quorum_bps: int = 0,
) -> None:
    """Opens the proposal, unless the same change is already pending.

    Re-running a propose command must not open a second proposal for the same change: the
    duplicate would split the votes, and whichever executes second would fail. An identical
    pending proposal gets the signer's approval instead (if it lacks it), which is what the
    first run would have given it.
    """
    members = ledger.members
    existing = members.open_proposal_for(
        kind, account=account, name=name, roles=roles, quorum_bps=quorum_bps
    )
    if existing is None:
        _report(open_new())
        return
    if members.has_approved(existing.id, ledger.address):
        click.echo(
            f"proposal {existing.id}: already open for this change, waiting for approvals "
            f"({existing.approvals}/{existing.needed}); nothing sent"
        )
        return
    click.echo(f"proposal {existing.id} is already open for this change; approving it")
    _report(members.approve(existing.id))


@propose.command("add")
@click.argument("member_account", metavar="ADDRESS", type=ACCOUNT)
@click.option("--name", required=True, help="Display name of the new member (1-64 bytes).")
@click.option("--roles", required=True, type=ROLES, help="E.g. provider,consumer.")
@account_option
@pass_context
def propose_add(
    context: CliContext, member_account: str, name: str, roles: Role, account: str
) -> None:
    """Propose to admit ADDRESS (or a keystore account name) as a member."""
    who = context.resolve_address(member_account)
    ledger = context.ledger(account)
    _propose(
        ledger,
        ProposalKind.ADD_MEMBER,
        lambda: ledger.members.propose_add(who, name, roles),
        account=who,
        name=name,
        roles=roles,
    )


@propose.command("remove")
@click.argument("member_account", metavar="ADDRESS", type=ACCOUNT)
@account_option
@pass_context
def propose_remove(context: CliContext, member_account: str, account: str) -> None:
    """Propose to remove member ADDRESS."""
    who = context.resolve_address(member_account)
    ledger = context.ledger(account)
    _propose(
        ledger,
        ProposalKind.REMOVE_MEMBER,
        lambda: ledger.members.propose_remove(who),
        account=who,
    )


@propose.command("roles")
@click.argument("member_account", metavar="ADDRESS", type=ACCOUNT)
@click.option("--roles", required=True, type=ROLES, help="The complete new role set.")
@account_option
@pass_context
def propose_roles(context: CliContext, member_account: str, roles: Role, account: str) -> None:
    """Propose to replace the roles of member ADDRESS."""
    who = context.resolve_address(member_account)
    ledger = context.ledger(account)
    _propose(
        ledger,
        ProposalKind.CHANGE_ROLES,
        lambda: ledger.members.propose_roles(who, roles),
        account=who,
        roles=roles,
    )


@propose.command("quorum")
@click.argument("quorum_bps", type=click.IntRange(0, 9999))
@account_option
@pass_context
def propose_quorum(context: CliContext, quorum_bps: int, account: str) -> None:
    """Propose a new quorum: approvals must exceed QUORUM_BPS/10000 of active members."""
    ledger = context.ledger(account)
    _propose(
        ledger,
        ProposalKind.CHANGE_QUORUM,
        lambda: ledger.members.propose_quorum(quorum_bps),
        quorum_bps=quorum_bps,
    )


@member.command("vote")
@click.argument("proposal_id", type=ID)
@account_option
@pass_context
def vote(context: CliContext, proposal_id: int, account: str) -> None:
    """Approve proposal PROPOSAL_ID; it executes once the quorum is exceeded."""
    _report(context.ledger(account).members.approve(proposal_id))


@member.command("execute")
@click.argument("proposal_id", type=ID)
@account_option
@pass_context
def execute(context: CliContext, proposal_id: int, account: str) -> None:
    """Execute a proposal that reached its quorum after members left or were removed."""
    context.ledger(account).members.execute(proposal_id)
    click.echo(f"proposal {proposal_id}: executed")


@member.command("leave")
@account_option
@pass_context
def leave(context: CliContext, account: str) -> None:
    """Leave the consortium (the last active member cannot)."""
    ledger = context.ledger(account)
    ledger.members.leave()
    click.echo(f"{ledger.address} left the consortium")


def _member_json(m: Member) -> dict[str, object]:
    return {
        "address": m.address,
        "name": m.name,
        "roles": m.roles,
        "active": m.active,
        "joinedAt": m.joined_at,
    }


@member.command("list")
@click.option("--all", "include_inactive", is_flag=True, help="Include former members.")
@json_option
@pass_context
def list_members(context: CliContext, include_inactive: bool, as_json: bool) -> None:
    """List the members."""
    members = context.ledger().members.all(include_inactive=include_inactive)
    if as_json:
        emit_json([_member_json(m) for m in members])
        return
    rows = [(m.name, m.address, m.roles, m.active, timestamp(m.joined_at)) for m in members]
    emit_table("members", ("name", "address", "roles", "active", "joined"), rows)


@member.command("show")
@click.argument("member_account", metavar="ADDRESS", type=ACCOUNT)
@json_option
@pass_context
def show(context: CliContext, member_account: str, as_json: bool) -> None:
    """Show one member."""
    m = context.ledger().members.get(context.resolve_address(member_account))
    if as_json:
        emit_json(_member_json(m))
        return
    for label, value in (
        ("name", m.name),
        ("address", m.address),
        ("roles", m.roles.describe()),
        ("active", "yes" if m.active else "no"),
        ("joined", timestamp(m.joined_at)),
    ):
        click.echo(f"{label:8} {value}")


def _proposal_json(p: Proposal) -> dict[str, object]:
    return {
        "id": p.id,
        "kind": p.kind,
        "status": p.status,
        "change": p.describe(),
        "account": p.account,
        "name": p.name,
        "roles": p.roles,
        "quorumBps": p.quorum_bps,
        "proposer": p.proposer,
        "createdAt": p.created_at,
        "expiresAt": p.expires_at,
        "approvals": p.approvals,
        "needed": p.needed,
    }


@member.command("proposals")
@click.option("--pending", is_flag=True, help="Only proposals still open for votes.")
@json_option
@pass_context
def proposals(context: CliContext, pending: bool, as_json: bool) -> None:
    """List membership proposals with their live approval counts."""
    found = [
        p for p in context.ledger().members.proposals() if not pending or p.status == "pending"
    ]
    if as_json:
        emit_json([_proposal_json(p) for p in found])
        return
    rows = [
        (p.id, p.describe(), p.status, f"{p.approvals}/{p.needed}", timestamp(p.expires_at))
        for p in found
    ]
    emit_table("proposals", ("id", "change", "status", "approvals", "expires"), rows)
