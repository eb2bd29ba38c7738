"""The committed artifacts (package data under consortium/chain/contracts/) are what the
committed sources in contracts/ compile to.

Users deploy from the artifacts without a compiler, so an edit to a contract that is not
followed by ``consortium compile`` would ship old bytecode under a new source: this test is
what catches it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consortium.chain.artifacts import ARTIFACTS_DIR, CONTRACTS, load_artifact
from consortium.chain.compile import (
    CONTRACTS_DIR,
    SOLC_VERSION,
    build_artifacts,
    compile_contracts,
    find_compiler,
    run_compiler,
    stale_artifacts,
    standard_input,
    write_artifacts,
)
from consortium.errors import UsageError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh() -> dict[str, dict[str, object]]:
    try:
        compiler = find_compiler()
    except UsageError as exc:
        pytest.skip(str(exc))
    return compile_contracts(compiler)


def test_committed_artifacts_match_the_sources(fresh: dict[str, dict[str, object]]) -> None:
    stale = stale_artifacts(fresh)
    assert stale == [], f"stale artifacts {stale}: run `consortium compile` and commit them"


def test_artifacts_carry_what_deployment_and_audit_need() -> None:
    for name in CONTRACTS:
        artifact = load_artifact(name)
        assert artifact.compiler_version.startswith(f"{SOLC_VERSION}+commit.")
        # The CBOR trailer solc appends to the runtime code names the compiler: 0.8.28.
        assert artifact.deployed_bytecode.endswith("64736f6c6343" + "00081c" + "0033")
        assert artifact.deployed_bytecode[2:] in artifact.bytecode
        raw = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
        assert json.loads(raw["metadata"])["language"] == "Solidity"
        assert raw["sourceName"] == f"{name}.sol"


def test_an_edited_source_makes_its_artifact_stale(tmp_path: Path) -> None:
    compiler = find_compiler()
    sources = tmp_path / "contracts"
    sources.mkdir()
    for source in CONTRACTS_DIR.glob("*.sol"):
        (sources / source.name).write_text(source.read_text())
    ledger = sources / "TrainingLedger.sol"
    ledger.write_text(ledger.read_text() + "\n// an edit after the last compile\n")

    edited = build_artifacts(run_compiler(compiler, standard_input(sources)))
    assert stale_artifacts(edited) == ["TrainingLedger"]

    written = tmp_path / "artifacts"
    written.mkdir()
    write_artifacts(edited, written)
    assert stale_artifacts(edited, written) == []


def test_compile_errors_are_one_line_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "Broken.sol").write_text("pragma solidity 0.8.28; contract Broken { uint x = ; }")
    with pytest.raises(
        UsageError,
        match=r"^compilation failed: Broken\.sol:1: ParserError: Expected primary expression\.$",
    ):
        run_compiler(find_compiler(), standard_input(tmp_path))


def test_compile_without_sources_is_a_one_line_usage_error(tmp_path: Path) -> None:
    # An installed package has no contracts/ beside it: compiling there says why it cannot.
    with pytest.raises(UsageError, match=r"^no Solidity sources in .*: `consortium compile` runs"):
        standard_input(tmp_path / "contracts")
