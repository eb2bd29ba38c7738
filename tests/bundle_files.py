"""An exported bundle's manifest and rounds, read and rewritten as tests inspect or damage them.

The format (docs/audit-bundle.md, ``consortium.audit-bundle/4``) keeps a small header in
``manifest.json`` and one round entry per line of ``rounds.jsonl``. These helpers write both
as the exporter does (the header indented, each round as its RFC 8785 bytes and a newline), so
that changing one character of a value changes one byte of the bundle, and a rewrite that
changes nothing leaves the bundle byte for byte as exported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consortium.crypto.canonical import jcs

MANIFEST_FILE = "manifest.json"
ROUNDS_FILE = "rounds.jsonl"

Document = dict[str, Any]
"""The header with its rounds under ``"rounds"``: the whole bundle index as one JSON value."""


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The header."""
    return json.loads((bundle / MANIFEST_FILE).read_text())


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_rounds(bundle: Path) -> list[dict[str, Any]]:
    """Every round entry, in file order (fine for the few rounds of a test bundle)."""
    return [json.loads(line) for line in (bundle / ROUNDS_FILE).read_bytes().splitlines()]


def write_rounds(bundle: Path, rounds: list[dict[str, Any]]) -> None:
    """Replaces the rounds, and the header's ``roundCount`` with their number, as a forger
    careful to keep the bundle consistent with itself would."""
    (bundle / ROUNDS_FILE).write_bytes(b"".join(jcs(entry) + b"\n" for entry in rounds))
    manifest = read_manifest(bundle)
    manifest["roundCount"] = len(rounds)
    write_manifest(bundle, manifest)


def read_document(bundle: Path) -> Document:
    return {**read_manifest(bundle), "rounds": read_rounds(bundle)}


def write_document(bundle: Path, document: Document) -> None:
    header = {k: v for k, v in document.items() if k != "rounds"}
    write_manifest(bundle, header)
    write_rounds(bundle, document["rounds"])


def edit_document(bundle: Path, change: Callable[[Document], None]) -> None:
    """Reads the header and rounds as one value, lets ``change`` edit it, writes both back."""
    document = read_document(bundle)
    change(document)
    write_document(bundle, document)
