"""Tests of the keystore, the development-key rule and password sourcing."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from consortium.cli.passwords import resolve_password
from consortium.crypto import devkeys
from consortium.crypto.keystore import MAX_KEYSTORE_BYTES, Keystore, SkippedFile
from consortium.errors import KeystoreError

FAST_N = 2**10
KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_ADDRESS = Account.from_key(KEY).address
ANVIL_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "data" / "keystore", scrypt_n=FAST_N)


def test_create_writes_a_private_v3_file_any_wallet_can_decrypt(keystore: Keystore) -> None:
    info = keystore.create("alice", "s3cret")
    assert info.path == keystore.directory / "alice.json"
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keystore.directory.stat().st_mode) == 0o700
    keyfile = json.loads(info.path.read_text())
    assert keyfile["version"] == 3
    assert keyfile["crypto"]["kdf"] == "scrypt"
    assert keyfile["crypto"]["kdfparams"]["n"] == FAST_N
    assert Account.from_key(Account.decrypt(keyfile, "s3cret")).address == info.address
    assert list(keystore.directory.iterdir()) == [info.path]  # no temporary file left over


def test_unlock_and_wrong_password(keystore: Keystore) -> None:
    info = keystore.create("alice", "s3cret")
    assert keystore.unlock("alice", "s3cret").address == info.address
    with pytest.raises(KeystoreError, match=r"^wrong password for account 'alice'$"):
        keystore.unlock("alice", "S3cret")


@pytest.mark.parametrize("spelling", [KEY, KEY[2:], f"  {KEY.upper().replace('0X', '0x')}\n"])
def test_import_key_accepts_hex_with_or_without_prefix(keystore: Keystore, spelling: str) -> None:
    info = keystore.import_key("bank", spelling, "pw")
    assert info.address == KEY_ADDRESS
    assert keystore.export_private_key("bank", "pw") == KEY


@pytest.mark.parametrize("bad", ["", "0x1234", KEY + "00", KEY[:-1] + "g", "0x" + "00" * 32])
def test_import_key_rejects_bad_keys_without_echoing_them(keystore: Keystore, bad: str) -> None:
    with pytest.raises(KeystoreError, match="invalid private key") as info:
        keystore.import_key("bank", bad, "pw")
    assert not bad or bad[2:] not in str(info.value)
    assert keystore.list() == []


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a b", "x" * 65, "é", ".", "..", ".x", "-x"])
def test_invalid_names(keystore: Keystore, name: str) -> None:
    with pytest.raises(KeystoreError) as info:
        keystore.create(name, "pw")
    assert str(info.value) == (
        f"invalid account name {name!r}: "
        "use 1 to 64 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    )
    assert keystore.list() == []


@pytest.mark.parametrize("name", [ANVIL_0, ANVIL_0.lower()[2:], "0x", "0xbank", "0Xab"])
def test_names_that_read_as_addresses_are_refused(
    keystore: Keystore, tmp_path: Path, name: str
) -> None:
    with pytest.raises(KeystoreError) as info:
        keystore.import_key(name, KEY, "pw")
    assert str(info.value) == f"invalid account name {name!r}: it could be taken for an address"
    source = tmp_path / "wallet.json"
    source.write_text(json.dumps(Account.encrypt(KEY, "pw", kdf="scrypt", iterations=FAST_N)))
    with pytest.raises(KeystoreError, match="it could be taken for an address"):
        keystore.import_file(name, source)
    assert keystore.list() == []


def test_names_may_hold_dots_and_dashes_after_the_first_character(keystore: Keystore) -> None:
    assert keystore.create("bank.a-1_", "pw").name == "bank.a-1_"
    assert keystore.create("_0x", "pw").name == "_0x"


def test_never_overwrites_a_name_or_an_address(keystore: Keystore) -> None:
    first = keystore.import_key("bank", KEY, "pw")
    before = first.path.read_bytes()
    with pytest.raises(KeystoreError, match=r"^account 'bank' already exists$"):
        keystore.create("bank", "pw")
    with pytest.raises(
        KeystoreError, match=rf"address {KEY_ADDRESS} is already stored as account 'bank'"
    ):
        keystore.import_key("bank2", KEY, "pw")
    assert first.path.read_bytes() == before
    assert [info.name for info in keystore.list()] == ["bank"]


def test_a_racing_writer_cannot_replace_a_file(
    keystore: Keystore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final step is a link, which fails on an existing name even after the check passed."""
    keystore.directory.mkdir(parents=True)
    winner = keystore.directory / "bank.json"
    winner.write_text("the other writer's key")
    monkeypatch.setattr(Keystore, "ensure_available", lambda self, name: winner)
    monkeypatch.setattr(Keystore, "list", lambda self: [])
    with pytest.raises(KeystoreError, match=r"^account 'bank' already exists$"):
        keystore.import_key("bank", KEY, "pw")
    assert winner.read_text() == "the other writer's key"
    assert sorted(p.name for p in keystore.directory.iterdir()) == ["bank.json"]


