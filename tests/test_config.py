"""Tests of consortium.config: file discovery, validation messages, environment overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from consortium.config import load_config
from consortium.errors import ConfigError, UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory so the repository's own config file is not found."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(text: str, env: dict[str, str] | None = None) -> str:
    path = write(Path("hardhat-free-config.toml"), text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = load_config(env={})
    assert config.source is None
    assert config.is_embedded
    assert config.network.chain_id == 0
    assert config.network.poll_latency == 0.05
    assert config.data_dir == tmp_path / ".consortium"
    assert config.keystore_dir == tmp_path / ".consortium" / "keystore"
    assert config.deployment_file == tmp_path / ".consortium" / "deployment.json"
    assert (config.anvil.host, config.anvil.port, config.anvil.chain_id) == (
        "127.0.0.1",
        8545,
        31337,
    )
    assert config.anvil.archive is False
    assert (config.governance.quorum_bps, config.governance.proposal_lifetime) == (5000, 604800)
    assert config.keys.scrypt_n == 262144


def test_config_is_frozen() -> None:
    config = load_config(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.network.url = "http://evil"  # type: ignore[misc]


def test_committed_file_sets_every_field_and_points_at_the_local_node() -> None:
    committed = REPO_ROOT / "hardhat-free-config.toml"
    document = tomllib.loads(committed.read_text(encoding="utf-8"))
    assert {section: set(keys) for section, keys in document.items()} == {
        "network": {"url", "chain_id", "poll_latency", "confirmations"},
        "paths": {"data_dir", "keystore_dir", "deployment_file"},
        "anvil": {"host", "port", "chain_id", "archive"},
        "governance": {"quorum_bps", "proposal_lifetime"},
        "keys": {"scrypt_n"},
    }
    config = load_config(committed, env={})
    assert not config.is_embedded
    assert config.network.url == f"http://{config.anvil.host}:{config.anvil.port}"
    assert config.data_dir == REPO_ROOT / ".consortium"


def test_default_file_in_cwd_is_found(tmp_path: Path) -> None:
    write(tmp_path / "hardhat-free-config.toml", "[anvil]\nport = 9545\n")
    config = load_config(env={})
    assert config.anvil.port == 9545
    assert config.source == tmp_path / "hardhat-free-config.toml"


def test_relative_paths_resolve_against_the_file_not_the_cwd(tmp_path: Path) -> None:
    path = write(
        tmp_path / "project" / "c.toml",
        '[paths]\ndata_dir = "state"\nkeystore_dir = "/abs/keys"\n',
    )
    config = load_config(path, env={})
    assert config.data_dir == tmp_path / "project" / "state"
    assert config.keystore_dir == Path("/abs/keys")
    assert config.deployment_file == tmp_path / "project" / "state" / "deployment.json"


def test_config_env_variable_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "other.toml", "[governance]\nquorum_bps = 6000\n")
    write(tmp_path / "hardhat-free-config.toml", "[governance]\nquorum_bps = 7000\n")
    assert load_config(env={"CONSORTIUM_CONFIG": "other.toml"}).governance.quorum_bps == 6000


def test_explicit_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^missing\.toml: no such configuration file$"):
        load_config(Path("missing.toml"), env={})
    with pytest.raises(ConfigError, match=r"named by CONSORTIUM_CONFIG"):
        load_config(env={"CONSORTIUM_CONFIG": "gone.toml"})


def test_config_error_is_a_usage_error_with_exit_code_2() -> None:
    assert issubclass(ConfigError, UsageError)
    assert ConfigError("x").exit_code == 2


def test_invalid_toml_reports_line_and_column() -> None:
    message = config_error("[network]\nurl = \n")
    assert message.startswith("hardhat-free-config.toml: invalid TOML: ")
    assert "line 2" in message and "column" in message


def test_bad_url_message_names_file_field_and_value() -> None:
    assert config_error('[network]\nurl = "ftp://x"\n') == (
        'hardhat-free-config.toml: network.url must be "embedded" or an http(s):// URL, '
        "got 'ftp://x'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[nework]\nurl = 'embedded'\n", "unknown section [nework]"),
        ("[network]\nuri = 'embedded'\n", "unknown key network.uri"),
        ("network = 5\n", "network must be a table"),
        ("[network]\nchain_id = '1'\n", "network.chain_id must be an integer in 0 .. "),
        ("[network]\nchain_id = -1\n", "network.chain_id must be an integer in 0 .. "),
        ("[network]\npoll_latency = 0\n", "network.poll_latency must be a number of seconds"),
        ("[network]\nurl = 'http://'\n", "network.url must be"),
        ("[paths]\ndata_dir = ''\n", "paths.data_dir must be a non-empty string"),
        ("[paths]\nkeystore_dir = 3\n", "paths.keystore_dir must be a non-empty string"),
        ('[paths]\ndata_dir = "a\\u0000b"\n', "paths.data_dir must be a path without NUL bytes"),
        ('[paths]\nkeystore_dir = "\\u0000"\n', "paths.keystore_dir must be a path without NUL"),
        ('[paths]\ndeployment_file = "d\\u0000"\n', "paths.deployment_file must be a path"),
        (
            '[network]\nurl = "http://127.0.0.1:8546"\n[anvil]\nport = 8545\n',
            "network.url http://127.0.0.1:8546 is port 8546 of this host, but anvil.port is "
            "8545: make them the same port",
        ),
        (
            '[network]\nurl = "http://localhost/"\n[anvil]\nport = 8545\n',
            "network.url http://localhost/ is port 80 of this host, but anvil.port is 8545",
        ),
        ("[anvil]\nport = 0\n", "anvil.port must be an integer in 1 .. 65535, got 0"),
        ("[anvil]\nport = true\n", "anvil.port must be an integer in 1 .. 65535, got True"),
        ("[anvil]\nchain_id = 0\n", "anvil.chain_id must be an integer in 1 .. "),
        ("[anvil]\narchive = 'yes'\n", "anvil.archive must be true or false, got 'yes'"),
        ("[anvil]\narchive = 1\n", "anvil.archive must be true or false, got 1"),
        ("[governance]\nquorum_bps = 10000\n", "quorum_bps must be an integer in 0 .. 9999"),
        (
            "[governance]\nproposal_lifetime = 59\n",
            "proposal_lifetime must be an integer in 60 .. 31536000",
        ),
        ("[governance]\nproposal_lifetime = 31536001\n", "governance.proposal_lifetime"),
        (
            "[keys]\nscrypt_n = 1000\n",
            "scrypt_n must be a power of two in 2**10 .. 2**20, got 1000",
        ),
        ("[keys]\nscrypt_n = 2097152\n", "keys.scrypt_n must be a power of two"),
        ("[keys]\nscrypt_n = 512\n", "keys.scrypt_n must be a power of two"),
    ],
)
def test_invalid_fields_are_rejected_with_their_name(text: str, expected: str) -> None:
    message = config_error(text)
    assert message.startswith("hardhat-free-config.toml: ")
    assert expected in message


def test_boundary_values_are_accepted() -> None:
    path = write(
        Path("edge.toml"),
        "[network]\nurl = 'https://rpc.example.org/v1'\nchain_id = 131277322940537\n"
        "poll_latency = 1\n[governance]\nquorum_bps = 0\nproposal_lifetime = 60\n"
        "[keys]\nscrypt_n = 1024\n[anvil]\narchive = true\n",
    )
    config = load_config(path, env={})
    assert config.anvil.archive is True
    assert config.network.url == "https://rpc.example.org/v1"
    assert config.network.poll_latency == 1.0
    assert isinstance(config.network.poll_latency, float)
    assert config.governance.quorum_bps == 0
    assert config.keys.scrypt_n == 1024


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "conf" / "c.toml", "[network]\nurl = 'embedded'\nchain_id = 5\n")
    env = {
        "CONSORTIUM_NETWORK": "http://10.0.0.1:8545",
        "CONSORTIUM_CHAIN_ID": "31337",
        "CONSORTIUM_DATA_DIR": "env-data",
        "CONSORTIUM_KEYSTORE_DIR": "k",
        "CONSORTIUM_DEPLOYMENT_FILE": "/srv/deployment.json",
        "CONSORTIUM_SCRYPT_N": "2048",
    }
    config = load_config(path, env=env)
    assert config.network.url == "http://10.0.0.1:8545"
    assert not config.is_embedded
    assert config.network.chain_id == 31337
    # A relative data directory from the environment is relative to where the user is.
    assert config.data_dir == tmp_path / "env-data"
    assert config.keystore_dir == tmp_path / "env-data" / "k"
    assert config.deployment_file == Path("/srv/deployment.json")
    assert config.keys.scrypt_n == 2048


def test_empty_environment_variable_counts_as_unset() -> None:
    config = load_config(env={"CONSORTIUM_NETWORK": "", "CONSORTIUM_SCRYPT_N": ""})
    assert config.is_embedded
    assert config.keys.scrypt_n == 262144


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONSORTIUM_CHAIN_ID", "abc", "network.chain_id must be an integer in 0 .. "),
        ("CONSORTIUM_SCRYPT_N", "1000", "keys.scrypt_n must be a power of two"),
        ("CONSORTIUM_NETWORK", "localhost:8545", "network.url must be"),
    ],
)
def test_bad_environment_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={variable: value})
    message = str(info.value)
    assert message.startswith(f"environment variable {variable}: ")
    assert expected in message
    assert value in message


def test_a_url_and_anvil_port_that_agree_or_that_name_another_host_are_accepted() -> None:
    for text in (
        '[network]\nurl = "http://localhost:9545"\n[anvil]\nport = 9545\n',
        '[network]\nurl = "https://rpc.example.org"\n[anvil]\nport = 9545\n',
        '[network]\nurl = "http://127.0.0.1:9546"\n',  # no local node configured
    ):
        load_config(write(Path("c.toml"), text), env={})
    # An environment variable points one shell elsewhere, deliberately.
    path = write(Path("c.toml"), '[network]\nurl = "http://127.0.0.1:9545"\n[anvil]\nport = 9545\n')
    env = {"CONSORTIUM_NETWORK": "http://127.0.0.1:9999"}
    assert load_config(path, env=env).network.url == "http://127.0.0.1:9999"


def test_a_nul_byte_in_a_path_from_the_environment_or_the_command_line_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"CONSORTIUM_DATA_DIR": "a\0b"})
    assert str(info.value) == (
        "environment variable CONSORTIUM_DATA_DIR: paths.data_dir must be a path without NUL "
        "bytes, got 'a\\x00b'"
    )
    with pytest.raises(ConfigError, match=r"^'c\\x00.toml': no such configuration file: the path"):
        load_config(Path("c\0.toml"), env={})


def test_a_file_where_the_data_directory_should_be_is_refused(tmp_path: Path) -> None:
    write(tmp_path / ".consortium", "not a directory")
    with pytest.raises(ConfigError) as info:
        load_config(env={})
    assert str(info.value) == (
        f"paths.data_dir (the default) {tmp_path / '.consortium'} cannot be a directory: "
        "it is a file"
    )
    with pytest.raises(ConfigError) as info:
        load_config(env={"CONSORTIUM_DATA_DIR": ".consortium/state"})
    assert str(info.value) == (
        f"environment variable CONSORTIUM_DATA_DIR: paths.data_dir "
        f"{tmp_path / '.consortium' / 'state'} cannot be a directory: "
        f"{tmp_path / '.consortium'} is a file"
    )
