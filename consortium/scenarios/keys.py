"""Simulation keys: each party's private key derived from the simulation's seed and its name.

A simulation that draws every random choice from its seed can be run again: two runs with one
``--seed`` end with the same head model, so "a resumed run ends with the same model" can be
checked against a fresh run instead of against a copy of its keys. The parties' keys are such a
choice (the aggregation order follows the parties' addresses), so they come from the seed too.

**These keys are predictable and protect nothing.** Anyone who knows (or guesses: the default
is 7) a simulation's seed recomputes every one of its keys, and so can spend what they hold and
sign as them. They exist for simulations on local development chains only:
:func:`require_local_chain` refuses any other chain before a key is derived or loaded, and
funding a party (:meth:`Chain.fund`) works only on a development chain. Never fund their
addresses on another chain, nor import a simulation's ``key.json`` into a wallet for real use.

Derivation, reproducible in any language: attempt ``i = 0, 1, ...`` takes the SHA-256 of the
RFC 8785 JSON ``{"attempt": i, "domain": "consortium simulation key", "party": <name>,
"seed": "<seed in decimal>"}`` as a big-endian integer, and the first one that is a valid
secp256k1 private key (``1 <= k < n``) and none of the well-known development keys
(:data:`consortium.crypto.devkeys.DEV_KEYS`) is the party's key. A second attempt is needed with
probability below 2**-127.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount

from consortium.chain.base import Chain
from consortium.crypto.canonical import json_digest
from consortium.crypto.devkeys import LOCAL_CHAIN_IDS, is_dev_key
from consortium.errors import UsageError

SIMULATION_KEY_DOMAIN = "consortium simulation key"
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def simulation_key(seed: int, name: str) -> LocalAccount:
    """The key of party ``name`` in the simulation seeded with ``seed``: predictable by
    anyone who knows both, so for simulations on local development chains only."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    attempt = 0
    while True:
        digest = json_digest(
            {"domain": SIMULATION_KEY_DOMAIN, "seed": str(seed), "party": name, "attempt": attempt}
        )
        candidate = int.from_bytes(digest, "big")
        if 1 <= candidate < SECP256K1_ORDER:
            account: LocalAccount = Account.from_key(candidate.to_bytes(32, "big"))
            if not is_dev_key(account.address):
                return account
        attempt += 1


def require_local_chain(chain: Chain, what: str) -> None:
    """Refuses, as a usage error, a simulation (``what``) on a chain that is not a local
    development chain: its parties' keys derive from its seed, so anyone could sign as them."""
    if not chain.is_local_dev:
        local = ", ".join(str(i) for i in sorted(LOCAL_CHAIN_IDS))
        raise UsageError(
            f"{what} runs only on a local development chain ({local}), not on chain id "
            f"{chain.chain_id}: its parties' keys derive from the seed, and anyone who knows "
            "the seed can sign as them"
        )
