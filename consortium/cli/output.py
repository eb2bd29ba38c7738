"""How commands print: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from consortium.ledger.roles import Role

WIDTH_WHEN_PIPED = 240


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Role):
        return value.describe()
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _named(value: Any) -> Any:
    """``value`` with every :class:`Role` replaced by its names.

    ``Role`` is an ``int`` subclass, so :mod:`json` writes it as a bare number and never asks
    ``default``; it has to be converted before encoding for scripts to see ``"provider"``.
    """
    if isinstance(value, Role):
        return value.describe()
    if isinstance(value, dict):
        return {key: _named(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_named(item) for item in value]
    return value


def emit_json(data: Any) -> None:
    """Prints ``data`` as indented JSON (bytes as 0x hex, roles as names)."""
    click.echo(json.dumps(_named(data), indent=2, default=_jsonable))


def emit_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints a table; cells are converted with :func:`cell`."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(value) for value in row))
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        # Piped or captured output has no width to respect; folding addresses and digests
        # across lines would only break them for the next program.
        console.width = max(console.width, WIDTH_WHEN_PIPED)
    console.print(table)


def cell(value: Any) -> str:
    """A value as a table cell: digests as hex, roles by name, booleans as yes/no."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Role):
        return value.describe()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    return str(value)


def timestamp(seconds: int) -> str:
    """A unix time as ISO 8601 UTC, the way audit trails quote it."""
    if seconds >= 2**63 or seconds > 253402300799:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
