"""``consortium account``: the keys members sign with.

Secrets never travel on the command line (other users see it in ``ps``, shells keep it in
their history): private keys come from a file or stdin, passwords from ``CONSORTIUM_PASSWORD``
or a hidden prompt.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from consortium.cli.context import CliContext, pass_context
from consortium.cli.passwords import resolve_password
from consortium.crypto.devkeys import is_dev_key
from consortium.errors import UsageError

MAX_PRIVATE_KEY_BYTES = 4096
"""The most read of a private key file: 64 hex digits and some white space. Pipes are fine, but a
device such as /dev/zero given by mistake is refused instead of read without end."""


@click.group()
def account() -> None:
    """Create, import, list and export the keys in the keystore."""


@account.command("new")
@click.argument("name")
@pass_context
def new(context: CliContext, name: str) -> None:
    """Generate a new key and store it encrypted as NAME."""
    keystore = context.keystore()
    keystore.ensure_available(name)
    info = keystore.create(name, resolve_password(os.environ, confirm=True))
    click.echo(f"created account '{info.name}' {info.address} in {info.path}")


@account.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@pass_context
def list_accounts(context: CliContext, as_json: bool) -> None:
    """List the accounts in the keystore."""
    keystore = context.keystore()
    infos, skipped = keystore.scan()
    for file in skipped:
        click.echo(f"warning: skipped {file.path}: {file.reason}", err=True)
    if as_json:
        rows = [{"name": i.name, "address": i.address, "path": str(i.path)} for i in infos]
        click.echo(json.dumps(rows, indent=2))
        return
    if not infos:
        click.echo(f"no accounts in {keystore.directory}")
        return
    table = Table()
    table.add_column("name", overflow="fold")
    table.add_column("address", no_wrap=True, min_width=42)
    table.add_column("file", overflow="fold")
    for info in infos:
        table.add_row(info.name, info.address, str(info.path))
    Console().print(table)


@account.command("import")
@click.argument("name")
@click.option(
    "--private-key-file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    help="File holding the hex private key; '-' reads stdin.",
)
@click.option(
    "--keystore",
    "keystore_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A keystore v3 JSON file from geth, MetaMask or another wallet.",
)
@pass_context
def import_account(
    context: CliContext, name: str, private_key_file: Path | None, keystore_file: Path | None
) -> None:
    """Store an existing key as NAME, from a private key or a keystore file."""
    keystore = context.keystore()
    if keystore_file is not None and private_key_file is None:
        keystore.ensure_available(name)
        info = keystore.import_file(name, keystore_file)
    elif private_key_file is not None and keystore_file is None:
        keystore.ensure_available(name)
        private_key = _read_private_key(private_key_file)
        info = keystore.import_key(name, private_key, resolve_password(os.environ, confirm=True))
    else:
        raise click.UsageError("give exactly one of --private-key-file or --keystore")
    click.echo(f"imported account '{info.name}' {info.address} into {info.path}")
    if is_dev_key(info.address):
        click.echo(
            "note: this is a well-known development key; it will sign only on local chains",
            err=True,
        )


@account.command("export")
@click.argument("name")
@click.option(
    "--keystore",
    "what",
    flag_value="keystore",
    default=True,
    help="Export the encrypted keystore v3 JSON (the default).",
)
@click.option(
    "--private-key",
    "what",
    flag_value="private-key",
    help="Export the decrypted private key (asks for the password).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file (mode 0600) instead of stdout.",
)
@pass_context
def export(context: CliContext, name: str, what: str, out: Path | None) -> None:
    """Print or write the key of account NAME (an account name or address)."""
    keystore = context.keystore()
    if what == "keystore":
        text = keystore.read_json(name)
    else:
        keystore.get(name)  # an unknown account fails before the password prompt
        text = keystore.export_private_key(name, resolve_password(os.environ, confirm=False))
        click.echo(
            f"warning: this is the unencrypted private key of '{name}'; "
            "anyone who sees it controls the account",
            err=True,
        )
    if out is None:
        click.echo(text)
    else:
        _write_new_file(out, text + "\n")
        click.echo(f"wrote {out}", err=True)


def _read_private_key(source: Path) -> str:
    from_stdin = str(source) == "-"
    if from_stdin and sys.stdin.isatty():
        # Typed keys must not echo on the screen.
        return str(click.prompt("Private key", hide_input=True))
    name = "stdin" if from_stdin else str(source)
    try:
        with nullcontext(sys.stdin.buffer) if from_stdin else source.open("rb") as handle:
            data = handle.read(MAX_PRIVATE_KEY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_PRIVATE_KEY_BYTES:
        raise UsageError(
            f"{name} holds more than {MAX_PRIVATE_KEY_BYTES:,} bytes, not a private key"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # its message would quote bytes of the key
        raise UsageError(f"{name} is not text holding a hex private key") from None


def _write_new_file(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only; an existing file is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting it") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
