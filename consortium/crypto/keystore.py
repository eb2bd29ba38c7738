"""A directory of Ethereum keystore v3 files, one ``<name>.json`` per account.

The files hold exactly the JSON that ``eth_account.Account.encrypt`` produces (scrypt), so
they import into geth, MetaMask or any other wallet, and wallets' files import here. The
keystore never overwrites anything: not a file, and not an address stored under another name,
because silently replacing a key loses the only copy of it.

Key files may come from anywhere (another wallet, a copy dropped into the directory by hand),
so each is read within bounds: a regular file of at most :data:`MAX_KEYSTORE_BYTES`, and
unlocked only if its key derivation costs at most :data:`MAX_KDF_COST` (see :func:`_check_kdf`).
One unreadable file does not hide the other accounts: :meth:`Keystore.scan` names it.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import is_hex_address, to_checksum_address

from consortium.crypto.devkeys import refuse_dev_key
from consortium.errors import KeystoreError, UsageError
from consortium.jsonio import parse_json, read_regular_file

DEFAULT_SCRYPT_N = 262144
MAX_KEYSTORE_BYTES = 2**16
"""The largest key file read; wallets write about 500 bytes."""
MAX_KDF_COST = 2**23
"""The most a key file's derivation may cost: scrypt's n*r*p (its memory is 128*n*r bytes) or
PBKDF2's c. This is scrypt n=2**20, r=8, p=1, the costliest setting ``keys.scrypt_n`` writes
(1 GiB, a few seconds), and eight times PBKDF2's c=1,000,000 that eth-account writes."""
DKLEN_RANGE = range(32, 65)
"""Derived key lengths accepted: the cipher key and MAC key take the first 32 bytes."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_KDF_FACTORS = {"scrypt": ("n", "r", "p"), "pbkdf2": ("c",)}
_PRIVATE_KEY = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_CRYPTO_FIELDS = ("cipher", "cipherparams", "ciphertext", "kdf", "kdfparams", "mac")


@dataclass(frozen=True)
class KeyInfo:
    """An account in the keystore, known without its password."""

    name: str
    address: ChecksumAddress
    path: Path


@dataclass(frozen=True)
class SkippedFile:
    """A ``.json`` file in the keystore directory that is not an account, and why."""

    path: Path
    reason: str


class Keystore:
    """Create, import, list and unlock the accounts stored in ``directory``."""

    def __init__(self, directory: Path, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        self.directory = directory
        self.scrypt_n = scrypt_n

    def create(self, name: str, password: str) -> KeyInfo:
        """Generate a fresh random key and store it encrypted under ``name``."""
        return self._store_key(name, Account.create(), password)

    def import_key(self, name: str, private_key: str, password: str) -> KeyInfo:
        """Store a raw private key (64 hex digits, ``0x`` optional) encrypted under ``name``.

        The development keys are accepted: they are what local chains fund. They are refused
        later, by :meth:`signer`, when they would sign for a chain that is not local.
        """
        match = _PRIVATE_KEY.fullmatch(private_key.strip())
        try:
            if match is None:
                raise ValueError
            account = Account.from_key("0x" + match.group(1))
        except ValueError:
            # Never echo the input: it may be a real key with a typo.
            raise KeystoreError(
                "invalid private key: expected 64 hex digits (optionally 0x-prefixed) "
                "encoding a number between 1 and the secp256k1 group order"
            ) from None
        return self._store_key(name, account, password)

    def import_file(self, name: str, path: Path) -> KeyInfo:
        """Copy an existing v3 keystore file (from geth, MetaMask, ...) in under ``name``.

        Only its shape is checked; its password is not needed until the key is unlocked.
        """
        content, keyfile = _load(path)
        _check_kdf(keyfile["crypto"], path)
        return self._store(name, _address_of(keyfile, path), content)

    def list(self) -> list[KeyInfo]:
        """All accounts, sorted by name, without the files :meth:`scan` skips."""
        return self.scan()[0]

    def scan(self) -> tuple[list[KeyInfo], list[SkippedFile]]:
        """All accounts sorted by name, and the ``.json`` files that are not one.

        A file that cannot be read, or whose name is not an account name, is skipped rather than
        refused, so that one damaged or stray file does not lock every other account away.
        """
        if not self.directory.is_dir():
            return [], []
        infos: list[KeyInfo] = []
        skipped: list[SkippedFile] = []
        for path in sorted(self.directory.glob("*.json")):
            problem = _name_problem(path.stem)
            if problem is not None:
                reason = f"{path.stem!r} is not an account name: {problem}"
                skipped.append(SkippedFile(path, reason))
                continue
            try:
                infos.append(self._info(path.stem, path))
            except UsageError as exc:
                skipped.append(SkippedFile(path, str(exc)))
        return sorted(infos, key=lambda info: info.name), skipped

    def get(self, name_or_address: str) -> KeyInfo:
        """Find an account by name, or else by address (any letter case)."""
        if _name_problem(name_or_address) is None:
            path = self.directory / f"{name_or_address}.json"
            if path.exists():  # anything there is read, so that what is wrong with it is named
                return self._info(name_or_address, path)
        if is_hex_address(name_or_address):
            for info in self.list():
                if info.address.lower() == name_or_address.lower():
                    return info
        known = ", ".join(info.name for info in self.list()) or f"none in {self.directory}"
        raise KeystoreError(f"unknown account '{name_or_address}' (known accounts: {known})")

    def path_of(self, name_or_address: str) -> Path:
        """The keystore file of an account."""
        return self.get(name_or_address).path

    def read_json(self, name_or_address: str) -> str:
        """The account's keystore v3 JSON text, as stored, for export to another wallet."""
        content, _ = _load(self.path_of(name_or_address))
        return content.decode("utf-8")

    def unlock(self, name_or_address: str, password: str) -> LocalAccount:
        """Decrypt an account's key; a wrong password is a :class:`KeystoreError`."""
        info = self.get(name_or_address)
        _, keyfile = _load(info.path)
        _check_kdf(keyfile["crypto"], info.path)
        try:
            key = Account.decrypt(keyfile, password)
        except ValueError as exc:
            if str(exc) == "MAC mismatch":
                raise KeystoreError(f"wrong password for account '{info.name}'") from None
            raise KeystoreError(f"corrupt keystore file {info.path}: {exc}") from None
        except (KeyError, TypeError, NotImplementedError) as exc:
            raise KeystoreError(f"corrupt keystore file {info.path}: {exc!r}") from None
        account: LocalAccount = Account.from_key(key)
        if account.address != info.address:
            # The address field is not covered by the MAC; a mismatch means a tampered file.
            raise KeystoreError(
                f"corrupt keystore file {info.path}: it claims address {info.address} "
                f"but holds the key of {account.address}"
            )
        return account

    def signer(self, name_or_address: str, password: str, chain_id: int) -> LocalAccount:
        """Unlock an account to sign for ``chain_id``; the path every signer must be loaded by.

        Development keys are refused before decryption on any chain that is not local.
        """
        refuse_dev_key(self.get(name_or_address).address, chain_id)
        return self.unlock(name_or_address, password)

    def export_private_key(self, name_or_address: str, password: str) -> str:
        """The decrypted private key as ``0x``-prefixed hex."""
        return "0x" + bytes(self.unlock(name_or_address, password).key).hex()

    def ensure_available(self, name: str) -> Path:
        """Check that ``name`` is a valid, unused account name; return its future file.

        Callers check before asking for a password, rather than after the user typed it twice.
        """
        problem = _name_problem(name)
        if problem is not None:
            raise KeystoreError(f"invalid account name {name!r}: {problem}")
        path = self.directory / f"{name}.json"
        if path.exists():
            raise KeystoreError(f"account '{name}' already exists")
        return path

    def _info(self, name: str, path: Path) -> KeyInfo:
        return KeyInfo(name, _address_of(_load(path)[1], path), path)

    def _store_key(self, name: str, account: LocalAccount, password: str) -> KeyInfo:
        keyfile = Account.encrypt(account.key, password, kdf="scrypt", iterations=self.scrypt_n)
        return self._store(name, account.address, json.dumps(keyfile).encode())

    def _store(self, name: str, address: ChecksumAddress, content: bytes) -> KeyInfo:
        """Write ``content`` as ``<name>.json`` atomically and without replacing anything.

        The file is complete and synced under a temporary name first, then hard-linked to its
        final name: unlike a rename, a link fails when the target exists, so two concurrent
        writers cannot replace each other's key.
        """
        path = self.ensure_available(name)
        for info in self.list():
            if info.address == address:
                raise KeystoreError(f"address {address} is already stored as account '{info.name}'")

        try:
            self._make_directory()
            # mkstemp creates the file with mode 0600, and the link below shares it.
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.link(temporary, path)
            except FileExistsError:
                raise KeystoreError(f"account '{name}' already exists") from None
            finally:
                os.unlink(temporary)
            _fsync_directory(self.directory)
        except OSError as exc:
            raise KeystoreError(f"cannot write {path}: {exc.strerror or exc}") from None
        return KeyInfo(name, address, path)

    def _make_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask; the keystore must be private regardless.
            self.directory.chmod(0o700)


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an account, or None if it can.

    Names become file names and are given where addresses are too, so a name that is a path
    component of its own or could be read as an address is refused when it is chosen.
    """
    if name[:2].lower() == "0x" or is_hex_address(name):
        return "it could be taken for an address"
    if not _NAME.fullmatch(name):
        return "use 1 to 64 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    return None


def _load(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The key file's bytes and its JSON, checked to look like a v3 keystore file.

    The JSON comes back with every object key in lower case, as eth-account reads it
    ("Crypto" in old geth files), so that what is checked here is what is decrypted.
    """
    try:
        content = read_regular_file(path, what="keystore file", max_bytes=MAX_KEYSTORE_BYTES)
    except UsageError as exc:
        raise KeystoreError(str(exc)) from None
    try:
        parsed = parse_json(content)
    except UsageError as exc:
        raise KeystoreError(f"corrupt keystore file {path}: {exc}") from None
    if not isinstance(parsed, dict):
        raise KeystoreError(f"corrupt keystore file {path}: not a JSON object")
    keyfile = _lowercase_keys(parsed)
    if keyfile.get("version") != 3:
        raise KeystoreError(f"corrupt keystore file {path}: not a version 3 keystore")
    crypto = keyfile.get("crypto")
    if not isinstance(crypto, dict) or any(field not in crypto for field in _CRYPTO_FIELDS):
        raise KeystoreError(f"corrupt keystore file {path}: missing or incomplete 'crypto' section")
    return content, keyfile


