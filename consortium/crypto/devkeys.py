"""The publicly known development keys, and the rule that keeps them off real chains.

anvil, hardhat and eth-tester fund the same few keys on every fresh chain, and those keys are
printed in their documentation: whoever holds a copy of them (everyone) can spend from them. A
user may import them to work against a local chain, so the keystore accepts them; the refusal
happens when a key is about to sign for a chain that is not local.
"""

from __future__ import annotations

from functools import cache

from eth_account import Account

from consortium.errors import KeystoreError

# anvil's and hardhat's default accounts: m/44'/60'/0'/0/i, i = 0..9, of this mnemonic.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)

# eth-tester's PyEVMBackend funds the private keys 1, 2, ..., 10 (get_default_account_keys).
ETH_TESTER_KEYS: tuple[str, ...] = tuple(f"0x{i:064x}" for i in range(1, 11))

DEV_KEYS: tuple[str, ...] = ANVIL_KEYS + ETH_TESTER_KEYS

# anvil/hardhat (31337), ganache and geth --dev (1337), eth-tester (131277322940537).
LOCAL_CHAIN_IDS = frozenset({31337, 1337, 131277322940537})


@cache
def dev_addresses() -> frozenset[str]:
    """Lower-case addresses of :data:`DEV_KEYS`, derived once on first use."""
    return frozenset(Account.from_key(key).address.lower() for key in DEV_KEYS)


def is_dev_key(address: str) -> bool:
    """True when ``address`` belongs to one of the publicly known development keys."""
    return address.lower() in dev_addresses()


def refuse_dev_key(address: str, chain_id: int) -> None:
    """Raise :class:`KeystoreError` when a development key would sign for a non-local chain."""
    if chain_id not in LOCAL_CHAIN_IDS and is_dev_key(address):
        local = ", ".join(str(i) for i in sorted(LOCAL_CHAIN_IDS))
        raise KeystoreError(
            f"refusing the well-known development key {address} on chain id {chain_id}: "
            f"it is public; use it only on a local chain ({local})"
        )
