"""The committed compiled contracts, loaded without a compiler.

They ship inside the package, under ``consortium/chain/contracts/``, as package data read
through :mod:`importlib.resources`: an installed wheel deploys and audits with neither a source
checkout nor node nor solc.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.jsonio import NoSuchFile, read_json_file

ARTIFACTS_DIR: Traversable = files("consortium.chain") / "contracts"
"""The package's compiled contracts, one ``<name>.json`` each (a directory on disk whenever the
package is installed from a wheel or a checkout)."""
CONTRACTS = ("ConsortiumRegistry", "ConsentRegistry", "TrainingLedger")
MAX_ARTIFACT_BYTES = 8 * 2**20
"""The largest artifact read; the committed ones take under 100 kB each."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: what deployment, calls and code verification need."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    immutable_references: dict[str, list[dict[str, int]]]
    userdoc: dict[str, Any]
    compiler_version: str


@cache
def load_artifact(name: str) -> Artifact:
    """The committed artifact of contract ``name``."""
    resource = ARTIFACTS_DIR / f"{name}.json"
    try:
        with as_file(resource) as path:
            raw = read_json_file(path, what="contract artifact", max_bytes=MAX_ARTIFACT_BYTES)
    except (NoSuchFile, FileNotFoundError):
        raise UsageError(
            f"missing contract artifact {resource}: reinstall consortium, "
            "or run `consortium compile` in a source checkout"
        ) from None
    return Artifact(
        name=name,
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        immutable_references=raw["immutableReferences"],
        userdoc=raw["userdoc"],
        compiler_version=raw["compiler"]["version"],
    )


def all_artifacts() -> list[Artifact]:
    """The artifacts of every deployable contract."""
    return [load_artifact(name) for name in CONTRACTS]


def write_artifact(path: Path, artifact: dict[str, Any]) -> None:
    """Writes ``artifact`` as stable, diff-friendly JSON, atomically (temp file, then rename)."""
    write_text_atomically(path, json.dumps(artifact, indent=2, sort_keys=True) + "\n")
