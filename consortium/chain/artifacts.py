"""The committed compiled contracts, loaded without a compiler."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from consortium.errors import UsageError
from consortium.files import write_text_atomically

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
CONTRACTS = ("ConsortiumRegistry", "ConsentRegistry", "TrainingLedger")


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
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"missing contract artifact {path}: run `consortium compile`") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"corrupt contract artifact {path}: {exc}") from None
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
