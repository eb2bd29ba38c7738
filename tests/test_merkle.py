"""Tests of the RFC 6962 / RFC 9162 Merkle tree: published vectors, a reference implementation
written straight from the RFC's recursive definitions, and tampering of every input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.crypto import merkle
from consortium.crypto.merkle import (
    InclusionProofError,
    MerkleTree,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)
from consortium.errors import ConsortiumError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc6962.json").read_text())
VECTOR_LEAVES = [bytes.fromhex(leaf) for leaf in VECTORS["leaves_hex"]]

FAST = settings(max_examples=40, deadline=None)

LEAVES = st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=70)
# Distinct leaves, as a round's records are (one per participant): with two equal leaves, a proof
# for one of them rightly proves the other too.
DISTINCT_LEAVES = st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=70, unique=True)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 section 2.1.1, recursively."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return sha256(b"\x00" + leaves[0])
    k = split(len(leaves))
    return sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:]))


def reference_path(m: int, leaves: list[bytes]) -> list[tuple[str, bytes]]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1, each hash with the side it is hashed on."""
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return [*reference_path(m, leaves[:k]), ("right", reference_root(leaves[k:]))]
    return [*reference_path(m - k, leaves[k:]), ("left", reference_root(leaves[:k]))]


def path_shape(index: int, size: int) -> list[str]:
    """The sides of the audit path of leaf ``index`` in a tree of ``size`` leaves."""
    return [side for side, _ in reference_path(index, [b""] * size)]


def flip(data: bytes, position: int, mask: int) -> bytes:
    changed = bytearray(data)
    changed[position % len(changed)] ^= mask
    return bytes(changed)


@pytest.mark.parametrize("entry", VECTORS["roots"], ids=lambda entry: f"size{entry['size']}")
def test_published_roots(entry: dict[str, object]) -> None:
    leaves = VECTOR_LEAVES[: entry["size"]]  # type: ignore[misc]
    assert merkle_root(leaves).hex() == entry["root_hex"]
    assert MerkleTree(leaves).root.hex() == entry["root_hex"]
    assert reference_root(leaves).hex() == entry["root_hex"]


def test_published_vectors_cover_sizes_zero_to_eight() -> None:
    assert [entry["size"] for entry in VECTORS["roots"]] == list(range(9))


def test_every_proof_of_the_published_tree_verifies() -> None:
    tree = MerkleTree(VECTOR_LEAVES)
    for index, leaf in enumerate(VECTOR_LEAVES):
        proof = tree.inclusion_proof(index)
        assert proof == [element for _, element in reference_path(index, VECTOR_LEAVES)]
        verify_inclusion(leaf, index, len(VECTOR_LEAVES), proof, tree.root)


def test_hash_prefixes() -> None:
    assert leaf_hash(b"abc") == sha256(b"\x00abc")
    assert node_hash(b"l" * 32, b"r" * 32) == sha256(b"\x01" + b"l" * 32 + b"r" * 32)
    assert MerkleTree([]).size == 0
    assert MerkleTree([b"x"]).root == leaf_hash(b"x")


@FAST
@given(LEAVES)
def test_every_proof_of_every_leaf_matches_the_rfc_and_verifies(leaves: list[bytes]) -> None:
    tree = MerkleTree(leaves)
    assert tree.size == len(leaves)
    assert tree.root == reference_root(leaves) == merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        proof = tree.inclusion_proof(index)
        assert proof == [element for _, element in reference_path(index, leaves)]
        verify_inclusion(leaf, index, len(leaves), proof, tree.root)
    assert inclusion_proof(leaves, len(leaves) - 1) == tree.inclusion_proof(len(leaves) - 1)


@FAST
@given(LEAVES, st.data())
def test_any_altered_byte_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    leaf, proof, root = leaves[index], tree.inclusion_proof(index), tree.root
    position = data.draw(st.integers(0, 10_000))
    mask = data.draw(st.integers(1, 255))
    with pytest.raises(InclusionProofError, match="leads to root"):
        verify_inclusion(flip(leaf, position, mask), index, len(leaves), proof, root)
    with pytest.raises(InclusionProofError, match="leads to root"):
        verify_inclusion(leaf, index, len(leaves), proof, flip(root, position, mask))
    if proof:
        element = data.draw(st.integers(0, len(proof) - 1))
        altered = [*proof[:element], flip(proof[element], position, mask), *proof[element + 1 :]]
        with pytest.raises(InclusionProofError, match="leads to root"):
            verify_inclusion(leaf, index, len(leaves), altered, root)


