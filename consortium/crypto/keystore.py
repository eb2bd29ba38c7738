"""A directory of Ethereum keystore v3 files, one ``<name>.json`` per account.

The files hold exactly the JSON that ``eth_account.Account.encrypt`` produces (scrypt), so
they import into geth, MetaMask or any other wallet, and wallets' files import here. The
keystore never overwrites anything: not a file, and not an address stored under another name,
because silently replacing a key loses the only copy of it.
"""

from __future__ import annotations

import json
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
from consortium.errors import KeystoreError

DEFAULT_SCRYPT_N = 262144

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PRIVATE_KEY = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_CRYPTO_FIELDS = ("cipher", "cipherparams", "ciphertext", "kdf", "kdfparams", "mac")


@dataclass(frozen=True)
class KeyInfo:
    """An account in the keystore, known without its password."""

    name: str
    address: ChecksumAddress
    path: Path


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
        content = _read_bytes(path)
        return self._store(name, _address_of(_parse(content, path), path), content)

    def list(self) -> list[KeyInfo]:
        """All accounts, sorted by name; files whose names are not account names are skipped."""
        if not self.directory.is_dir():
            return []
        infos = [
            self._info(path.stem, path)
            for path in self.directory.glob("*.json")
            if _NAME.fullmatch(path.stem)
        ]
        return sorted(infos, key=lambda info: info.name)

    def get(self, name_or_address: str) -> KeyInfo:
        """Find an account by name, or else by address (any letter case)."""
        if _NAME.fullmatch(name_or_address):
            path = self.directory / f"{name_or_address}.json"
            if path.is_file():
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
        return self.path_of(name_or_address).read_text(encoding="utf-8")

    def unlock(self, name_or_address: str, password: str) -> LocalAccount:
        """Decrypt an account's key; a wrong password is a :class:`KeystoreError`."""
        info = self.get(name_or_address)
        keyfile = _parse(_read_bytes(info.path), info.path)
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
        if not _NAME.fullmatch(name):
            raise KeystoreError(
                f"invalid account name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-'"
            )
        path = self.directory / f"{name}.json"
        if path.exists():
            raise KeystoreError(f"account '{name}' already exists")
        return path

    def _info(self, name: str, path: Path) -> KeyInfo:
        return KeyInfo(name, _address_of(_parse(_read_bytes(path), path), path), path)

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


def _parse(content: bytes, path: Path) -> dict[str, Any]:
    """Check that ``content`` looks like a v3 keystore file; the message names ``path``."""
    try:
        keyfile = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"corrupt keystore file {path}: not JSON ({exc})") from None
    if not isinstance(keyfile, dict):
        raise KeystoreError(f"corrupt keystore file {path}: not a JSON object")
    # Wallets differ in letter case ("Crypto" in old geth files); eth-account accepts both.
    fields = {str(key).lower(): value for key, value in keyfile.items()}
    if fields.get("version") != 3:
        raise KeystoreError(f"corrupt keystore file {path}: not a version 3 keystore")
    crypto = fields.get("crypto")
    if not isinstance(crypto, dict) or any(
        field not in {str(key).lower() for key in crypto} for field in _CRYPTO_FIELDS
    ):
        raise KeystoreError(f"corrupt keystore file {path}: missing or incomplete 'crypto' section")
    return keyfile


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore file {path}: {exc.strerror or exc}") from None


def _address_of(keyfile: dict[str, Any], path: Path) -> ChecksumAddress:
    """The file's checksummed address; wallets store it without the 0x prefix."""
    address = next((v for k, v in keyfile.items() if str(k).lower() == "address"), None)
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
