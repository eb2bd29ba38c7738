"""Compiles small test-only contracts with npm's solc, independently of the project's pipeline.

Tests of the chain layer need contracts the project does not ship (one that reverts in every
way Solidity can); a few lines of standard JSON through ``require('solc').compile`` keep them
out of ``contracts/`` and independent of ``consortium.chain.compile``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SOLC_PACKAGE = REPO / "node_modules" / "solc"
_DRIVER = (
    "process.stdout.write(require(process.argv[1]).compile(require('fs').readFileSync(0, 'utf8')))"
)

REVERT_PROBE = """\
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// A contract that fails in every way the revert decoder must understand.
contract RevertProbe {
    /// @notice `account` is not an active member.
    error NotMember(address account);
    /// @notice Proposal `proposalId` expired at `deadline`; `nobody` is not a parameter.
    error Expired(bytes32 proposalId, uint256 deadline);
    error Undocumented(uint8 code, string what, int16 delta);
    error NoArgs();

    uint256 public counter;

    function failCustom(address account) external {
        counter += 1;
        revert NotMember(account);
    }

    function failExpired(bytes32 proposalId, uint256 deadline) external {
        counter += 1;
        revert Expired(proposalId, deadline);
    }

    function failUndocumented() external {
        counter += 1;
        revert Undocumented(7, "seven", -3);
    }

    function failNoArgs() external {
        counter += 1;
        revert NoArgs();
    }

    function failRequire() external {
        counter += 1;
        require(counter == 0, "counter must be zero");
    }

    function failPanic(uint256 divisor) external returns (uint256) {
        counter += 1;
        return 100 / divisor;
    }

    function failEmpty() external {
        counter += 1;
        revert();
    }

    function viewCustom(address account) external pure returns (uint256) {
        revert NotMember(account);
    }

    function bump() external {
        counter += 1;
    }
}
"""


@cache
def compile_contract(source: str, name: str) -> dict[str, Any]:
    """``{"abi", "bytecode", "userdoc"}`` of contract ``name`` in ``source``; cached."""
    node = shutil.which("node")
    if node is None or not SOLC_PACKAGE.is_dir():
        pytest.skip("node and npm's solc are needed to compile test contracts (run `npm ci`)")
    standard_input = {
        "language": "Solidity",
        "sources": {"Test.sol": {"content": source}},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "evmVersion": "cancun",
            "outputSelection": {"*": {"*": ["abi", "userdoc", "evm.bytecode.object"]}},
        },
    }
    result = subprocess.run(
        [node, "-e", _DRIVER, str(SOLC_PACKAGE)],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        check=True,
    )
    output = json.loads(result.stdout)
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e["severity"] == "error"]
    assert not errors, "\n".join(errors)
    contract = output["contracts"]["Test.sol"][name]
    return {
        "abi": contract["abi"],
        "bytecode": contract["evm"]["bytecode"]["object"],
        "userdoc": contract["userdoc"],
    }
