"""``consortium consent``: grant, revoke and inspect data-usage consents, also offline."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json, emit_table, timestamp
from consortium.cli.params import ACCOUNT, ID, TIME, account_option, json_option
from consortium.errors import ConsortiumError, UsageError
from consortium.jsonio import read_json_file
from consortium.ledger.consents import Consent, Consents, SignedGrant
from consortium.ledger.values import encode_purpose

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
    """Grant, revoke, list and relay data-usage consents, and cancel signed grants."""


@consent.command("grant")
@click.argument("dataset_id", type=ID)
@click.argument("grantee", type=ACCOUNT)
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
    encode_purpose(purpose)
    who = context.resolve_address(grantee)
    ledger = context.ledger(account)
    now = ledger.now()
    start, end = valid_from(now), valid_until(now)
    ledger.consents.grant(dataset_id, who, purpose, start, end)
    click.echo(
        f"consent granted: dataset {dataset_id} to {grantee} for {purpose!r} "
        f"from {timestamp(start)} until {timestamp(end)}"
    )


@consent.command("revoke")
@click.argument("dataset_id", type=ID)
@click.argument("grantee", type=ACCOUNT)
@purpose_option
@account_option
@pass_context
def revoke(context: CliContext, dataset_id: int, grantee: str, purpose: str, account: str) -> None:
    """Revoke a consent; it is invalid from the block that records this on."""
    encode_purpose(purpose)
    who = context.resolve_address(grantee)
    context.ledger(account).consents.revoke(dataset_id, who, purpose)
    click.echo(f"consent revoked: dataset {dataset_id} to {grantee} for {purpose!r}")


@consent.command("cancel")
@click.argument("dataset_id", type=ID)
@click.argument("grantee", type=ACCOUNT)
@purpose_option
@account_option
@pass_context
def cancel(context: CliContext, dataset_id: int, grantee: str, purpose: str, account: str) -> None:
    """Void every signed grant of a consent not yet relayed; the consent itself stays as it is.

    For a grant file handed out that must no longer count: only grants signed after this can
    be relayed. A grant or revocation voids the earlier signed grants by itself.
    """
    encode_purpose(purpose)
    who = context.resolve_address(grantee)
    nonce = context.ledger(account).consents.cancel_signed_grants(dataset_id, who, purpose)
    click.echo(
        f"signed grants cancelled: dataset {dataset_id} to {grantee} for {purpose!r}; the "
        f"consent is unchanged, and grants signed from now on carry nonce {nonce}"
    )


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
@click.option("--dataset", "dataset_id", type=ID, help="Only this dataset.")
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
@click.argument("dataset_id", type=ID)
@click.argument("grantee", type=ACCOUNT)
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
@click.argument("dataset_id", type=ID)
@click.argument("grantee", type=ACCOUNT)
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
    out: Path,
    account: str,
) -> None:
    """Sign a grant with the dataset owner's key, for anyone to relay (EIP-712).

    Nothing is sent: the file is the whole output, so it is written only if it is new, and
    only for a dataset the signer owns (a grant by anybody else would be refused on relay).
    The grant carries the consent's current nonce: any later change of the consent, or
    `consent cancel`, voids it.
    """
    if out.exists():
        raise UsageError(f"{out} already exists; not overwriting it")
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: directory {out.parent} does not exist")
    encode_purpose(purpose)
    who = context.resolve_address(grantee)
    ledger = context.ledger()
    owner = context.signer(account)
    dataset = ledger.consents.dataset(dataset_id)
    if dataset.owner != owner.address:
        raise UsageError(
            f"{owner.address} does not own dataset {dataset_id} (its owner is {dataset.owner}); "
            f"only the owner's signature grants consent"
        )
    now = ledger.now()
    signed = ledger.consents.sign_grant(
        owner,
        dataset_id,
        who,
        purpose,
        valid_from(now),
        valid_until(now),
        deadline(now),
    )
    _write_new(out, json.dumps(signed.to_json(), indent=2) + "\n")
    click.echo(f"signed grant written to {out} (nonce {signed.nonce})")


def _write_new(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` only if no file is there (checked by the open itself, so a
    file that appeared since the early check is not replaced either); a failed write leaves
    no half-written grant behind."""
    try:
        handle = path.open("x", encoding="utf-8")
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting it") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


class GrantNotRelayable(ConsortiumError):
    """The signed grant's nonce is not its consent's current one, so the chain would refuse
    it: mostly because the consent changed since, or the owner cancelled its signed grants."""


MAX_GRANT_BYTES = 2**20
"""The largest signed grant file read; a grant takes well under 1 kB."""


@consent.command("relay")
@click.argument("grant_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@account_option
@pass_context
def relay(context: CliContext, grant_file: Path, account: str) -> None:
    """Submit a signed grant; the relaying account pays the gas, the signer grants.

    The file is checked before anything is sent, so a damaged or edited file costs no gas;
    relaying the same file twice reports the consent already in place, and a grant whose
    consent changed (or was cancelled) since it was signed is refused with both nonces.
    """
    data = read_json_file(grant_file, what="signed grant", max_bytes=MAX_GRANT_BYTES)
    signed = SignedGrant.from_json(data)
    deployment = context.deployment()
    if signed.chain_id != deployment.chain_id:
        raise UsageError(
            f"{grant_file} was signed for chain {signed.chain_id}, "
            f"not this deployment's chain {deployment.chain_id}"
        )
    if signed.verifying_contract != deployment.consents:
        raise UsageError(
            f"{grant_file} was signed for consent registry {signed.verifying_contract}, "
            f"not this deployment's ({deployment.consents})"
        )
    if not signed.is_authentic():
        raise UsageError(
            f"{grant_file}: the signature does not match the grant's contents and signer "
            f"{signed.signer} (damaged or edited file)"
        )
    ledger = context.ledger(account)
    current = ledger.consents.nonce_of(signed.dataset_id, signed.grantee, signed.purpose)
    if signed.nonce != current:
        if signed.nonce < current and _already_granted(ledger.consents, signed):
            click.echo(
                f"consent already granted by {signed.signer}: dataset {signed.dataset_id} "
                f"to {signed.grantee} for {signed.purpose!r}; nothing sent"
            )
            return
        if signed.nonce > current:
            raise GrantNotRelayable(
                f"{grant_file}: signed for nonce {signed.nonce}, ahead of the consent's "
                f"nonce {current}; the chain refuses it"
            )
        raise GrantNotRelayable(
            f"{grant_file}: superseded: the consent changed or its signed grants were "
            f"cancelled since it was signed (nonce {signed.nonce}, now {current})"
        )
    ledger.consents.relay_grant(signed)
    click.echo(
        f"consent granted by {signed.signer}: dataset {signed.dataset_id} "
        f"to {signed.grantee} for {signed.purpose!r}"
    )


def _already_granted(consents: Consents, signed: SignedGrant) -> bool:
    """Whether the chain holds exactly the consent ``signed`` grants, unrevoked."""
    try:
        current = consents.get(signed.dataset_id, signed.grantee, signed.purpose)
    except UsageError:
        return False
    return not current.revoked and (current.valid_from, current.valid_until) == (
        signed.valid_from,
        signed.valid_until,
    )
