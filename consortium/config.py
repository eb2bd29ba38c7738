"""Load, validate and override ``hardhat-free-config.toml``.

The file is found in this order: the path passed in (``--config``), the environment variable
``CONSORTIUM_CONFIG``, ``./hardhat-free-config.toml`` in the current directory, and finally the
built-in defaults. A path that was named explicitly must exist; the default file may be absent.

Every field is checked here, once, so that the rest of the code can trust a :class:`Config`:
unknown sections or keys (usually typos that would otherwise be silently ignored), wrong types
and out-of-range values are :class:`~consortium.errors.ConfigError` with a one-line message
naming the file and the field as ``section.key``.

Environment variables override the file (an empty variable counts as unset):

============================== ========================== ======================================
variable                       overrides                  note
============================== ========================== ======================================
``CONSORTIUM_CONFIG``          (the file itself)          path of the configuration file
``CONSORTIUM_NETWORK``         ``network.url``            ``embedded`` or an http(s):// URL
``CONSORTIUM_CHAIN_ID``        ``network.chain_id``       decimal integer, 0 = accept any
``CONSORTIUM_CONFIRMATIONS``   ``network.confirmations``  blocks that must hold a transaction
``CONSORTIUM_DATA_DIR``        ``paths.data_dir``         relative to the current directory
``CONSORTIUM_KEYSTORE_DIR``    ``paths.keystore_dir``     relative to the data directory
``CONSORTIUM_DEPLOYMENT_FILE`` ``paths.deployment_file``  relative to the data directory
``CONSORTIUM_SCRYPT_N``        ``keys.scrypt_n``          power of two, 2**10 .. 2**20
============================== ========================== ======================================

Relative paths resolve against the place that named them: ``data_dir`` from the file against
the file's directory (so a project's config works from any working directory), from the
environment or the defaults against the current directory; ``keystore_dir`` and
``deployment_file`` always against ``data_dir``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from consortium.errors import ConfigError

DEFAULT_CONFIG_NAME = "hardhat-free-config.toml"
CONFIG_ENV = "CONSORTIUM_CONFIG"

# JavaScript tools (MetaMask, ethers) hold chain ids as IEEE doubles; larger ids are not exact.
_MAX_CHAIN_ID = 2**53 - 1


@dataclass(frozen=True)
class NetworkConfig:
    """Which JSON-RPC endpoint to use and how to talk to it."""

    url: str
    chain_id: int
    poll_latency: float
    confirmations: int  # blocks that must hold a transaction before it counts; 1 = mined


@dataclass(frozen=True)
class AnvilConfig:
    """Where ``consortium chain start`` runs its local anvil node."""

    host: str
    port: int
    chain_id: int
    archive: bool  # keep every block's state across restarts, for audits of past rounds


@dataclass(frozen=True)
class GovernanceConfig:
    """Constructor parameters of the membership contract at deployment."""

    quorum_bps: int
    proposal_lifetime: int


@dataclass(frozen=True)
class KeysConfig:
    """Parameters for newly created keystore files."""

    scrypt_n: int


@dataclass(frozen=True)
class Config:
    """The validated configuration; all paths are absolute."""

    network: NetworkConfig
    data_dir: Path
    keystore_dir: Path
    deployment_file: Path
    anvil: AnvilConfig
    governance: GovernanceConfig
    keys: KeysConfig
    source: Path | None

    @property
    def is_embedded(self) -> bool:
        """True when the chain is the in-process eth-tester rather than a JSON-RPC endpoint."""
        return self.network.url == "embedded"


class _Invalid(Exception):
    """A value failed its check; carries the 'must be ...' phrase of the message."""


_Check = Callable[[Any], Any]


def _integer(low: int, high: int) -> _Check:
    def check(value: Any) -> int:
        # bool is an int subclass in Python, but `true` is never meant as a number.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _Invalid(f"must be an integer in {low} .. {high}")
        return value

    return check


def _power_of_two(low_exp: int, high_exp: int) -> _Check:
    def check(value: Any) -> int:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value <= 0
            or value & (value - 1)
            or not 2**low_exp <= value <= 2**high_exp
        ):
            raise _Invalid(f"must be a power of two in 2**{low_exp} .. 2**{high_exp}")
        return value

    return check


def _seconds(low: float, high: float) -> _Check:
    def check(value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not low < value <= high:
            raise _Invalid(f"must be a number of seconds greater than {low} and at most {high}")
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string")
    return value


def _path(value: Any) -> str:
    # The operating system ends a path at a NUL byte, so Python refuses to pass one on.
    text = _text(value)
    if "\0" in text:
        raise _Invalid("must be a path without NUL bytes")
    return text


def _network_url(value: Any) -> str:
    if value == "embedded":
        return value
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname:
            return value
    raise _Invalid('must be "embedded" or an http(s):// URL')


# section -> key -> (default, check). The single source of the defaults and the rules.
_SCHEMA: dict[str, dict[str, tuple[Any, _Check]]] = {
    "network": {
        "url": ("embedded", _network_url),
        "chain_id": (0, _integer(0, _MAX_CHAIN_ID)),
        "poll_latency": (0.05, _seconds(0, 60)),
        # More blocks than this outlast the 120 s wait for a transaction at a block a second.
        "confirmations": (1, _integer(1, 100)),
    },
    "paths": {
        "data_dir": (".consortium", _path),
        "keystore_dir": ("keystore", _path),
        "deployment_file": ("deployment.json", _path),
    },
    "anvil": {
        "host": ("127.0.0.1", _text),
        "port": (8545, _integer(1, 65535)),
        "chain_id": (31337, _integer(1, _MAX_CHAIN_ID)),
        "archive": (False, _boolean),
    },
    "governance": {
        "quorum_bps": (5000, _integer(0, 9999)),
        "proposal_lifetime": (604800, _integer(60, 31536000)),
    },
    "keys": {
        "scrypt_n": (262144, _power_of_two(10, 20)),
    },
}

_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_DEFAULT_PORTS = {"http": 80, "https": 443}

_ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "CONSORTIUM_NETWORK": ("network", "url"),
    "CONSORTIUM_CHAIN_ID": ("network", "chain_id"),
    "CONSORTIUM_CONFIRMATIONS": ("network", "confirmations"),
    "CONSORTIUM_DATA_DIR": ("paths", "data_dir"),
    "CONSORTIUM_KEYSTORE_DIR": ("paths", "keystore_dir"),
    "CONSORTIUM_DEPLOYMENT_FILE": ("paths", "deployment_file"),
    "CONSORTIUM_SCRYPT_N": ("keys", "scrypt_n"),
}


def load_config(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Find, read and validate the configuration, then apply the environment overrides."""
    cwd = Path.cwd()
    named_by = ""
    if path is None and env.get(CONFIG_ENV):
        path, named_by = Path(env[CONFIG_ENV]), f" (named by {CONFIG_ENV})"
    if path is None and (cwd / DEFAULT_CONFIG_NAME).is_file():
        path = Path(DEFAULT_CONFIG_NAME)

    values = {
        section: {key: spec[0] for key, spec in keys.items()} for section, keys in _SCHEMA.items()
    }
    origins: dict[tuple[str, str], str] = {}  # where each field not left at its default was set
    data_dir_base = cwd
    source: Path | None = None
    if path is not None:
        _merge_file(values, origins, path, named_by)
        source = (cwd / path.expanduser()).absolute()
        data_dir_base = source.parent

    for variable, (section, key) in _ENV_OVERRIDES.items():
        raw = env.get(variable)
        if raw:
            where = f"environment variable {variable}"
            values[section][key] = _check(where, section, key, _from_env(section, key, raw))
            origins[section, key] = where
            if (section, key) == ("paths", "data_dir"):
                data_dir_base = cwd

    _check_anvil_url(values, origins)
    data_dir = data_dir_base / Path(values["paths"]["data_dir"]).expanduser()
    _check_directory(data_dir, origins.get(("paths", "data_dir")), "paths.data_dir")
    return Config(
        network=NetworkConfig(**values["network"]),
        data_dir=data_dir,
        keystore_dir=data_dir / Path(values["paths"]["keystore_dir"]).expanduser(),
        deployment_file=data_dir / Path(values["paths"]["deployment_file"]).expanduser(),
        anvil=AnvilConfig(**values["anvil"]),
        governance=GovernanceConfig(**values["governance"]),
        keys=KeysConfig(**values["keys"]),
        source=source,
    )


