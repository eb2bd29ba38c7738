"""Tests of ``consortium account`` and the root command's error handling, through the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from conftest import isolate_cli
from eth_account import Account

from consortium.cli import main as main_module
from consortium.cli.context import CliContext
from consortium.cli.main import cli
from consortium.crypto.devkeys import ANVIL_KEYS
from consortium.errors import ChainUnavailable, ConfigError, KeystoreError

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_ADDRESS = Account.from_key(KEY).address

Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke ``consortium`` in an empty directory with fast scrypt and a known password."""
    isolate_cli(monkeypatch, tmp_path)
    runner = CliRunner()

    def invoke(
        *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        return runner.invoke(cli, list(args), input=input, env=env, prog_name="consortium")

    return invoke


def one_line_error(result: Result) -> str:
    """The single ``error: ...`` line on stderr, checking there is no traceback."""
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_new_then_list_as_json(run: Run, tmp_path: Path) -> None:
    created = run("account", "new", "alice")
    assert created.exit_code == 0, created.output
    listed = run("account", "list", "--json")
    assert listed.exit_code == 0
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "alice"
    assert row["path"] == str(tmp_path / ".consortium" / "keystore" / "alice.json")
    assert row["address"] in created.stdout
    assert json.loads(Path(row["path"]).read_text())["crypto"]["kdfparams"]["n"] == 1024


def test_list_table_and_empty_keystore(run: Run) -> None:
    empty = run("account", "list")
    assert empty.exit_code == 0
    assert empty.stdout.startswith("no accounts in ")
    run("account", "import", "bank", "--private-key-file", "-", input=KEY + "\n")
    table = run("account", "list")
    assert table.exit_code == 0
    assert "bank" in table.stdout
    assert KEY_ADDRESS in table.stdout


def test_duplicate_name_is_a_one_line_usage_error(run: Run) -> None:
    assert run("account", "new", "alice").exit_code == 0
    result = run("account", "new", "alice")
    assert result.exit_code == 2
    assert one_line_error(result) == "error: account 'alice' already exists"


def test_no_password_and_no_terminal(run: Run) -> None:
    result = run("account", "new", "alice", env={"CONSORTIUM_PASSWORD": None})
    assert result.exit_code == 2
    assert one_line_error(result) == (
        "error: no password: set CONSORTIUM_PASSWORD or run interactively"
    )
    assert run("account", "list", "--json").stdout.strip() == "[]"


def test_import_private_key_from_file_and_export_it_back(run: Run, tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text(KEY[2:] + "\n")
    imported = run("account", "import", "bank", "--private-key-file", "key.txt")
    assert imported.exit_code == 0, imported.output
    assert KEY_ADDRESS in imported.stdout
    exported = run("account", "export", "bank", "--private-key")
    assert exported.exit_code == 0
    assert exported.stdout == KEY + "\n"
    assert "unencrypted private key" in exported.stderr


def test_export_private_key_with_wrong_password(run: Run) -> None:
    run("account", "import", "bank", "--private-key-file", "-", input=KEY)
    result = run("account", "export", "bank", "--private-key", env={"CONSORTIUM_PASSWORD": "x"})
    assert result.exit_code == 2
    assert one_line_error(result) == "error: wrong password for account 'bank'"


def test_keystore_export_imports_into_another_keystore(run: Run, tmp_path: Path) -> None:
    run("account", "import", "bank", "--private-key-file", "-", input=KEY)
    written = run("account", "export", KEY_ADDRESS.lower(), "--out", "bank.json")
    assert written.exit_code == 0, written.output
    exported = tmp_path / "bank.json"
    assert exported.stat().st_mode & 0o077 == 0
    keyfile = json.loads(exported.read_text())
    assert Account.from_key(Account.decrypt(keyfile, "pw")).address == KEY_ADDRESS

    other = {"CONSORTIUM_DATA_DIR": "other", "CONSORTIUM_PASSWORD": None}
    imported = run("account", "import", "copy", "--keystore", "bank.json", env=other)
    assert imported.exit_code == 0, imported.output
    assert (tmp_path / "other" / "keystore" / "copy.json").read_text() == exported.read_text()

    again = run("account", "export", "bank", "--out", "bank.json")
    assert again.exit_code == 2
    assert "already exists; not overwriting it" in one_line_error(again)


def test_default_export_prints_the_keystore_json(run: Run) -> None:
    run("account", "import", "bank", "--private-key-file", "-", input=KEY)
    result = run("account", "export", "bank", env={"CONSORTIUM_PASSWORD": None})
    assert result.exit_code == 0
    assert json.loads(result.stdout)["address"].lower() == KEY_ADDRESS[2:].lower()


def test_import_needs_exactly_one_source(run: Run) -> None:
    neither = run("account", "import", "bank")
    assert neither.exit_code == 2
    assert "give exactly one of --private-key-file or --keystore" in neither.stderr
    assert "Traceback" not in neither.output


def test_private_key_is_never_echoed_in_errors(run: Run) -> None:
    bad = KEY[:-2] + "zz"
    result = run("account", "import", "bank", "--private-key-file", "-", input=bad)
    assert result.exit_code == 2
    assert "invalid private key" in one_line_error(result)
    assert KEY[2:20] not in result.output


def test_dev_key_import_notes_the_restriction(run: Run) -> None:
    result = run("account", "import", "dev", "--private-key-file", "-", input=ANVIL_KEYS[0])
    assert result.exit_code == 0
    assert "well-known development key" in result.stderr


def test_unknown_account_and_bad_config(run: Run, tmp_path: Path) -> None:
    unknown = run("account", "export", "nobody")
    assert unknown.exit_code == 2
    assert one_line_error(unknown).startswith("error: unknown account 'nobody'")

    (tmp_path / "bad.toml").write_text("[keys]\nscrypt_n = 3\n")
    bad = run("--config", "bad.toml", "account", "list")
    assert bad.exit_code == 2
    assert one_line_error(bad) == (
        "error: bad.toml: keys.scrypt_n must be a power of two in 2**10 .. 2**20, got 3"
    )


def test_help_works_with_a_broken_config(run: Run) -> None:
    result = run("--config", "missing.toml", "account", "--help")
    assert result.exit_code == 0
    assert "import" in result.stdout


def test_version(run: Run) -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("consortium, version ")


def test_unknown_command_is_exit_2(run: Run) -> None:
    result = run("acount")
    assert result.exit_code == 2
    assert "No such command" in result.stderr


@pytest.mark.parametrize(
    ("raised", "code", "stderr"),
    [
        (ConfigError("c.toml: bad"), 2, "error: c.toml: bad\n"),
        (ChainUnavailable("no node at http://x"), 1, "error: no node at http://x\n"),
        (click.Abort(), 1, "aborted\n"),
        (KeyboardInterrupt(), 130, ""),
    ],
)
def test_exit_codes(
    raised: BaseException, code: int, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail() -> None:
        raise raised

    assert main_module._exit_code(fail) == code
    assert capsys.readouterr().err == stderr


def test_interrupt_inside_click_is_130() -> None:
    def interrupted() -> None:
        raise click.Abort() from KeyboardInterrupt()

    assert main_module._exit_code(interrupted) == 130


def test_console_entry_point(
    run: Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["consortium", "account", "export", "nobody"])
    with pytest.raises(SystemExit) as exit_info:
        main_module.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown account 'nobody'")


def test_context_resolves_account_names_and_any_address(run: Run) -> None:
    run("account", "import", "bank", "--private-key-file", "-", input=KEY)
    context = CliContext()
    assert context.resolve_address("bank") == KEY_ADDRESS
    outsider = Account.from_key(ANVIL_KEYS[1]).address
    assert context.resolve_address(outsider.lower()) == outsider
    with pytest.raises(KeystoreError, match="unknown account 'nobody'"):
        context.resolve_address("nobody")