def test_list_get_and_path_of(keystore: Keystore) -> None:
    assert keystore.list() == []  # the directory does not even exist yet
    carol = keystore.create("carol", "pw")
    alice = keystore.import_key("alice", KEY, "pw")
    (keystore.directory / "notes.txt").write_text("not a key")
    (keystore.directory / ".tmp-abc.part").write_text("{}")
    assert keystore.list() == [alice, carol]
    assert keystore.get(KEY_ADDRESS.lower()) == alice
    assert keystore.get("carol") == carol
    assert keystore.path_of(carol.address) == carol.path
    with pytest.raises(
        KeystoreError, match=r"unknown account 'bob' \(known accounts: alice, carol\)"
    ):
        keystore.get("bob")


def test_unknown_account_in_empty_keystore(keystore: Keystore) -> None:
    with pytest.raises(KeystoreError, match=r"unknown account 'bob'.*none in"):
        keystore.unlock("bob", "pw")


def test_import_file_keeps_the_wallet_file_and_needs_no_password(
    keystore: Keystore, tmp_path: Path
) -> None:
    keyfile = Account.encrypt(KEY, "wallet-pw", kdf="scrypt", iterations=FAST_N)
    keyfile["Crypto"] = keyfile.pop("crypto")  # old geth spelling
    source = tmp_path / "UTC--2024--abc"
    source.write_text(json.dumps(keyfile))
    info = keystore.import_file("imported", source)
    assert info.address == KEY_ADDRESS
    assert info.path.read_bytes() == source.read_bytes()
    assert keystore.export_private_key("imported", "wallet-pw") == KEY


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"version": 3, "address": "00"}', "missing or incomplete 'crypto' section"),
        ('{"version": 3, "crypto": {"kdf": "scrypt"}}', "missing or incomplete 'crypto'"),
        ('{"version": 4, "crypto": {}}', "not a version 3 keystore"),
    ],
)
def test_import_file_rejects_corrupt_files(
    keystore: Keystore, tmp_path: Path, content: str, reason: str
) -> None:
    source = tmp_path / "bad.json"
    source.write_text(content)
    with pytest.raises(KeystoreError, match=rf"corrupt keystore file {source}: ({reason})"):
        keystore.import_file("x", source)
    assert keystore.list() == []


def test_import_file_without_address(keystore: Keystore, tmp_path: Path) -> None:
    keyfile = Account.encrypt(KEY, "pw", kdf="scrypt", iterations=FAST_N)
    del keyfile["address"]
    source = tmp_path / "anon.json"
    source.write_text(json.dumps(keyfile))
    with pytest.raises(KeystoreError, match="missing or invalid 'address'"):
        keystore.import_file("x", source)


def test_corrupt_file_in_the_keystore_is_named(keystore: Keystore) -> None:
    info = keystore.create("alice", "pw")
    info.path.write_text("{truncated")
    with pytest.raises(KeystoreError, match=rf"corrupt keystore file {info.path}"):
        keystore.unlock("alice", "pw")


