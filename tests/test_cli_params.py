"""Command-line values that go to the chain are refused in one line when the chain's types
cannot hold them, before any configuration, key or node is touched."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from consortium.cli.chain import EtherType
from consortium.cli.main import cli
from consortium.cli.params import TIME, UInt

UINT256_LIMIT = 2**256
ACCOUNT = "0x" + "11" * 20


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="consortium")
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("job", "show", str(UINT256_LIMIT)),
            f"error: Invalid value for 'JOB_ID': {UINT256_LIMIT} is beyond uint256 "
            "(see 'consortium job show --help')\n",
        ),
        (
            ("member", "vote", str(UINT256_LIMIT), "-a", "x"),
            f"error: Invalid value for 'PROPOSAL_ID': {UINT256_LIMIT} is beyond uint256 "
            "(see 'consortium member vote --help')\n",
        ),
        (
            ("job", "close", "9" * 5000, "-a", "x"),
            "error: Invalid value for 'JOB_ID': a 5000-digit number is beyond uint256 "
            "(see 'consortium job close --help')\n",
        ),
        (
            ("dataset", "show", "0"),
            "error: Invalid value for 'DATASET_ID': 0 is less than 1 "
            "(see 'consortium dataset show --help')\n",
        ),
        (
            ("export", "--job", "-1", "--out", "x"),
            "error: Invalid value for '--job': '-1' is not a whole number "
            "(see 'consortium export --help')\n",
        ),
        (
            ("consent", "grant", "1", ACCOUNT, "--purpose", "p", "--until", str(2**64), "-a", "x"),
            f"error: Invalid value for '--until': time '{2**64}' is beyond uint64 seconds "
            "(see 'consortium consent grant --help')\n",
        ),
        (
            (
                "consent",
                "grant",
                "1",
                ACCOUNT,
                "--purpose",
                "p",
                "--until",
                "1969-12-31",
                "-a",
                "x",
            ),
            "error: Invalid value for '--until': time '1969-12-31' is before 1970, which the "
            "chain cannot record (see 'consortium consent grant --help')\n",
        ),
    ],
)
def test_numbers_the_chain_cannot_hold_are_one_line_errors(
    args: tuple[str, ...], expected: str
) -> None:
    assert run(*args) == (2, expected)


@pytest.mark.parametrize(
    ("uint", "text", "expected"),
    [(UInt(256, low=1), str(UINT256_LIMIT - 1), UINT256_LIMIT - 1), (UInt(64), "0", 0)],
)
def test_the_largest_and_smallest_values_are_accepted(uint: UInt, text: str, expected: int) -> None:
    assert uint.convert(text, None, None) == expected


def test_a_relative_time_beyond_uint64_is_refused_when_resolved() -> None:
    almost = TIME.convert(f"+{2**64 - 2}s", None, None)
    assert almost(1) == 2**64 - 1
    with pytest.raises(Exception, match=r"time '\+18446744073709551614s' is beyond uint64"):
        almost(2)


@pytest.mark.parametrize(
    ("ether", "reason"),
    [
        ("nan", "nan is not a positive amount"),
        ("inf", "inf is not a positive amount"),
        ("-1", "-1 is not a positive amount"),
        ("1e400", "1e400 ether is more than any account can hold (uint256 wei)"),
        ("1e-19", "1e-19 ether is less than 1 wei"),
        ("ten", "'ten' is not a number"),
    ],
)
def test_ether_amounts_no_transfer_can_carry_are_one_line_errors(ether: str, reason: str) -> None:
    assert run("chain", "fund", ACCOUNT, "--ether", ether) == (
        2,
        f"error: Invalid value for '--ether': {reason} (see 'consortium chain fund --help')\n",
    )


@pytest.mark.parametrize(("ether", "wei"), [("100", 10**20), ("1e-18", 1), ("0.1", 10**17)])
def test_ether_amounts_convert_to_wei_exactly(ether: str, wei: int) -> None:
    assert EtherType().convert(ether, None, None) == wei
