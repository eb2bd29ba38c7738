"""The private material a simulated party keeps in its own directory besides its key: a data
owner's subject secret and PSI key, and the arbiter's Paillier key pair, each in a file only its
owner reads.

A **subject secret** salts the leaves of the owner's consent tree
(:func:`~consortium.crypto.subjects.subject_salt`); whoever holds it can test a guessed id
against the dataset's subjects root, so it is kept like a key. In a simulation it derives from
the seed and the party's name, reproducibly in any language: the SHA-256 of the RFC 8785 JSON
``{"domain": "consortium simulation subject secret", "party": <name>, "seed": "<seed in
decimal>"}``. Like the simulation's keys (:mod:`consortium.scenarios.keys`), it is predictable
by anyone who knows the seed.

A **PSI key** is the data party's X25519 scalar for the job's private set intersection
(:mod:`consortium.fl.vertical.psi`): ephemeral, used for that one job and nothing else, and kept
so that the party can hand it to an auditor with its disclosure
(:mod:`consortium.scenarios.sme_disclosure`), who then recomputes the intersection's tokens. Two
jobs on the same datasets share a PSI context, so each job's keys must be its own: a
simulation's derive like the subject secrets, with the domain ``"consortium simulation psi
key"`` and the job's id as ``"job": "<id in decimal>"``, and are as predictable. A run's
directory holds one job, and its party's key for it.

The **arbiter key** is kept as its primes and its DJN base, so that a resumed job decrypts with
the key its model spec names (:func:`arbiter_key_digest`) instead of a fresh one.
"""

from __future__ import annotations

import hashlib
import json
import re

import gmpy2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from phe import PaillierPrivateKey, PaillierPublicKey

from consortium.crypto.canonical import json_digest
from consortium.crypto.digests import from_hex32
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.fl.vertical.paillier import KeyPair, generate_keypair
from consortium.jsonio import read_json_file, read_regular_file
from consortium.scenarios.parties import PRIVATE_FILE, Party

SUBJECT_SECRET_FILE = "subject-secret"
SUBJECT_SECRET_DOMAIN = "consortium simulation subject secret"
PSI_KEY_FILE = "psi-key"
PSI_KEY_DOMAIN = "consortium simulation psi key"
ARBITER_KEY_FILE = "arbiter-key.json"
MAX_KEY_FILE_BYTES = 64 * 1024  # three numbers of a few thousand digits at most
_DECIMAL = re.compile(r"[1-9][0-9]{0,4999}")


def simulation_subject_secret(seed: int, name: str) -> bytes:
    """The subject secret of party ``name`` in the simulation seeded with ``seed``."""
    return _simulation_secret(SUBJECT_SECRET_DOMAIN, seed, name)


def subject_secret(party: Party, *, seed: int) -> bytes:
    """The party's subject secret: the one in its directory (kept by an interrupted set-up, or
    put there to use another), or else its simulation secret, written there first."""
    return _kept_secret(party, SUBJECT_SECRET_FILE, "subject secret", SUBJECT_SECRET_DOMAIN, seed)


def read_subject_secret(party: Party) -> bytes:
    """The subject secret in the party's directory (64 lowercase hex digits)."""
    return _read_secret(party, SUBJECT_SECRET_FILE, "subject secret")


def psi_key(party: Party, *, seed: int, job: int) -> X25519PrivateKey:
    """The party's PSI key for the run's job ``job``: the one in its directory (kept by an
    interrupted set-up), or else its simulation key for that job, written there first."""
    return X25519PrivateKey.from_private_bytes(
        _kept_secret(party, PSI_KEY_FILE, "PSI key", PSI_KEY_DOMAIN, seed, job=str(job))
    )


def read_psi_key(party: Party) -> X25519PrivateKey:
    """The PSI key in the party's directory (its raw 32 bytes as 64 lowercase hex digits)."""
    return X25519PrivateKey.from_private_bytes(_read_secret(party, PSI_KEY_FILE, "PSI key"))


def _simulation_secret(domain: str, seed: int, name: str, **more: str) -> bytes:
    """SHA-256 of the RFC 8785 JSON ``{"domain", "party", "seed"}`` and ``more`` fields:
    reproducible anywhere."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return json_digest({"domain": domain, "party": name, "seed": str(seed), **more})


def _kept_secret(party: Party, file: str, what: str, domain: str, seed: int, **more: str) -> bytes:
    """The 32-byte secret in the party's ``file``, or else its simulation secret of
    ``domain`` (and ``more``), written there (readable by its owner only) first."""
    if (party.directory / file).exists():
        return _read_secret(party, file, what)
    secret = _simulation_secret(domain, seed, party.name, **more)
    write_text_atomically(party.directory / file, secret.hex() + "\n", mode=PRIVATE_FILE)
    return secret


def _read_secret(party: Party, file: str, what: str) -> bytes:
    path = party.directory / file
    text = read_regular_file(path, what=f"{what} file", max_bytes=256)
    return from_hex32(text.decode("ascii", errors="replace").strip(), what=f"{what} {path}")


def arbiter_key(party: Party, *, bits: int) -> KeyPair:
    """The arbiter's key pair of ``bits``: the one in its directory (kept by an interrupted
    set-up), or else a new one (:func:`~consortium.fl.vertical.paillier.generate_keypair`),
    written there first."""
    if (party.directory / ARBITER_KEY_FILE).exists():
        return load_arbiter_key(party, bits=bits)
    keys = generate_keypair(bits)
    text = json.dumps(
        {"p": str(keys.private_key.p), "q": str(keys.private_key.q), "hs": str(keys.hs)}
    )
    write_text_atomically(party.directory / ARBITER_KEY_FILE, text, mode=PRIVATE_FILE)
    return keys


def load_arbiter_key(party: Party, *, bits: int) -> KeyPair:
    """The key pair in the arbiter's key file, checked to be a ``bits``-bit Paillier key:
    two distinct primes whose product has ``bits`` bits, and a DJN base that is a unit."""
    path = party.directory / ARBITER_KEY_FILE
    data = read_json_file(path, what="arbiter key file", max_bytes=MAX_KEY_FILE_BYTES)
    if not isinstance(data, dict) or sorted(data) != ["hs", "p", "q"]:
        raise UsageError(f"arbiter key file {path} must hold exactly p, q and hs")
    if not all(isinstance(v, str) and _DECIMAL.fullmatch(v) for v in data.values()):
        raise UsageError(f"arbiter key file {path}: p, q and hs must be decimal strings")
    p, q, hs = (int(data[name]) for name in ("p", "q", "hs"))
    n = p * q
    if p == q or n.bit_length() != bits or not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
        raise UsageError(
            f"arbiter key file {path}: p and q are not distinct primes of a {bits}-bit n"
        )
    if not (1 < hs < n * n - 1 and gmpy2.gcd(hs, n) == 1):
        raise UsageError(f"arbiter key file {path}: hs is not a unit modulo n^2 other than +-1")
    public_key = PaillierPublicKey(n)
    return KeyPair(public_key, PaillierPrivateKey(public_key, p, q), hs)


def arbiter_key_digest(public_key: PaillierPublicKey) -> bytes:
    """What a model spec names the arbiter's key by: SHA-256 of ``n``'s big-endian bytes."""
    n: int = public_key.n
    return hashlib.sha256(n.to_bytes(-(-n.bit_length() // 8), "big")).digest()
