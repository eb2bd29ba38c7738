"""Consent trees of data subjects: salted leaves, roots, disclosures and their checks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.crypto.merkle import merkle_root
from consortium.crypto.subjects import (
    DOMAIN,
    SubjectDisclosure,
    SubjectError,
    SubjectTree,
    subject_leaf,
    subject_salt,
    verify_disclosure,
)

SECRET = bytes(range(32))
IDS = [f"SME-{n:06}" for n in range(25)]


def test_the_root_is_rfc6962_over_the_sorted_salted_leaves() -> None:
    leaves = sorted(
        hashlib.sha256(DOMAIN + subject_salt(SECRET, i) + i.encode()).digest() for i in IDS
    )
    assert SubjectTree(IDS, SECRET).root == merkle_root(leaves)
    assert SubjectTree(reversed(IDS), SECRET).root == merkle_root(leaves)  # order-free


def test_the_root_depends_on_the_secret_and_on_who_consented() -> None:
    tree = SubjectTree(IDS, SECRET)
    assert SubjectTree(IDS, bytes(32)).root != tree.root
    withdrawn = SubjectTree(IDS[1:], SECRET)
    assert withdrawn.root != tree.root and IDS[0] not in withdrawn and IDS[1] in withdrawn


def test_a_guessed_id_cannot_be_tested_without_the_secret() -> None:
    """The unsalted hash of an id is in no tree: only the owner's salt makes the leaf."""
    tree = SubjectTree(IDS, SECRET)
    disclosure = tree.disclose(IDS[3])
    unsalted = hashlib.sha256(DOMAIN + IDS[3].encode()).digest()
    assert unsalted != subject_leaf(IDS[3], disclosure.salt)
    with pytest.raises(SubjectError, match="not under that root"):
        verify_disclosure(
            SubjectDisclosure(IDS[3], bytes(32), disclosure.index, tree.size, disclosure.proof),
            tree.root,
        )


@settings(max_examples=10, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=40))
def test_every_subject_verifies_through_its_json_form(ids: set[str]) -> None:
    tree = SubjectTree(ids, SECRET)
    for subject_id in ids:
        disclosure = SubjectDisclosure.from_json(tree.disclose(subject_id).to_json())
        verify_disclosure(disclosure, tree.root)


def test_a_disclosure_under_another_root_fails() -> None:
    tree, other = SubjectTree(IDS, SECRET), SubjectTree(IDS[:-1], SECRET)
    with pytest.raises(SubjectError, match=r"^subject 'SME-000000' is not under that root"):
        verify_disclosure(tree.disclose(IDS[0]), other.root)


def test_a_subject_listed_twice_is_refused() -> None:
    with pytest.raises(SubjectError, match="appears twice"):
        SubjectTree([*IDS, IDS[0]], SECRET)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(SubjectError, match="at least 32 bytes"):
        SubjectTree(IDS, b"short")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("salt"), "holds exactly"),
        (lambda d: d.update(extra=1), "holds exactly"),
        (lambda d: d.update(id=""), "non-empty string"),
        (lambda d: d.update(id=7), "non-empty string"),
        (lambda d: d.update(id="x" * 300), "at most 256 bytes"),
        (lambda d: d.update(index="1"), "are integers"),
        (lambda d: d.update(treeSize=True), "are integers"),
        (lambda d: d.update(salt="zz" * 32), "salt is 32 bytes in hex"),
        (lambda d: d.update(salt="00"), "salt is 32 bytes in hex"),
        (lambda d: d.update(proof="00"), "list of at most 64"),
        (lambda d: d.update(proof=["00" * 32] * 65), "list of at most 64"),
        (lambda d: d.update(proof=["00"]), "proof hash is 32 bytes"),
    ],
)
def test_a_hostile_disclosure_is_one_line(change, message) -> None:  # type: ignore[no-untyped-def]
    disclosure = SubjectTree(IDS, SECRET).disclose(IDS[5]).to_json()
    change(disclosure)
    with pytest.raises(SubjectError, match=message) as caught:
        SubjectDisclosure.from_json(disclosure)
    assert "\n" not in str(caught.value)


def test_a_proof_for_the_wrong_index_fails() -> None:
    tree = SubjectTree(IDS, SECRET)
    disclosure = tree.disclose(IDS[2]).to_json()
    disclosure["index"] = (disclosure["index"] + 1) % len(IDS)
    with pytest.raises(SubjectError, match="not under that root"):
        verify_disclosure(SubjectDisclosure.from_json(disclosure), tree.root)
