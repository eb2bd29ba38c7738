"""RFC 6962 / RFC 9162 (section 2.1) Merkle tree hashes and inclusion proofs over SHA-256.

Each anchored round commits to the root of this tree over its signed update records; every
participant then checks, against the root it reads from the chain itself, that its own record is
in the tree. Certificate Transparency uses the same tree, so any of its implementations can
check our roots and proofs. (OpenZeppelin's MerkleProof is a different, sorted-pair keccak
scheme and cannot.)

Leaf and interior hashes carry distinct prefixes (0x00 and 0x01), so no interior node can be
passed off as a leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from consortium.errors import ConsortiumError

HASH_SIZE = 32


class InclusionProofError(ConsortiumError):
    """An inclusion proof does not show that the leaf is in the tree with the given root."""


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """A tree whose leaves are hashed once and which then serves its root and every proof.

    Keeps every level of the tree, bottom up. Pairing nodes left to right and carrying a level's
    odd last node up unchanged gives exactly RFC 9162's split at the largest power of two below
    ``n``. Building costs ``n - 1`` node hashes and each proof is a ``log n`` lookup, so a
    coordinator serves all proofs of a round in ``O(n log n)``.
    """

    def __init__(self, leaves: Iterable[bytes]) -> None:
        level = [leaf_hash(leaf) for leaf in leaves]
        self._levels = [level]
        while len(level) > 1:
            paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            level = paired + level[len(paired) * 2 :]
            self._levels.append(level)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """The tree head; for an empty tree ``SHA-256("")`` as RFC 9162 defines it."""
        if not self.size:
            return hashlib.sha256(b"").digest()
        return self._levels[-1][0]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 section 2.1.3.1 audit path of leaf ``index``, from the leaf upwards."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} is out of range for a tree of size {self.size}")
        proof: list[bytes] = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index >>= 1
        return proof


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 9162 Merkle tree hash of ``leaves``."""
    return MerkleTree(leaves).root


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of ``leaves[index]``; build a :class:`MerkleTree` to serve many proofs."""
    return MerkleTree(leaves).inclusion_proof(index)


def _proof_length(index: int, tree_size: int) -> int:
    """The number of hashes in the audit path of leaf ``index`` in a tree of ``tree_size``.

    Below the level where the paths of leaf ``index`` and of the last leaf meet, every level
    contributes one sibling; from there up, the path runs along the tree's right border and has
    a (left) sibling exactly at the one bits of what remains of the index.
    """
    inner = (index ^ (tree_size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Checks that ``leaf`` is leaf ``index`` of the tree of ``tree_size`` leaves with ``root``.

    Implements RFC 9162 section 2.1.3.2. The proof length is checked up front, which takes the
    place of the algorithm's two ``sn == 0`` tests and lets the error say which length was due.

    Raises:
        InclusionProofError: with a one-line reason, if the proof does not establish inclusion.
    """
    if not 0 <= index < tree_size:
        raise InclusionProofError(
            f"leaf index {index} is out of range for a tree of size {tree_size}"
        )
    expected = _proof_length(index, tree_size)
    if len(proof) != expected:
        raise InclusionProofError(
            f"inclusion proof has {len(proof)} hashes, leaf {index} of a tree of size "
            f"{tree_size} needs {expected}"
        )
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise InclusionProofError(
                f"inclusion proof hash {position} is {len(element)} bytes, not {HASH_SIZE}"
            )
    if len(root) != HASH_SIZE:
        raise InclusionProofError(f"root is {len(root)} bytes, not {HASH_SIZE}")

    fn, sn = index, tree_size - 1
    computed = leaf_hash(leaf)
    for element in proof:
        if fn & 1 or fn == sn:
            computed = node_hash(element, computed)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            computed = node_hash(computed, element)
        fn >>= 1
        sn >>= 1
    if computed != root:
        raise InclusionProofError(
            f"inclusion proof of leaf {index} leads to root {computed.hex()}, not {root.hex()}"
        )