def test_unreadable_files_are_skipped_and_named_without_hiding_the_others(
    keystore: Keystore,
) -> None:
    """One bad file used to make every listing, and so every new account, fail."""
    alice = keystore.create("alice", "pw")
    directory = keystore.directory
    (directory / "broken.json").write_text("{truncated")
    (directory / "deep.json").write_text("[" * 30_000 + "]" * 30_000)  # within the size bound
    (directory / "huge.json").write_text(" " * (MAX_KEYSTORE_BYTES + 1))
    (directory / "folder.json").mkdir()
    (directory / "0xstray.json").write_text("{}")
    bob = keystore.create("bob", "pw")  # the address check reads every file
    assert keystore.list() == [alice, bob]
    assert keystore.get(bob.address) == bob
    assert keystore.unlock("alice", "pw").address == alice.address
    infos, skipped = keystore.scan()
    assert infos == [alice, bob]
    assert skipped == [
        SkippedFile(directory / "0xstray.json", "'0xstray' is not an account name: it could be "
                    "taken for an address"),
        SkippedFile(directory / "broken.json", f"corrupt keystore file {directory / 'broken.json'}"
                    ": not JSON (Expecting property name enclosed in double quotes at column 2)"),
        SkippedFile(directory / "deep.json", f"corrupt keystore file {directory / 'deep.json'}: "
                    "not readable JSON: it nests arrays and objects more than 64 deep"),
        SkippedFile(directory / "folder.json", f"cannot read keystore file "
                    f"{directory / 'folder.json'}: it is a directory, not a regular file"),
        SkippedFile(directory / "huge.json", f"keystore file {directory / 'huge.json'} is larger "
                    "than 65,536 bytes, the limit for a keystore file"),
    ]  # fmt: skip
    with pytest.raises(KeystoreError, match=r"it is a directory, not a regular file$"):
        keystore.get("folder")


def _with_kdf(kdf: str, **params: object) -> dict[str, object]:
    """A v3 key file of KEY whose key derivation parameters are changed to ``params``."""
    keyfile = Account.encrypt(KEY, "pw", kdf=kdf, iterations=FAST_N)
    keyfile["crypto"]["kdfparams"].update(params)
    return keyfile


REAL_WALLET_KDFS = {
    "geth standard": ("scrypt", {"n": 262144, "r": 8, "p": 1}),
    "geth light": ("scrypt", {"n": 4096, "r": 8, "p": 6}),
    "pyethereum": ("scrypt", {"n": 262144, "r": 1, "p": 8}),
    "keys.scrypt_n at its most": ("scrypt", {"n": 2**20, "r": 8, "p": 1}),
    "ethereumjs pbkdf2": ("pbkdf2", {"c": 262144}),
    "eth-account pbkdf2": ("pbkdf2", {"c": 1_000_000}),
}


@pytest.mark.parametrize(("kdf", "params"), REAL_WALLET_KDFS.values(), ids=REAL_WALLET_KDFS)
def test_import_accepts_what_wallets_write(
    keystore: Keystore, tmp_path: Path, kdf: str, params: dict[str, int]
) -> None:
    source = tmp_path / "wallet.json"
    source.write_text(json.dumps(_with_kdf(kdf, dklen=32, **params)))
    assert keystore.import_file("wallet", source).address == KEY_ADDRESS


HOSTILE_KDFS = {
    "scrypt n": (
        ("scrypt", {"n": 2**30}),
        "scrypt n*r*p is 8,589,934,592, above the limit of 8,388,608",
    ),
    "scrypt r": (
        ("scrypt", {"r": 2**20}),
        "scrypt n*r*p is 1,073,741,824, above the limit of 8,388,608",
    ),
    "scrypt p": (("scrypt", {"p": 2**30}), "scrypt n*r*p is 8,796,093,022,208, above the limit"),
    "pbkdf2 c": (("pbkdf2", {"c": 10**12}), "pbkdf2 c is 1,000,000,000,000, above the limit"),
    "dklen": (("scrypt", {"dklen": 2**40}), "scrypt dklen is 1,099,511,627,776, not 32 to 64"),
    "short dklen": (("pbkdf2", {"dklen": 16}), "pbkdf2 dklen is 16, not 32 to 64"),
}