def _merge_file(
    values: dict[str, dict[str, Any]],
    origins: dict[tuple[str, str], str],
    path: Path,
    named_by: str,
) -> None:
    """Read ``path`` and overwrite the defaults in ``values`` with its checked fields, noting
    each in ``origins``.

    ``named_by`` is appended to the message for a missing file: a stale ``CONSORTIUM_CONFIG``
    in the environment is otherwise hard to spot.
    """
    where = str(path)
    if "\0" in where:  # open() would raise ValueError: no file can have such a name
        raise ConfigError(
            f"{where!r}: no such configuration file{named_by}: the path holds a NUL byte"
        )
    try:
        with path.expanduser().open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such configuration file{named_by}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: invalid TOML: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None

    for section, table in document.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table [{section}], got {table!r}")
        for key, value in table.items():
            if key not in _SCHEMA[section]:
                known = ", ".join(_SCHEMA[section])
                raise ConfigError(f"{where}: unknown key {section}.{key} (known: {known})")
            values[section][key] = _check(where, section, key, value)
            origins[section, key] = where


def _check_anvil_url(
    values: dict[str, dict[str, Any]], origins: dict[tuple[str, str], str]
) -> None:
    """Refuses a file that configures the local anvil node on one port and points network.url
    at another port of the same host: every command would then talk to some other node, or to
    none, while `consortium chain start` runs one nobody uses.

    Only fields set in one file are compared: an environment variable pointing network.url
    elsewhere is a deliberate choice for one shell, and defaults configure no node.
    """
    where = origins.get(("network", "url"))
    if where is None or origins.get(("anvil", "port")) != where:
        return
    url, anvil = values["network"]["url"], values["anvil"]
    if url == "embedded":
        return
    parts = urlsplit(url)
    if parts.hostname not in (*_LOOPBACK, anvil["host"]):
        return
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    if port != anvil["port"]:
        raise ConfigError(
            f"{where}: network.url {url} is port {port} of this host, but anvil.port is "
            f"{anvil['port']}: make them the same port"
        )


def _check_directory(path: Path, where: str | None, field: str) -> None:
    """Refuses a directory path at which, or above which, a file is in the way; a directory
    that does not exist yet is fine (commands create it). ``where`` set the field, if not
    left at its default."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        named = f"{where}: {field}" if where else f"{field} (the default)"
        what = "it is a file" if blocker == path else f"{blocker} is a file"
        raise ConfigError(f"{named} {path} cannot be a directory: {what}")


def _check(where: str, section: str, key: str, value: Any) -> Any:
    try:
        return _SCHEMA[section][key][1](value)
    except _Invalid as exc:
        raise ConfigError(f"{where}: {section}.{key} {exc}, got {value!r}") from None


def _from_env(section: str, key: str, raw: str) -> Any:
    """Turn an environment string into the TOML type the field expects.

    A string that does not parse is passed on unchanged so that the field's check reports it
    with the same message a wrong value in the file would get.
    """
    if isinstance(_SCHEMA[section][key][0], int):
        try:
            return int(raw.strip(), 10)
        except ValueError:
            return raw
    return raw
