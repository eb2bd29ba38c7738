"""Which data subjects consented: a dataset's subjects root, and one subject's proof of being
under it.

A dataset's subjects root (stored, versioned, by the ConsentRegistry) is the RFC 6962 root over
the sorted leaves ``SHA-256(DOMAIN || salt || id)`` of the subjects (businesses) that consented.
Each subject has its own salt, derived from the data owner's secret, so that the owner can
rebuild every leaf while nobody else can test a guessed id (``SME-000123``) against the root;
the root alone reveals the number of consenting subjects and nothing else. A subject who
withdraws is left out of the next version of the root, and a job names the version it used.

A :class:`SubjectDisclosure` is what an owner hands an auditor for one subject: the id, its salt
and the inclusion proof; :func:`verify_disclosure` checks it against a root read from the chain.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consortium.crypto.merkle import InclusionProofError, MerkleTree, verify_inclusion
from consortium.errors import ConsortiumError

DOMAIN = b"consortium.subject/1"
SALT_DOMAIN = b"consortium.subject-salt/1"
SALT_BYTES = 32
SECRET_BYTES = 32
MAX_ID_BYTES = 256
MAX_PROOF_HASHES = 64  # a tree of 2**64 leaves


class SubjectError(ConsortiumError):
    """A subject id, a disclosure or a consent tree is not what it must be."""


def _id_bytes(subject_id: str) -> bytes:
    if not isinstance(subject_id, str) or not subject_id:
        raise SubjectError("a subject id must be a non-empty string")
    encoded = subject_id.encode("utf-8")
    if len(encoded) > MAX_ID_BYTES:
        raise SubjectError(f"a subject id is at most {MAX_ID_BYTES} bytes of UTF-8")
    return encoded


def subject_salt(secret: bytes, subject_id: str) -> bytes:
    """The subject's salt: HMAC-SHA256 of its id under the owner's secret, so that the owner
    keeps one secret rather than a salt per subject."""
    if len(secret) < SECRET_BYTES:
        raise SubjectError(f"the owner's subject secret must be at least {SECRET_BYTES} bytes")
    return hmac.new(secret, SALT_DOMAIN + _id_bytes(subject_id), hashlib.sha256).digest()


def subject_leaf(subject_id: str, salt: bytes) -> bytes:
    """``SHA-256(DOMAIN || salt || id)``: the salt has a fixed length, so no two (salt, id) pairs
    share a preimage."""
    if len(salt) != SALT_BYTES:
        raise SubjectError(f"a subject salt is {SALT_BYTES} bytes, not {len(salt)}")
    return hashlib.sha256(DOMAIN + salt + _id_bytes(subject_id)).digest()


@dataclass(frozen=True)
class SubjectDisclosure:
    """One subject's id, salt and inclusion proof under a subjects root of ``tree_size``."""

    subject_id: str
    salt: bytes
    index: int
    tree_size: int
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.subject_id,
            "salt": self.salt.hex(),
            "index": self.index,
            "treeSize": self.tree_size,
            "proof": [element.hex() for element in self.proof],
        }

    @classmethod
    def from_json(cls, value: object) -> SubjectDisclosure:
        """A disclosure as another party handed it over: every field checked."""
        if not isinstance(value, Mapping) or sorted(value) != sorted(
            ("id", "salt", "index", "treeSize", "proof")
        ):
            raise SubjectError(
                "a subject disclosure holds exactly id, salt, index, treeSize and proof"
            )
        subject_id, index, size, proof = (value[k] for k in ("id", "index", "treeSize", "proof"))
        _id_bytes(subject_id)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (index, size)):
            raise SubjectError("a subject disclosure's index and treeSize are integers")
        if not isinstance(proof, list) or len(proof) > MAX_PROOF_HASHES:
            raise SubjectError(
                f"a subject disclosure's proof is a list of at most {MAX_PROOF_HASHES} hashes"
            )
        return cls(
            subject_id,
            _hex(value["salt"], SALT_BYTES, "salt"),
            index,
            size,
            tuple(_hex(element, 32, "proof hash") for element in proof),
        )


def _hex(value: object, length: int, what: str) -> bytes:
    try:
        decoded = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        decoded = None
    if decoded is None or len(decoded) != length:
        raise SubjectError(f"a subject disclosure's {what} is {length} bytes in hex")
    return decoded


class SubjectTree:
    """The consent tree of one dataset version: its root, and a disclosure for each subject."""

    def __init__(self, subject_ids: Iterable[str], secret: bytes) -> None:
        salted = {}
        for subject_id in subject_ids:
            if subject_id in salted:
                raise SubjectError("a subject appears twice in a consent tree")
            salted[subject_id] = subject_salt(secret, subject_id)
        leaves = sorted((subject_leaf(s, salt), s) for s, salt in salted.items())
        self._salts = salted
        self._index = {subject_id: index for index, (_, subject_id) in enumerate(leaves)}
        self._tree = MerkleTree(leaf for leaf, _ in leaves)

    @property
    def root(self) -> bytes:
        return self._tree.root

    @property
    def size(self) -> int:
        return self._tree.size

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._index

    def disclose(self, subject_id: str) -> SubjectDisclosure:
        if subject_id not in self._index:
            raise SubjectError("that subject is not in this consent tree")
        index = self._index[subject_id]
        return SubjectDisclosure(
            subject_id, self._salts[subject_id], index, self.size,
            tuple(self._tree.inclusion_proof(index)),
        )  # fmt: skip


def verify_disclosure(disclosure: SubjectDisclosure, root: bytes) -> None:
    """Raises SubjectError unless the disclosed subject is a leaf of the tree with ``root``."""
    leaf = subject_leaf(disclosure.subject_id, disclosure.salt)
    try:
        verify_inclusion(leaf, disclosure.index, disclosure.tree_size, disclosure.proof, root)
    except InclusionProofError as exc:
        raise SubjectError(
            f"subject {disclosure.subject_id!r} is not under that root: {exc}"
        ) from None