@pytest.mark.parametrize(("change", "reason"), HOSTILE_KDFS.values(), ids=HOSTILE_KDFS)
def test_import_refuses_what_unlock_cannot_bound(
    keystore: Keystore, tmp_path: Path, change: tuple[str, dict[str, int]], reason: str
) -> None:
    kdf, params = change
    source = tmp_path / "hostile.json"
    source.write_text(json.dumps(_with_kdf(kdf, **params)))
    with pytest.raises(KeystoreError) as info:
        keystore.import_file("hostile", source)
    assert str(info.value).startswith(f"refusing keystore file {source}: {reason}")
    assert keystore.list() == []


def test_unlock_refuses_a_hostile_file_dropped_into_the_directory(keystore: Keystore) -> None:
    keystore.directory.mkdir(parents=True)
    path = keystore.directory / "dropped.json"
    keyfile = _with_kdf("scrypt", N=2**30)  # eth-account reads keys in any letter case
    path.write_text(json.dumps(keyfile))
    assert [info.name for info in keystore.list()] == ["dropped"]
    with pytest.raises(KeystoreError) as info:
        keystore.unlock("dropped", "pw")
    assert str(info.value) == (
        f"refusing keystore file {path}: scrypt n*r*p is 8,589,934,592, above the limit of "
        "8,388,608"
    )


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"n": "1024"}, "scrypt n is not a positive integer"),
        ({"r": True}, "scrypt r is not a positive integer"),
        ({"p": 0}, "scrypt p is not a positive integer"),
        ({"dklen": None}, "scrypt dklen is not a positive integer"),
    ],
)
def test_malformed_kdf_parameters_are_corrupt(
    keystore: Keystore, tmp_path: Path, params: dict[str, object], reason: str
) -> None:
    source = tmp_path / "odd.json"
    source.write_text(json.dumps(_with_kdf("scrypt", **params)))
    with pytest.raises(KeystoreError) as info:
        keystore.import_file("odd", source)
    assert str(info.value) == f"corrupt keystore file {source}: {reason}"


@pytest.mark.parametrize(
    ("crypto", "reason"),
    [
        ({"kdf": "argon2"}, "unknown kdf 'argon2'"),
        ({"kdf": ["scrypt"]}, "unknown kdf ['scrypt']"),
        ({"kdfparams": [1024]}, "'kdfparams' is not an object"),
    ],
)
def test_unknown_kdfs_are_corrupt(
    keystore: Keystore, tmp_path: Path, crypto: dict[str, object], reason: str
) -> None:
    keyfile = Account.encrypt(KEY, "pw", kdf="scrypt", iterations=FAST_N)
    keyfile["crypto"].update(crypto)
    source = tmp_path / "odd.json"
    source.write_text(json.dumps(keyfile))
    with pytest.raises(KeystoreError) as info:
        keystore.import_file("odd", source)
    assert str(info.value) == f"corrupt keystore file {source}: {reason}"


def test_pbkdf2_other_than_hmac_sha256_is_refused(keystore: Keystore, tmp_path: Path) -> None:
    """eth-account would fail an assertion on a prf that is not HMAC, a traceback for users."""
    source = tmp_path / "odd.json"
    source.write_text(json.dumps(_with_kdf("pbkdf2", prf="sha256")))
    with pytest.raises(KeystoreError) as info:
        keystore.import_file("odd", source)
    assert str(info.value) == f"corrupt keystore file {source}: pbkdf2 prf is not 'hmac-sha256'"


