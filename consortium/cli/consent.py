"""``consortium consent``: grant, revoke and inspect data-usage consents, also offline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json, emit_table, timestamp
from consortium.cli.params import TIME, account_option, json_option
from consortium.errors import UsageError
from consortium.ledger.consents import Consent, SignedGrant

Clock = Callable[[int], int]

purpose_option = click.option(
    "--purpose", required=True, help="What the data may be used for (1-32 bytes of text)."
)
window_options = [
    click.option(
        "--from",
        "valid_from",
        type=TIME,
        default="now",
        show_default=True,
        help="Start of the window: now, unix seconds, ISO 8601 or +N[smhdw].",
    ),
    click.option(
        "--until", "valid_until", type=TIME, required=True, help="End of the window (inclusive)."
    ),
]


def _with_window(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(window_options):
        command = option(command)
    return command


@click.group()
def consent() -> None:
    """Grant, revoke, list and relay data-usage consents."""


@consent.command("grant")
@click.argument("dataset_id", type=click.IntRange(1))
@click.argument("grantee")
@purpose_option
@_with_window
@account_option
@pass_context
def grant(
    context: CliContext,
    dataset_id: int,
    grantee: str,
    purpose: str,
    valid_from: Clock,
    valid_until: Clock,
    account: str,
) -> None:
    """Allow GRANTEE to use DATASET_ID for a purpose during a window (replaces any earlier)."""
    ledger = context.ledger(account)
    now = ledger.now()
    start, end = valid_from(now), valid_until(now)
    ledger.consents.grant(dataset_id, context.resolve_address(grantee), purpose, start, end)
    click.echo(
        f"consent granted: dataset {dataset_id} to {grantee} for {purpose!r} "
        f"from {timestamp(start)} until {timestamp(end)}"
    )


@consent.command("revoke")
@click.argument("dataset_id", type=click.IntRange(1))
@click.argument("grantee")
@purpose_option
@account_option
@pass_context
def revoke(context: CliContext, dataset_id: int, grantee: str, purpose: str, account: str) -> None:
    """Revoke a consent; it is invalid from the block that records this on."""
    context.ledger(account).consents.revoke(dataset_id, context.resolve_address(grantee), purpose)
    click.echo(f"consent revoked: dataset {dataset_id} to {grantee} for {purpose!r}")


def _consent_json(c: Consent, now: int) -> dict[str, object]:
    return {
        "datasetId": c.dataset_id,
        "grantee": c.grantee,
        "purpose": c.purpose,
        "validFrom": c.valid_from,
        "validUntil": c.valid_until,
        "grantedAt": c.granted_at,
        "revoked": c.revoked,
        "state": c.state(now),
    }


@consent.command("list")
@click.option("--dataset", "dataset_id", type=click.IntRange(1), help="Only this dataset.")
@json_option
@pass_context
def list_consents(context: CliContext, dataset_id: int | None, as_json: bool) -> None:
    """List consents with their state now (valid, pending, expired, revoked)."""
    ledger = context.ledger()
    ids = [dataset_id] if dataset_id else [d.id for d in ledger.consents.datasets()]
    found = [c for i in ids for c in ledger.consents.of_dataset(i)]
    now = ledger.now()
    if as_json:
        emit_json([_consent_json(c, now) for c in found])
        return
    rows = [
        (
            c.dataset_id,
            c.grantee,
            c.purpose,
            timestamp(c.valid_from),
            timestamp(c.valid_until),
            c.state(now),
        )
        for c in found
    ]
    emit_table("consents", ("dataset", "grantee", "purpose", "from", "until", "state"), rows)


@consent.command("show")
@click.argument("dataset_id", type=click.IntRange(1))
@click.argument("grantee")
@purpose_option
@json_option
@pass_context
def show(context: CliContext, dataset_id: int, grantee: str, purpose: str, as_json: bool) -> None:
    """Show one consent and whether it is valid now."""
    ledger = context.ledger()
    c = ledger.consents.get(dataset_id, context.resolve_address(grantee), purpose)
    data = _consent_json(c, ledger.now())
    if as_json:
        emit_json(data)
        return
    for label in ("datasetId", "grantee", "purpose", "state"):
        click.echo(f"{label:10} {data[label]}")
    click.echo(f"{'from':10} {timestamp(c.valid_from)}")
    click.echo(f"{'until':10} {timestamp(c.valid_until)}")
    click.echo(f"{'granted':10} {timestamp(c.granted_at)}")


@consent.command("sign")
@click.argument("dataset_id", type=click.IntRange(1))
@click.argument("grantee")
@purpose_option
@_with_window
@click.option(
    "--deadline",
    type=TIME,
    default="+7d",
    show_default=True,
    help="Last moment the signature may be relayed.",
)
@click.option(
    "--nonce", type=click.IntRange(0), help="The owner's nonce [default: read from chain]."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="New file to write the signed grant to.",
)
@account_option
@pass_context
def sign(
    context: CliContext,
    dataset_id: int,
    grantee: str,
    purpose: str,
    valid_from: Clock,
    valid_until: Clock,
    deadline: Clock,
    nonce: int | None,
    out: Path,
    account: str,
) -> None:
    """Sign a grant with the dataset owner's key, for anyone to relay (EIP-712)."""
    if out.exists():
        raise UsageError(f"{out} already exists; not overwriting it")
    ledger = context.ledger()
    owner = context.signer(account)
    now = ledger.now()
    signed = ledger.consents.sign_grant(
        owner,
        dataset_id,
        context.resolve_address(grantee),
        purpose,
        valid_from(now),
        valid_until(now),
        deadline(now),
        nonce,
    )
    out.write_text(json.dumps(signed.to_json(), indent=2) + "\n", encoding="utf-8")
    click.echo(f"signed grant written to {out} (nonce {signed.nonce})")


@consent.command("relay")
@click.argument("grant_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@account_option
@pass_context
def relay(context: CliContext, grant_file: Path, account: str) -> None:
    """Submit a signed grant; the relaying account pays the gas, the signer grants."""
    try:
        data = json.loads(grant_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {grant_file}: {exc}") from None
    signed = SignedGrant.from_json(data)
    context.ledger(account).consents.relay_grant(signed)
    click.echo(
        f"consent granted by {signed.signer}: dataset {signed.dataset_id} "
        f"to {signed.grantee} for {signed.purpose!r}"
    )
