"""The committed compiled contracts, loaded without a compiler."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.jsonio import NoSuchFile, read_json_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
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
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        raw = read_json_file(path, what="contract artifact", max_bytes=MAX_ARTIFACT_BYTES)
    except NoSuchFile:
        raise UsageError(f"missing contract artifact {path}: run `consortium compile`") from None
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
