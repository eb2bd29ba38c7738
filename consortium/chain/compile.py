"""Compiles the contracts into the committed artifacts.

Users never need a compiler: the artifacts under ``consortium/chain/contracts/`` are committed
and ship in the package. This module rebuilds them from the sources in the checkout's
``contracts/`` (so it works in a source checkout only), with a native ``solc`` 0.8.28 when one
is on the PATH and otherwise with npm's ``solc`` (solcjs) driven through its standard-JSON
``compile()`` by ``solcjs.js``. Both see the same source unit names and settings, so both
produce the same bytecode.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from consortium.chain.artifacts import ARTIFACTS_DIR, CONTRACTS, write_artifact
from consortium.errors import UsageError

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
"""The Solidity sources: ``contracts/`` of the source checkout (an installed package has none)."""

SOLC_VERSION = "0.8.28"
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "viaIR": False,
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "metadata",
                "userdoc",
                "devdoc",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
            ]
        }
    },
}
_SOLCJS_DRIVER = Path(__file__).with_name("solcjs.js")


@dataclass(frozen=True)
class Compiler:
    """How to run the compiler: a native binary or node with npm's solc package."""

    kind: str
    command: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.kind} ({self.command[0] if self.kind == 'native' else self.command[2]})"


def node_modules_dir(start: Path = CONTRACTS_DIR) -> Path | None:
    """The nearest ``node_modules`` at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / "node_modules"
        if candidate.is_dir():
            return candidate
    return None


def find_compiler() -> Compiler:
    """A native solc of the pinned version if present, else npm's solcjs through node."""
    native = shutil.which("solc")
    if native:
        probe = subprocess.run([native, "--version"], capture_output=True, text=True, check=False)
        if re.search(rf"Version: {re.escape(SOLC_VERSION)}\+", probe.stdout):
            return Compiler("native", (native,))
    modules = node_modules_dir()
    solcjs = modules / "solc" if modules else None
    node = shutil.which("node")
    if not (node and solcjs and (solcjs / "index.js").is_file()):
        raise UsageError(
            f"no Solidity compiler: install solc {SOLC_VERSION} or run `npm ci` for npm's solc"
        )
    return Compiler("solcjs", (node, str(_SOLCJS_DRIVER), str(solcjs)))


def standard_input(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, Any]:
    """The standard-JSON input: every ``*.sol`` under ``contracts_dir`` with the fixed settings."""
    sources = {
        path.name: {"content": path.read_text(encoding="utf-8")}
        for path in sorted(contracts_dir.glob("*.sol"))
    }
    if not sources:
        raise UsageError(
            f"no Solidity sources in {contracts_dir}: `consortium compile` runs in a source "
            "checkout; an installed package ships the compiled contracts"
        )
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def run_compiler(compiler: Compiler, source_input: dict[str, Any]) -> dict[str, Any]:
    """Runs the compiler on ``source_input``; compile errors raise :class:`UsageError`."""
    modules = node_modules_dir()
    include_dirs = [str(CONTRACTS_DIR), *([str(modules)] if modules else [])]
    if compiler.kind == "native":
        command = [
            *compiler.command,
            "--standard-json",
            "--base-path",
            include_dirs[0],
            *[arg for d in include_dirs[1:] for arg in ("--include-path", d)],
        ]
    else:
        command = [*compiler.command, *include_dirs]
    result = subprocess.run(
        command, input=json.dumps(source_input), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise UsageError(f"compiler failed: {result.stderr.strip().splitlines()[-1:]}")
    output = json.loads(result.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise UsageError(f"compilation failed: {_locate(errors[0], source_input)}")
    return output


def _locate(error: dict[str, Any], source_input: dict[str, Any]) -> str:
    """``file:line: Type: message`` of a compiler error, the way editors link to it."""
    what = f"{error.get('type', 'Error')}: {error.get('message', '').strip()}"
    location = error.get("sourceLocation")
    if not location:
        return what
    source = source_input["sources"].get(location["file"], {}).get("content", "")
    line = source.encode()[: max(location.get("start", 0), 0)].count(b"\n") + 1
    return f"{location['file']}:{line}: {what}"


def build_artifacts(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Artifacts of the deployable contracts, keyed by contract name."""
    artifacts: dict[str, dict[str, Any]] = {}
    for source_name, contracts in output["contracts"].items():
        for name, compiled in contracts.items():
            if name not in CONTRACTS or source_name != f"{name}.sol":
                continue
            metadata = json.loads(compiled["metadata"])
            artifacts[name] = {
                "contractName": name,
                "sourceName": source_name,
                "compiler": {"version": metadata["compiler"]["version"]},
                "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
                "abi": compiled["abi"],
                "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
                "immutableReferences": compiled["evm"]["deployedBytecode"].get(
                    "immutableReferences", {}
                ),
                "metadata": compiled["metadata"],
                "userdoc": compiled["userdoc"],
                "devdoc": compiled["devdoc"],
            }
    missing = sorted(set(CONTRACTS) - set(artifacts))
    if missing:
        raise UsageError(f"compiler produced no artifact for {', '.join(missing)}")
    return artifacts


def compile_contracts(compiler: Compiler | None = None) -> dict[str, dict[str, Any]]:
    """Compiles the sources into fresh artifacts (not written)."""
    return build_artifacts(run_compiler(compiler or find_compiler(), standard_input()))


def stale_artifacts(
    fresh: dict[str, dict[str, Any]], artifacts_dir: Traversable = ARTIFACTS_DIR
) -> list[str]:
    """Names of the committed artifacts that differ from ``fresh`` (or are missing)."""
    stale = []
    for name, artifact in fresh.items():
        path = artifacts_dir / f"{name}.json"
        if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != artifact:
            stale.append(name)
    return stale


def write_artifacts(
    fresh: dict[str, dict[str, Any]], artifacts_dir: Traversable = ARTIFACTS_DIR
) -> None:
    """Writes every artifact, each atomically, into the package's directory by default."""
    if not isinstance(artifacts_dir, Path):
        raise UsageError(f"cannot write contract artifacts into {artifacts_dir}: not a directory")
    for name, artifact in fresh.items():
        write_artifact(artifacts_dir / f"{name}.json", artifact)