@FAST
@given(DISTINCT_LEAVES, st.data())
def test_a_proof_checked_at_another_index_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.inclusion_proof(index)
    for other in range(len(leaves) + 2):
        if other != index:
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaves[index], other, len(leaves), proof, tree.root)


@FAST
@given(LEAVES, st.data())
def test_a_proof_checked_at_another_tree_size_fails_unless_the_path_has_the_same_shape(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """An inclusion proof is a path; the tree size only fixes its shape. The verifier must take
    the size from the same trusted place as the root (the chain's participant count)."""
    tree = MerkleTree(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.inclusion_proof(index)
    shape = path_shape(index, len(leaves))
    for size in range(len(leaves) + 9):
        if size == len(leaves):
            continue
        if index < size and path_shape(index, size) == shape:
            verify_inclusion(leaves[index], index, size, proof, tree.root)
        else:
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaves[index], index, size, proof, tree.root)


def test_same_shape_example_from_rfc_structure() -> None:
    """Leaf 0 of 3 and leaf 0 of 4 both have two right siblings, so one proof fits both sizes."""
    leaves = VECTOR_LEAVES[:3]
    tree = MerkleTree(leaves)
    verify_inclusion(leaves[0], 0, 4, tree.inclusion_proof(0), tree.root)


def test_error_messages() -> None:
    tree = MerkleTree(VECTOR_LEAVES)  # 8 leaves, every path has 3 hashes
    proof, root = tree.inclusion_proof(5), tree.root
    leaf = VECTOR_LEAVES[5]
    cases = [
        ((leaf, 8, 8, proof, root), r"^leaf index 8 is out of range for a tree of size 8$"),
        ((leaf, -1, 8, proof, root), r"^leaf index -1 is out of range for a tree of size 8$"),
        ((leaf, 0, 0, [], root), r"^leaf index 0 is out of range for a tree of size 0$"),
        (
            (leaf, 5, 8, proof[:2], root),
            r"^inclusion proof has 2 hashes, leaf 5 of a tree of size 8 needs 3$",
        ),
        (
            (leaf, 5, 8, [*proof, root], root),
            r"^inclusion proof has 4 hashes, leaf 5 of a tree of size 8 needs 3$",
        ),
        (
            (leaf, 5, 8, [proof[0], proof[1][:31], proof[2]], root),
            r"^inclusion proof hash 1 is 31 bytes, not 32$",
        ),
        ((leaf, 5, 8, proof, root + b"\x00"), r"^root is 33 bytes, not 32$"),
        (
            (VECTOR_LEAVES[4], 5, 8, proof, root),
            rf"^inclusion proof of leaf 5 leads to root [0-9a-f]{{64}}, not {root.hex()}$",
        ),
    ]
    for args, message in cases:
        with pytest.raises(InclusionProofError, match=message):
            verify_inclusion(*args)
    assert issubclass(InclusionProofError, ConsortiumError)


def test_building_a_proof_for_a_missing_leaf_is_a_programming_error() -> None:
    with pytest.raises(IndexError, match=r"^leaf index 3 is out of range for a tree of size 3$"):
        MerkleTree(VECTOR_LEAVES[:3]).inclusion_proof(3)
    with pytest.raises(IndexError, match=r"^leaf index 0 is out of range for a tree of size 0$"):
        inclusion_proof([], 0)
    with pytest.raises(IndexError, match=r"^leaf index -1 is out of range"):
        MerkleTree(VECTOR_LEAVES).inclusion_proof(-1)


def test_tree_hashes_each_node_once_and_proofs_hash_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"leaf": 0, "node": 0}

    def counting(kind: str, function: Callable[..., bytes]) -> Callable[..., bytes]:
        def wrapper(*args: bytes) -> bytes:
            calls[kind] += 1
            return function(*args)

        return wrapper

    monkeypatch.setattr(merkle, "leaf_hash", counting("leaf", merkle.leaf_hash))
    monkeypatch.setattr(merkle, "node_hash", counting("node", merkle.node_hash))
    leaves = [i.to_bytes(2) for i in range(300)]
    tree = MerkleTree(leaves)
    assert calls == {"leaf": 300, "node": 299}
    proofs = [tree.inclusion_proof(index) for index in range(300)]
    assert calls == {"leaf": 300, "node": 299}
    assert max(len(proof) for proof in proofs) == 9