def _lowercase_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the keys of it and of every object nested in it in lower case."""
    return {
        key.lower(): _lowercase_keys(value) if isinstance(value, dict) else value
        for key, value in obj.items()
    }


def _check_kdf(crypto: dict[str, Any], path: Path) -> None:
    """Refuse key derivation parameters that would make unlocking hang or exhaust memory.

    The file sets what deriving its key costs, and nothing else bounds it: scrypt n=2**30 wants
    128 GiB, PBKDF2 c=10**12 runs for days. :data:`MAX_KDF_COST` admits what wallets write
    (geth: scrypt n=262144 r=8 p=1, light n=4096 r=8 p=6; PBKDF2 c=262144; dklen 32).
    """
    kdf, params = crypto["kdf"], crypto["kdfparams"]
    if not isinstance(kdf, str) or kdf not in _KDF_FACTORS:
        raise KeystoreError(f"corrupt keystore file {path}: unknown kdf {kdf!r}")
    if not isinstance(params, dict):
        raise KeystoreError(f"corrupt keystore file {path}: 'kdfparams' is not an object")
    if kdf == "pbkdf2" and params.get("prf") != "hmac-sha256":
        raise KeystoreError(f"corrupt keystore file {path}: pbkdf2 prf is not 'hmac-sha256'")
    factors = _KDF_FACTORS[kdf]
    for name in (*factors, "dklen"):
        value = params.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KeystoreError(
                f"corrupt keystore file {path}: {kdf} {name} is not a positive integer"
            )
    if params["dklen"] not in DKLEN_RANGE:
        raise KeystoreError(
            f"refusing keystore file {path}: {kdf} dklen is {params['dklen']:,}, "
            f"not {DKLEN_RANGE.start} to {DKLEN_RANGE.stop - 1}"
        )
    cost = math.prod(params[name] for name in factors)
    if cost > MAX_KDF_COST:
        raise KeystoreError(
            f"refusing keystore file {path}: {kdf} {'*'.join(factors)} is {cost:,}, "
            f"above the limit of {MAX_KDF_COST:,}"
        )


def _address_of(keyfile: dict[str, Any], path: Path) -> ChecksumAddress:
    """The file's checksummed address; wallets store it without the 0x prefix."""
    address = keyfile.get("address")
    if isinstance(address, str) and not address.startswith("0x"):
        address = "0x" + address
    if not isinstance(address, str) or not is_hex_address(address):
        raise KeystoreError(f"corrupt keystore file {path}: missing or invalid 'address'")
    return to_checksum_address(address)


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry itself durable, not only the file's contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
