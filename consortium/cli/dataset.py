"""``consortium dataset``: datasets providers register (descriptions only, never data)."""

from __future__ import annotations

from pathlib import Path

import click

from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import emit_json, emit_table, timestamp
from consortium.cli.params import ID, account_option, json_option
from consortium.crypto.canonical import json_digest
from consortium.errors import UsageError
from consortium.jsonio import read_json_file
from consortium.ledger.consents import Dataset
from consortium.ledger.values import bytes32

MAX_SCHEMA_BYTES = 2**20
"""The largest schema file read: a description of columns, far smaller than this."""


@click.group()
def dataset() -> None:
    """Register datasets and publish their consented-subject roots."""


def _schema_digest(schema_file: Path | None, schema_digest: str | None) -> str:
    if (schema_file is None) == (schema_digest is None):
        raise click.UsageError("give exactly one of --schema or --schema-digest")
    if schema_digest is not None:
        return schema_digest
    assert schema_file is not None
    schema = read_json_file(schema_file, what="schema file", max_bytes=MAX_SCHEMA_BYTES)
    return json_digest(schema).hex()


@dataset.command("register")
@click.argument("name")
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON schema of the dataset; its RFC 8785 SHA-256 digest goes on chain.",
)
@click.option(
    "--schema-digest", help="SHA-256 of the schema as 64 hex digits, instead of --schema."
)
@click.option("--subjects-root", help="Merkle root of the consented data subjects (64 hex digits).")
@account_option
@pass_context
def register(
    context: CliContext,
    name: str,
    schema_file: Path | None,
    schema_digest: str | None,
    subjects_root: str | None,
    account: str,
) -> None:
    """Register dataset NAME, owned by the signing PROVIDER.

    Safe to re-run: if the signer already owns a dataset of that name and schema, it is
    reported instead of registered a second time.
    """
    digest = bytes32(_schema_digest(schema_file, schema_digest), "schema digest")
    root = None if subjects_root is None else bytes32(subjects_root, "subjects root")
    ledger = context.ledger(account)
    for existing in ledger.consents.datasets():
        if (existing.owner, existing.name, existing.schema_digest) != (
            ledger.address,
            name,
            digest,
        ):
            continue
        if root is not None and existing.subjects_root != root:
            raise UsageError(
                f"dataset {existing.id} {name!r} is already registered with another subjects "
                f"root; publish the new one with `consortium dataset update-subjects`"
            )
        click.echo(f"dataset {existing.id}: {name!r} is already registered; nothing sent")
        return
    dataset_id = ledger.consents.register(name, digest, root)
    click.echo(f"dataset {dataset_id}: registered {name!r}")


@dataset.command("update-subjects")
@click.argument("dataset_id", type=ID)
@click.argument("subjects_root")
@account_option
@pass_context
def update_subjects(context: CliContext, dataset_id: int, subjects_root: str, account: str) -> None:
    """Publish a new consented-subjects root for DATASET_ID (a new version).

    Safe to re-run: a root that is already the current one is not published again, since
    every publication is a new version that audits would have to account for.
    """
    root = bytes32(subjects_root, "subjects root")
    ledger = context.ledger(account)
    current = ledger.consents.dataset(dataset_id)
    if current.subjects_root == root:
        click.echo(
            f"dataset {dataset_id}: already at this subjects root "
            f"(version {current.subjects_version}); nothing sent"
        )
        return
    version = ledger.consents.update_subjects(dataset_id, root)
    click.echo(f"dataset {dataset_id}: subjects root version {version}")


def _dataset_json(d: Dataset) -> dict[str, object]:
    return {
        "id": d.id,
        "name": d.name,
        "owner": d.owner,
        "schemaDigest": d.schema_digest,
        "subjectsRoot": d.subjects_root,
        "subjectsVersion": d.subjects_version,
        "registeredAt": d.registered_at,
    }


@dataset.command("list")
@json_option
@pass_context
def list_datasets(context: CliContext, as_json: bool) -> None:
    """List the registered datasets."""
    found = context.ledger().consents.datasets()
    if as_json:
        emit_json([_dataset_json(d) for d in found])
        return
    rows = [
        (d.id, d.name, d.owner, d.schema_digest.hex()[:16] + "…", d.subjects_version) for d in found
    ]
    emit_table("datasets", ("id", "name", "owner", "schema", "subjects version"), rows)


@dataset.command("show")
@click.argument("dataset_id", type=ID)
@json_option
@pass_context
def show(context: CliContext, dataset_id: int, as_json: bool) -> None:
    """Show one dataset."""
    d = context.ledger().consents.dataset(dataset_id)
    if as_json:
        emit_json(_dataset_json(d))
        return
    for label, value in (
        ("id", d.id),
        ("name", d.name),
        ("owner", d.owner),
        ("schema", d.schema_digest.hex()),
        ("subjects", d.subjects_root.hex() if d.subjects_root else "not tracked"),
        ("version", d.subjects_version),
        ("since", timestamp(d.registered_at)),
    ):
        click.echo(f"{label:9} {value}")
