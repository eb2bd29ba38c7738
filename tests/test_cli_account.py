"""Tests of ``consortium account`` and the root command's error handling, through the CLI."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from cli_process import one_line_error as process_error
from cli_process import run_cli_process
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


def test_a_bad_file_in_the_keystore_is_named_and_the_others_still_work(
    run: Run, tmp_path: Path
) -> None:
    assert run("account", "new", "alice").exit_code == 0
    broken = tmp_path / ".consortium" / "keystore" / "broken.json"
    broken.write_text("{truncated")
    warning = (
        f"warning: skipped {broken}: corrupt keystore file {broken}: "
        "not JSON (Expecting property name enclosed in double quotes at column 2)\n"
    )
    listed = run("account", "list", "--json")
    assert listed.exit_code == 0
    assert [row["name"] for row in json.loads(listed.stdout)] == ["alice"]
    assert listed.stderr == warning
    created = run("account", "new", "bob")
    assert created.exit_code == 0, created.output
    table = run("account", "list")
    assert "alice" in table.stdout and "bob" in table.stdout
    assert table.stderr == warning


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("..", "use 1 to 64 letters, digits, '_', '.' or '-', not starting with '.' or '-'"),
        ("-x", "use 1 to 64 letters, digits, '_', '.' or '-', not starting with '.' or '-'"),
        (KEY_ADDRESS, "it could be taken for an address"),
        ("0xbank", "it could be taken for an address"),
    ],
)
def test_names_that_fail_elsewhere_are_refused(run: Run, name: str, reason: str) -> None:
    for command in (("new", "--", name), ("import", "--private-key-file", "-", "--", name)):
        result = run("account", *command, input=KEY)
        assert result.exit_code == 2
        assert one_line_error(result) == f"error: invalid account name {name!r}: {reason}"
    assert run("account", "list", "--json").stdout.strip() == "[]"


def test_import_refuses_a_keystore_whose_kdf_would_not_finish(run: Run, tmp_path: Path) -> None:
    keyfile = Account.encrypt(KEY, "pw", kdf="scrypt", iterations=1024)
    keyfile["crypto"]["kdfparams"]["n"] = 2**30
    (tmp_path / "hostile.json").write_text(json.dumps(keyfile))
    result = run("account", "import", "x", "--keystore", "hostile.json")
    assert result.exit_code == 2
    assert one_line_error(result) == (
        "error: refusing keystore file hostile.json: scrypt n*r*p is 8,589,934,592, "
        "above the limit of 8,388,608"
    )


@pytest.mark.parametrize(
    ("levels", "reason"),
    [
        (100_000, "keystore file deep.json is larger than 65,536 bytes, the limit for a keystore"),
        (30_000, "corrupt keystore file deep.json: not readable JSON: it nests arrays and objects"),
    ],
)
def test_import_refuses_deeply_nested_json(
    run: Run, tmp_path: Path, levels: int, reason: str
) -> None:
    (tmp_path / "deep.json").write_text("[" * levels + "]" * levels)
    result = run("account", "import", "x", "--keystore", "deep.json")
    assert result.exit_code == 2
    assert one_line_error(result).startswith(f"error: {reason}")


def test_files_that_never_end_are_refused_promptly(tmp_path: Path) -> None:
    """Run as a process with a deadline: a regression would block or read without end."""
    os.mkfifo(tmp_path / "fifo.json")
    imported = run_cli_process(tmp_path, "account", "import", "x", "--keystore", "fifo.json")
    assert process_error(imported) == (
        "error: cannot read keystore file fifo.json: it is a FIFO, not a regular file"
    )
    zero = run_cli_process(tmp_path, "account", "import", "x", "--keystore", "/dev/zero")
    assert process_error(zero) == (
        "error: cannot read keystore file /dev/zero: it is a character device, not a regular file"
    )
    key = run_cli_process(tmp_path, "account", "import", "x", "--private-key-file", "/dev/zero")
    assert process_error(key) == "error: /dev/zero holds more than 4,096 bytes, not a private key"

    keystore = tmp_path / ".consortium" / "keystore"
    keystore.mkdir(parents=True)
    os.mkfifo(keystore / "alice.json")
    exported = run_cli_process(tmp_path, "account", "export", "alice")
    assert process_error(exported) == (
        f"error: cannot read keystore file {keystore / 'alice.json'}: it is a FIFO, "
        "not a regular file"
    )