def test_pbkdf2_keys_unlock(keystore: Keystore, tmp_path: Path) -> None:
    source = tmp_path / "wallet.json"
    source.write_text(json.dumps(Account.encrypt(KEY, "pw", kdf="pbkdf2", iterations=1000)))
    keystore.import_file("wallet", source)
    assert keystore.unlock("wallet", "pw").address == KEY_ADDRESS


def test_tampered_address_is_detected(keystore: Keystore) -> None:
    info = keystore.import_key("alice", KEY, "pw")
    keyfile = json.loads(info.path.read_text())
    keyfile["address"] = ANVIL_0[2:]
    info.path.write_text(json.dumps(keyfile))
    with pytest.raises(KeystoreError, match=r"claims address .* but holds the key of"):
        keystore.unlock("alice", "pw")


def test_signer_refuses_dev_keys_off_local_chains(keystore: Keystore) -> None:
    keystore.import_key("dev", devkeys.ANVIL_KEYS[0], "pw")
    keystore.import_key("real", KEY, "pw")
    assert keystore.signer("dev", "pw", 31337).address == ANVIL_0
    assert keystore.signer("real", "pw", 1).address == KEY_ADDRESS
    with pytest.raises(KeystoreError, match="refusing the well-known development key"):
        # The refusal comes before decryption: even a wrong password gets this message.
        keystore.signer("dev", "wrong", 1)


def test_anvil_keys_derive_from_the_mnemonic() -> None:
    Account.enable_unaudited_hdwallet_features()
    paths = [f"m/44'/60'/0'/0/{i}" for i in range(10)]
    derived = [Account.from_mnemonic(devkeys.DEV_MNEMONIC, account_path=p).key for p in paths]
    assert tuple("0x" + bytes(key).hex() for key in derived) == devkeys.ANVIL_KEYS
    assert Account.from_key(devkeys.ANVIL_KEYS[0]).address == ANVIL_0


def test_eth_tester_accounts_are_dev_keys_on_a_local_chain() -> None:
    from eth_tester import EthereumTester, PyEVMBackend

    backend = PyEVMBackend()
    accounts = EthereumTester(backend).get_accounts()
    assert len(accounts) == 10
    assert all(devkeys.is_dev_key(address) for address in accounts)
    assert backend.chain.chain_id in devkeys.LOCAL_CHAIN_IDS


def test_is_dev_key_and_refusal_message() -> None:
    assert devkeys.is_dev_key(ANVIL_0.lower())
    assert not devkeys.is_dev_key(KEY_ADDRESS)
    devkeys.refuse_dev_key(ANVIL_0, 1337)
    devkeys.refuse_dev_key(KEY_ADDRESS, 1)
    with pytest.raises(KeystoreError) as info:
        devkeys.refuse_dev_key(ANVIL_0, 11155111)
    assert str(info.value) == (
        f"refusing the well-known development key {ANVIL_0} on chain id 11155111: "
        "it is public; use it only on a local chain (1337, 31337, 131277322940537)"
    )


def test_password_from_environment_first() -> None:
    def never(text: str, confirm: bool) -> str:
        raise AssertionError("prompted although the environment has a password")

    assert resolve_password({"CONSORTIUM_PASSWORD": "env"}, confirm=True, prompt=never) == "env"


def test_password_prompt_asks_twice_only_when_setting() -> None:
    calls: list[tuple[str, bool]] = []

    def prompt(text: str, confirm: bool) -> str:
        calls.append((text, confirm))
        return "typed"

    assert resolve_password({}, confirm=True, prompt=prompt) == "typed"
    assert resolve_password({"CONSORTIUM_PASSWORD": ""}, confirm=False, prompt=prompt) == "typed"
    assert calls == [("New password", True), ("Password", False)]


def test_no_password_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(KeystoreError, match=r"^no password: set CONSORTIUM_PASSWORD or run"):
        resolve_password({}, confirm=False)


def test_new_password_must_not_be_empty() -> None:
    with pytest.raises(KeystoreError, match="must not be empty"):
        resolve_password({}, confirm=True, prompt=lambda text, confirm: "")
