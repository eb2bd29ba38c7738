"""The three contracts through the typed Python ledger API, on both backends.

Every test runs on the embedded eth-tester chain and on anvil (the ``chain`` fixture) and
asserts the decoded custom error, by name and arguments, of every revert: the same on both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import astuple
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account
from eth_utils import event_abi_to_log_topic, to_checksum_address
from ledger_fixtures import (
    AUDITOR,
    CONSUMER,
    COORDINATOR,
    DAY,
    LIFETIME,
    PROVIDER,
    PURPOSE,
    Consortium,
    deploy_consortium,
    digest,
    new_account,
    reverts,
)
from signatures import non_canonical_forms
from web3.types import TxReceipt

from consortium.chain.artifacts import load_artifact
from consortium.chain.base import Chain
from consortium.chain.transact import Transactor
from consortium.crypto.devkeys import ANVIL_KEYS, ETH_TESTER_KEYS, refuse_dev_key
from consortium.crypto.eip712 import CONSENT_GRANT_TYPES, Domain, sign_typed
from consortium.errors import KeystoreError, UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.consents import SignedGrant
from consortium.ledger.deployment import Deployment, deploy
from consortium.ledger.errors import revert_decoder
from consortium.ledger.jobs import RoundAnchor, participant_mask
from consortium.ledger.members import ProposalKind
from consortium.ledger.values import ZERO32, encode_purpose

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
PURPOSE32 = encode_purpose(PURPOSE)


# ---------------------------------------------------------------------------------- helpers


def events(contract: Any, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    """The arguments of every ``name`` event that ``contract`` emitted in ``receipt``."""
    return [dict(e["args"]) for e in Ledger.events(contract, name, receipt)]


def event_names(ledger: Ledger, receipt: TxReceipt) -> list[str]:
    """Names of the project's events in ``receipt``, in log order."""
    topics = {
        event_abi_to_log_topic(entry): entry["name"]
        for contract in (ledger.registry, ledger.consent_registry, ledger.training)
        for entry in contract.abi
        if entry["type"] == "event"
    }
    return [topics[bytes(log["topics"][0])] for log in receipt["logs"] if log["topics"]]


def block_time(chain: Chain, receipt: TxReceipt) -> int:
    return int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def deploy_artifact(chain: Chain, deployer: Any, name: str, *args: Any) -> str:
    """Deploys one contract from its committed artifact; a revert raises ChainRevert."""
    artifact = load_artifact(name)
    address, _ = Transactor(chain, deployer, revert_decoder()).deploy(
        artifact.abi, artifact.bytecode, *args
    )
    return address


def active_count(c: Consortium) -> int:
    return int(c.call("registry", "activeMemberCount"))


# ============================================================================ registry


def test_constructor_validates_founders_quorum_and_lifetime(chain: Chain) -> None:
    deployer = new_account(chain)
    a, b = (Account.create().address for _ in range(2))

    def registry(founders, names, roles, quorum=5_000, lifetime=LIFETIME) -> str:
        return deploy_artifact(
            chain, deployer, "ConsortiumRegistry", founders, names, roles, quorum, lifetime
        )

    cases: list[tuple[tuple[Any, ...], dict[str, Any], str, dict[str, Any]]] = [
        (([], [], []), {}, "InvalidFounders", {}),
        (([a, b], ["A"], [1, 1]), {}, "InvalidFounders", {}),
        (([a, b], ["A", "B"], [1]), {}, "InvalidFounders", {}),
        (([a], ["A"], [1, 2]), {}, "InvalidFounders", {}),
        (([a], ["A"], [1]), {"quorum": 10_000}, "InvalidQuorum", {"quorumBps": 10_000}),
        (([a], ["A"], [1]), {"quorum": 65_535}, "InvalidQuorum", {"quorumBps": 65_535}),
        (([a], ["A"], [1]), {"lifetime": 59}, "InvalidLifetime", {"lifetime": 59}),
        (([a], ["A"], [1]), {"lifetime": 0}, "InvalidLifetime", {"lifetime": 0}),
        (
            ([a], ["A"], [1]),
            {"lifetime": 365 * DAY + 1},
            "InvalidLifetime",
            {"lifetime": 365 * DAY + 1},
        ),
        (([ZERO_ADDRESS], ["Z"], [1]), {}, "ZeroAddress", {"account": ZERO_ADDRESS}),
        (([a], ["A"], [0]), {}, "InvalidRoles", {"roles": 0}),
        (([a], ["A"], [16]), {}, "InvalidRoles", {"roles": 16}),
        (([a], ["A"], [0xFF]), {}, "InvalidRoles", {"roles": 0xFF}),
        (([a, b, a], ["A", "B", "A2"], [1, 2, 4]), {}, "AlreadyMember", {"account": a}),
        (([a], [""], [1]), {}, "InvalidName", {}),
        (([a], ["x" * 65], [1]), {}, "InvalidName", {}),
    ]
    for positional, keywords, name, expected in cases:
        with reverts(name, **expected):
            registry(*positional, **keywords)

    # The boundaries are accepted.
    for quorum, lifetime in ((9_999, 60), (0, 365 * DAY)):
        address = registry([a, b], ["x" * 64, "B"], [15, 1], quorum, lifetime)
        contract = chain.w3.eth.contract(
            address=address, abi=load_artifact("ConsortiumRegistry").abi
        )
        assert contract.functions.quorumBps().call() == quorum
        assert contract.functions.proposalLifetime().call() == lifetime
        assert contract.functions.activeMemberCount().call() == 2

    # The Python deploy refuses an empty consortium before sending anything.
    with pytest.raises(UsageError):
        deploy(chain, deployer, [], quorum_bps=5_000, proposal_lifetime=LIFETIME)


def test_deployment_emits_founders_and_quorum(chain: Chain) -> None:
    c = deploy_consortium(chain)
    reader = c.reader
    block = c.deployment.block_number
    added = reader.registry.events.MemberAdded().get_logs(from_block=block, to_block=block)
    assert [(e["args"]["account"], e["args"]["name"], e["args"]["roles"]) for e in added] == [
        (a.address, name, int(roles))
        for a, (name, roles) in zip(
            c.accounts,
            [("Bank A", 3), ("Logistics Platform", 1), ("Research Institute", 12)],
            strict=True,
        )
    ]
    quorum = reader.registry.events.QuorumChanged().get_logs(from_block=block, to_block=block)
    assert [dict(e["args"]) for e in quorum] == [{"previousQuorumBps": 0, "quorumBps": 5_000}]
    assert [m.address for m in reader.members.all()] == [a.address for a in c.accounts]
    assert active_count(c) == 3
    assert c.membership_epoch() == 0
    assert reader.members.quorum_bps() == 5_000
    assert c.call("registry", "neededApprovals") == 2


def test_add_member_executes_when_approvals_exceed_quorum(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    dave = new_account(chain, funded=False)

    created = bank.members.propose_add(dave.address, "Dave", AUDITOR)
    assert not created.executed
    pid = created.proposal_id
    assert pid == 1
    (event,) = events(bank.registry, "ProposalCreated", created.receipt)
    assert event == {
        "id": pid,
        "kind": ProposalKind.ADD_MEMBER.value,
        "proposer": bank.address,
        "account": dave.address,
        "roles": int(AUDITOR),
        "quorumBps": 0,
        "name": "Dave",
        "expiresAt": block_time(chain, created.receipt) + LIFETIME,
    }
    assert event_names(bank, created.receipt) == ["ProposalCreated", "ProposalApproved"]
    assert events(bank.registry, "ProposalApproved", created.receipt) == [
        {"id": pid, "voter": bank.address}
    ]
    proposal = c.reader.members.proposal(pid)
    assert (proposal.status, proposal.approvals, proposal.needed) == ("pending", 1, 2)
    assert proposal.kind is ProposalKind.ADD_MEMBER
    assert (proposal.account, proposal.name, proposal.roles) == (dave.address, "Dave", AUDITOR)
    assert proposal.proposer == bank.address
    assert proposal.describe() == f"add Dave {dave.address} as auditor"
    assert c.call("registry", "hasApproved", pid, bank.address) is True
    assert c.call("registry", "hasApproved", pid, logistics.address) is False
    assert not c.reader.members.is_member(dave.address)

    approved = logistics.members.approve(pid)
    assert approved.executed
    assert event_names(bank, approved.receipt) == [
        "ProposalApproved",
        "ProposalExecuted",
        "MemberAdded",
    ]
    assert events(bank.registry, "MemberAdded", approved.receipt) == [
        {"account": dave.address, "name": "Dave", "roles": int(AUDITOR)}
    ]
    member = c.reader.members.get(dave.address)
    assert (member.name, member.roles, member.active) == ("Dave", AUDITOR, True)
    assert member.joined_at == block_time(chain, approved.receipt)
    assert c.reader.members.proposal(pid).status == "executed"
    assert active_count(c) == 4
    assert c.membership_epoch() == 0  # adding takes no right away
    assert c.call("registry", "neededApprovals") == 3
    assert [m.address for m in c.reader.members.all()][-1] == dave.address

    with reverts("ProposalAlreadyExecuted", id=pid):
        institute.members.approve(pid)
    with reverts("ProposalAlreadyExecuted", id=pid):
        institute.members.execute(pid)


def test_four_members_need_three_approvals_to_remove(chain: Chain) -> None:
    founders = [(f"M{i}", PROVIDER) for i in range(4)]
    c = deploy_consortium(chain, founders)
    m0, m1, m2, m3 = c.ledgers
    assert c.call("registry", "neededApprovals") == 3

    created = m0.members.propose_remove(m3.address)
    assert not created.executed
    assert not m1.members.approve(created.proposal_id).executed
    proposal = c.reader.members.proposal(created.proposal_id)
    assert (proposal.approvals, proposal.needed) == (2, 3)
    assert proposal.describe() == f"remove {m3.address}"
    assert proposal.account == m3.address
    epoch = c.membership_epoch()

    done = m2.members.approve(created.proposal_id)
    assert done.executed
    assert event_names(m0, done.receipt) == [
        "ProposalApproved",
        "ProposalExecuted",
        "MemberRemoved",
    ]
    assert events(m0.registry, "MemberRemoved", done.receipt) == [{"account": m3.address}]
    assert c.membership_epoch() == epoch + 1
    assert active_count(c) == 3
    assert not c.reader.members.is_member(m3.address)
    assert not c.reader.members.get(m3.address).active
    assert m3.address not in [m.address for m in c.reader.members.all()]
    everyone = c.reader.members.all(include_inactive=True)
    assert [m.address for m in everyone] == [a.address for a in c.accounts]
    # A removed member can no longer act.
    with reverts("NotMember", account=m3.address):
        m3.members.propose_quorum(1_000)


def test_quorum_zero_executes_on_proposal(chain: Chain) -> None:
    c = deploy_consortium(chain, quorum_bps=0)
    bank = c.ledgers[0]
    dave = new_account(chain, funded=False)
    outcome = bank.members.propose_add(dave.address, "Dave", CONSUMER)
    assert outcome.executed
    assert event_names(bank, outcome.receipt) == [
        "ProposalCreated",
        "ProposalApproved",
        "ProposalExecuted",
        "MemberAdded",
    ]
    assert c.reader.members.has_role(dave.address, CONSUMER)
    assert c.reader.members.proposal(outcome.proposal_id).status == "executed"


def test_change_roles_and_quorum(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    epoch = c.membership_epoch()

    outcome = bank.members.propose_roles(logistics.address, PROVIDER | CONSUMER)
    assert c.reader.members.proposal(outcome.proposal_id).kind is ProposalKind.CHANGE_ROLES
    assert not c.reader.members.has_role(logistics.address, CONSUMER)
    done = institute.members.approve(outcome.proposal_id)
    assert done.executed
    assert events(bank.registry, "RolesChanged", done.receipt) == [
        {"account": logistics.address, "previousRoles": 1, "roles": 3}
    ]
    assert c.reader.members.has_role(logistics.address, PROVIDER | CONSUMER)
    assert not c.reader.members.has_role(logistics.address, PROVIDER | AUDITOR)
    assert not c.reader.members.has_role(logistics.address, PROVIDER & CONSUMER)  # role 0
    assert c.reader.members.get(logistics.address).roles == PROVIDER | CONSUMER
    assert c.membership_epoch() == epoch + 1  # a role change may take a right away

    outcome = bank.members.propose_quorum(6_667)
    proposal = c.reader.members.proposal(outcome.proposal_id)
    assert (proposal.kind, proposal.quorum_bps, proposal.account) == (
        ProposalKind.CHANGE_QUORUM,
        6_667,
        None,
    )
    done = logistics.members.approve(outcome.proposal_id)
    assert done.executed
    assert events(bank.registry, "QuorumChanged", done.receipt) == [
        {"previousQuorumBps": 5_000, "quorumBps": 6_667}
    ]
    assert c.reader.members.quorum_bps() == 6_667
    assert c.call("registry", "neededApprovals") == 3  # floor(3 * 0.6667) + 1
    assert c.membership_epoch() == epoch + 1  # a quorum change takes no right away


def test_proposal_reverts(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, _ = c.ledgers
    outsider, stranger = c.outsider()
    newcomer = Account.create().address

    # Only members may propose, approve or leave.
    for action in (
        lambda: stranger.members.propose_add(newcomer, "N", PROVIDER),
        lambda: stranger.members.propose_remove(bank.address),
        lambda: stranger.members.propose_roles(bank.address, AUDITOR),
        lambda: stranger.members.propose_quorum(1_000),
        lambda: stranger.members.approve(1),
        lambda: stranger.members.leave(),
    ):
        with reverts("NotMember", account=outsider.address):
            action()

    with reverts("AlreadyMember", account=logistics.address):
        bank.members.propose_add(logistics.address, "Again", PROVIDER)
    with reverts("ZeroAddress", account=ZERO_ADDRESS):
        bank.members.propose_add(ZERO_ADDRESS, "Nobody", PROVIDER)
    for roles in (0, 16, 31):
        with reverts("InvalidRoles", roles=roles):
            bank.members.propose_add(newcomer, "N", roles)  # type: ignore[arg-type]
    for name in ("", "x" * 65, "é" * 33):  # 1 to 64 bytes, not characters
        with reverts("InvalidName"):
            bank.members.propose_add(newcomer, name, PROVIDER)

    with reverts("NotMember", account=newcomer):
        bank.members.propose_remove(newcomer)
    with reverts("NotMember", account=newcomer):
        bank.members.propose_roles(newcomer, PROVIDER)
    for roles in (0, 16):
        with reverts("InvalidRoles", roles=roles):
            bank.members.propose_roles(logistics.address, roles)  # type: ignore[arg-type]
    with reverts("RolesUnchanged", account=logistics.address, roles=int(PROVIDER)):
        bank.members.propose_roles(logistics.address, PROVIDER)

    for quorum in (10_000, 65_535):
        with reverts("InvalidQuorum", quorumBps=quorum):
            bank.send(bank.registry.functions.proposeChangeQuorum(quorum))
    with pytest.raises(UsageError):
        bank.members.propose_quorum(10_000)

    assert c.call("registry", "proposalCount") == 0
    # The longest valid name is accepted.
    assert bank.members.propose_add(newcomer, "x" * 64, PROVIDER).proposal_id == 1


def test_last_member_cannot_leave_or_be_removed(chain: Chain) -> None:
    c = deploy_consortium(chain, [("Alone", PROVIDER)])
    (alone,) = c.ledgers
    assert c.call("registry", "neededApprovals") == 1
    with reverts("LastMember", account=alone.address):
        alone.members.leave()
    with reverts("LastMember", account=alone.address):
        alone.members.propose_remove(alone.address)
    # Alone, every proposal passes on the proposer's vote; with two, one may leave, not both.
    other = new_account(chain)
    assert alone.members.propose_add(other.address, "Other", CONSUMER).executed
    receipt = c.ledger(other).members.leave()
    assert events(alone.registry, "MemberLeft", receipt) == [{"account": other.address}]
    with reverts("LastMember", account=alone.address):
        alone.members.leave()
    assert c.reader.members.is_member(alone.address)


def test_approve_reverts_unknown_duplicate_executed_and_expired(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    newcomer = Account.create().address

    for action in (
        lambda: bank.members.approve(99),
        lambda: bank.members.execute(99),
        lambda: c.reader.members.proposal(99),
    ):
        with reverts("UnknownProposal", id=99):
            action()
    with reverts("UnknownProposal", id=0):
        bank.members.approve(0)

    pid = bank.members.propose_add(newcomer, "N", PROVIDER).proposal_id
    with reverts("AlreadyVoted", id=pid, voter=bank.address):
        bank.members.approve(pid)
    with reverts("QuorumNotReached", id=pid, approvals=1, needed=2):
        logistics.members.execute(pid)

    expires_at = c.reader.members.proposal(pid).expires_at
    chain.increase_time(LIFETIME + 10)
    assert c.reader.members.proposal(pid).status == "expired"
    with reverts("ProposalExpired", id=pid, expiresAt=expires_at):
        logistics.members.approve(pid)
    with reverts("ProposalExpired", id=pid, expiresAt=expires_at):
        institute.members.execute(pid)

    # A fresh proposal for the same change still works after the old one expired.
    again = bank.members.propose_add(newcomer, "N", PROVIDER)
    assert logistics.members.approve(again.proposal_id).executed
    with reverts("ProposalAlreadyExecuted", id=again.proposal_id):
        institute.members.approve(again.proposal_id)
    assert [p.status for p in c.reader.members.proposals()] == ["expired", "executed"]


def test_votes_of_removed_and_readmitted_members_stop_counting(chain: Chain) -> None:
    founders = [(f"M{i}", PROVIDER) for i in range(4)]
    c = deploy_consortium(chain, founders)
    m0, m1, m2, m3 = c.ledgers
    eve = Account.create().address

    pid = m3.members.propose_add(eve, "Eve", CONSUMER).proposal_id
    assert c.call("registry", "approvals", pid) == 1

    c.remove(m3.address)  # m0 proposes, m1 and m2 approve: 3 of 4
    assert active_count(c) == 3
    assert c.call("registry", "approvals", pid) == 0
    assert c.call("registry", "hasApproved", pid, m3.address) is False

    c.admit(c.accounts[3], "M3 again", PROVIDER)  # 2 of 3
    assert active_count(c) == 4
    # Re-admitted: the vote m3 cast in its former membership still does not count.
    assert c.call("registry", "approvals", pid) == 0
    assert c.call("registry", "hasApproved", pid, m3.address) is False
    assert not m0.members.approve(pid).executed
    assert not m1.members.approve(pid).executed  # 2 of 4, and not 3 with the stale vote
    assert c.reader.members.proposal(pid).approvals == 2
    # m3 may vote again, once; now it counts.
    outcome = m3.members.approve(pid)
    assert outcome.executed
    assert c.call("registry", "approvals", pid) == 3
    assert c.reader.members.is_member(eve)
    with reverts("ProposalAlreadyExecuted", id=pid):
        m2.members.approve(pid)


def test_revote_after_readmission_is_one_vote(chain: Chain) -> None:
    founders = [(f"M{i}", PROVIDER) for i in range(4)]
    c = deploy_consortium(chain, founders)
    m0, _, _, m3 = c.ledgers
    pid = m3.members.propose_add(Account.create().address, "Eve", CONSUMER).proposal_id
    c.remove(m3.address)
    c.admit(c.accounts[3], "M3", PROVIDER)
    m3.members.approve(pid)
    assert c.call("registry", "approvals", pid) == 1
    with reverts("AlreadyVoted", id=pid, voter=m3.address):
        m3.members.approve(pid)
    assert not m0.members.approve(pid).executed
    assert c.call("registry", "approvals", pid) == 2


def test_execute_after_active_count_falls(chain: Chain) -> None:
    founders = [(f"M{i}", PROVIDER) for i in range(4)]
    c = deploy_consortium(chain, founders)
    m0, m1, m2, m3 = c.ledgers
    _, stranger = c.outsider()
    eve = Account.create().address

    pid = m0.members.propose_add(eve, "Eve", CONSUMER).proposal_id
    assert not m1.members.approve(pid).executed
    with reverts("QuorumNotReached", id=pid, approvals=2, needed=3):
        stranger.members.execute(pid)

    epoch = c.membership_epoch()
    receipt = m3.members.leave()
    assert event_names(m0, receipt) == ["MemberLeft"]
    assert events(m0.registry, "MemberLeft", receipt) == [{"account": m3.address}]
    assert c.membership_epoch() == epoch + 1
    assert active_count(c) == 3
    assert not c.reader.members.is_member(m3.address)
    with reverts("NotMember", account=m3.address):
        m3.members.leave()

    # 2 approvals of 3 active members now exceed the quorum; anyone may execute.
    assert c.reader.members.proposal(pid).needed == 2
    receipt = stranger.members.execute(pid)
    assert event_names(m0, receipt) == ["ProposalExecuted", "MemberAdded"]
    assert c.reader.members.is_member(eve)
    assert c.membership_epoch() == epoch + 1
    with reverts("ProposalAlreadyExecuted", id=pid):
        m2.members.execute(pid)


def test_proposal_rechecks_at_execution(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    dave = Account.create().address
    first = bank.members.propose_add(dave, "Dave", PROVIDER).proposal_id
    second = logistics.members.propose_add(dave, "Dave", PROVIDER).proposal_id
    assert institute.members.approve(first).executed
    # Four members now: the second proposal needs a third approval, and the one that would
    # execute it reverts instead of re-adding.
    assert not institute.members.approve(second).executed
    with reverts("AlreadyMember", account=dave):
        bank.members.approve(second)
    assert c.reader.members.proposal(second).status == "pending"


# ============================================================================ consents


def test_register_dataset_and_subjects_root_history(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    _, stranger = c.outsider()
    v1, v2, v3 = digest("subjects-1"), digest("subjects-2"), digest("subjects-3")

    ds = logistics.consents.register("shipments", digest("schema"), v1)
    assert ds == 1
    dataset = c.reader.consents.dataset(ds)
    assert (dataset.owner, dataset.name, dataset.schema_digest) == (
        logistics.address,
        "shipments",
        digest("schema"),
    )
    assert (dataset.subjects_root, dataset.subjects_version) == (v1, 1)
    assert dataset.registered_at > 0

    assert logistics.consents.update_subjects(ds, v2) == 2
    assert logistics.consents.update_subjects(ds, v3.hex()) == 3
    reader = c.reader.consents
    assert [reader.subjects_root_at(ds, v) for v in (1, 2, 3)] == [v1, v2, v3]
    assert reader.subjects_root_at(ds, 4) == ZERO32
    assert reader.subjects_root_at(ds, 0) == ZERO32
    assert (reader.dataset(ds).subjects_root, reader.dataset(ds).subjects_version) == (v3, 3)

    untracked = bank.consents.register("x" * 64, digest("loans"))
    assert untracked == 2
    assert reader.dataset(untracked).subjects_root is None
    assert [d.id for d in reader.datasets()] == [1, 2]

    with reverts("NotProvider", account=institute.address):
        institute.consents.register("models", digest("s"))
    with reverts("NotProvider", account=stranger.address):
        stranger.consents.register("models", digest("s"))
    for name in ("", "x" * 65):
        with reverts("InvalidDatasetName"):
            logistics.consents.register(name, digest("s"))
    with reverts("NotDatasetOwner", datasetId=ds, account=bank.address):
        bank.consents.update_subjects(ds, v1)
    with reverts("UnknownDataset", datasetId=99):
        logistics.consents.update_subjects(99, v1)
    for read in (
        lambda: reader.dataset(99),
        lambda: reader.subjects_root_at(99, 1),
        lambda: reader.of_dataset(99),
    ):
        with reverts("UnknownDataset", datasetId=99):
            read()
    assert c.call("consents", "datasetCount") == 2


def test_consent_window_pending_valid_expired(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, _ = c.ledgers
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    epoch = c.consent_epoch()

    receipt = logistics.consents.grant(ds, bank.address, PURPOSE, now + 1_000, now + 3_000)
    assert events(logistics.consent_registry, "ConsentGranted", receipt) == [
        {
            "datasetId": ds,
            "grantee": bank.address,
            "purpose": PURPOSE32,
            "validFrom": now + 1_000,
            "validUntil": now + 3_000,
        }
    ]
    assert c.consent_epoch() == epoch  # a first grant takes nothing away
    consent = c.reader.consents.get(ds, bank.address, PURPOSE)
    assert (consent.valid_from, consent.valid_until, consent.revoked) == (
        now + 1_000,
        now + 3_000,
        False,
    )
    assert consent.granted_at == block_time(chain, receipt)
    assert consent.state(c.reader.now()) == "pending"
    assert not c.reader.consents.is_valid(ds, bank.address, PURPOSE)

    chain.increase_time(1_500)
    assert c.reader.consents.is_valid(ds, bank.address, PURPOSE)
    assert consent.state(c.reader.now()) == "valid"
    assert not c.reader.consents.is_valid(ds, bank.address, "another-purpose")

    chain.increase_time(2_000)
    assert not c.reader.consents.is_valid(ds, bank.address, PURPOSE)
    assert consent.state(c.reader.now()) == "expired"


def test_grant_and_revoke_reverts(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    outsider, _ = c.outsider()
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()

    with reverts("GranteeNotMember", grantee=outsider.address):
        logistics.consents.grant(ds, outsider.address, PURPOSE, now, now + DAY)
    with reverts("EmptyPurpose"):
        logistics.send(
            logistics.consent_registry.functions.grantConsent(
                ds, bank.address, ZERO32, now, now + DAY
            )
        )
    with reverts("InvalidWindow", validFrom=now + 10, validUntil=now + 9):
        logistics.consents.grant(ds, bank.address, PURPOSE, now + 10, now + 9)
    with reverts("InvalidWindow", validFrom=now - 100, validUntil=now - 1):
        logistics.consents.grant(ds, bank.address, PURPOSE, now - 100, now - 1)
    with reverts("NotDatasetOwner", datasetId=ds, account=bank.address):
        bank.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    with reverts("NotDatasetOwner", datasetId=ds, account=institute.address):
        institute.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    with reverts("UnknownDataset", datasetId=7):
        logistics.consents.grant(7, bank.address, PURPOSE, now, now + DAY)
    with reverts("NoConsent", datasetId=ds, grantee=bank.address, purpose=PURPOSE32):
        logistics.consents.revoke(ds, bank.address, PURPOSE)
    with reverts("UnknownDataset", datasetId=7):
        logistics.consents.revoke(7, bank.address, PURPOSE)
    with pytest.raises(UsageError):
        c.reader.consents.get(ds, bank.address, PURPOSE)  # never granted

    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    with reverts("NotDatasetOwner", datasetId=ds, account=bank.address):
        bank.consents.revoke(ds, bank.address, PURPOSE)
    logistics.consents.revoke(ds, bank.address, PURPOSE)
    with reverts("AlreadyRevoked", datasetId=ds, grantee=bank.address, purpose=PURPOSE32):
        logistics.consents.revoke(ds, bank.address, PURPOSE)
    assert c.consent_epoch() == 1


def test_revoke_regrant_epochs_and_listing(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    assert c.consent_epoch() == 0

    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    assert c.consent_epoch() == 0
    assert c.reader.consents.is_valid(ds, bank.address, PURPOSE)

    # Replacing an existing grant may narrow it: the epoch moves.
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + 2 * DAY)
    assert c.consent_epoch() == 1
    assert c.reader.consents.get(ds, bank.address, PURPOSE).valid_until == now + 2 * DAY

    receipt = logistics.consents.revoke(ds, bank.address, PURPOSE)
    assert events(logistics.consent_registry, "ConsentRevoked", receipt) == [
        {"datasetId": ds, "grantee": bank.address, "purpose": PURPOSE32}
    ]
    assert c.consent_epoch() == 2
    assert not c.reader.consents.is_valid(ds, bank.address, PURPOSE)
    revoked = c.reader.consents.get(ds, bank.address, PURPOSE)
    assert revoked.revoked
    assert revoked.state(c.reader.now()) == "revoked"

    # A new grant after the revocation replaces it.
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    assert c.consent_epoch() == 3
    assert c.reader.consents.is_valid(ds, bank.address, PURPOSE)
    assert not c.reader.consents.get(ds, bank.address, PURPOSE).revoked
    # Each of the four changes moved the consent's nonce too, which voids older signed grants.
    assert c.reader.consents.nonce_of(ds, bank.address, PURPOSE) == 4

    # Other grantees and purposes are separate consents; a first grant moves no epoch.
    logistics.consents.grant(ds, institute.address, "audit", now, now + DAY)
    logistics.consents.grant(ds, bank.address, "marketing", now, now + DAY)
    logistics.consents.revoke(ds, bank.address, "marketing")
    assert c.consent_epoch() == 4
    listed = c.reader.consents.of_dataset(ds)
    assert [(x.grantee, x.purpose, x.revoked) for x in listed] == [
        (bank.address, PURPOSE, False),
        (institute.address, "audit", False),
        (bank.address, "marketing", True),
    ]
    assert all(x.dataset_id == ds for x in listed)
    assert listed[0] == c.reader.consents.get(ds, bank.address, PURPOSE)
    other = logistics.consents.register("empty", digest("schema"))
    assert c.reader.consents.of_dataset(other) == []


def test_consent_invalid_while_owner_lacks_provider_role(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, _ = c.ledgers
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    assert c.reader.consents.is_valid(ds, bank.address, PURPOSE)

    c.set_roles(logistics.address, AUDITOR)
    assert not c.reader.consents.is_valid(ds, bank.address, PURPOSE)
    with reverts("NotProvider", account=logistics.address):
        logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    with reverts("NotProvider", account=logistics.address):
        logistics.consents.revoke(ds, bank.address, PURPOSE)
    with reverts("NotProvider", account=logistics.address):
        logistics.consents.update_subjects(ds, digest("root"))

    c.set_roles(logistics.address, PROVIDER)
    assert c.reader.consents.is_valid(ds, bank.address, PURPOSE)

    c.remove(logistics.address)
    assert not c.reader.consents.is_valid(ds, bank.address, PURPOSE)


# ============================================================================ EIP-712 grants


def test_signed_grant_relayed_by_anyone(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    owner = c.accounts[1]
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    assert c.reader.consents.nonce_of(ds, bank.address, PURPOSE) == 0

    # Signing needs no transaction: a reader-only ledger will do.
    grant = c.reader.consents.sign_grant(
        owner, ds, bank.address, PURPOSE, now, now + DAY, deadline=now + 600
    )
    assert (grant.nonce, grant.signer, grant.chain_id) == (0, owner.address, chain.chain_id)
    assert grant.verifying_contract == c.deployment.consents
    assert grant.recover() == owner.address
    assert grant.is_authentic()
    assert SignedGrant.from_json(grant.to_json()) == grant
    # Other spellings of the same signature are no grant, here as in the contract's ECDSA.
    respelled = [
        dataclasses.replace(grant, signature=s) for s in non_canonical_forms(grant.signature)
    ]
    assert [g.is_authentic() for g in respelled] == [False, False, False]
    with reverts("ECDSAInvalidSignatureS"):
        bank.consents.relay_grant(respelled[0])

    _, relayer = c.outsider()  # not even a member
    receipt = relayer.consents.relay_grant(grant)
    assert events(relayer.consent_registry, "ConsentGranted", receipt) == [
        {
            "datasetId": ds,
            "grantee": bank.address,
            "purpose": PURPOSE32,
            "validFrom": now,
            "validUntil": now + DAY,
        }
    ]
    assert c.reader.consents.is_valid(ds, bank.address, PURPOSE)
    assert c.reader.consents.nonce_of(ds, bank.address, PURPOSE) == 1

    # The same signature cannot be replayed.
    with reverts("InvalidGrantNonce", currentNonce=1, nonce=0) as refused:
        institute.consents.relay_grant(grant)
    assert str(refused.value) == (
        "The signed grant carries nonce 0, not its consent's current nonce 1: the consent "
        "changed, or its signed grants were cancelled, after it was signed."
    )

    # Nonces count per consent: another consent of the same owner starts at 0, and a grant of
    # it, relayed by a member this time, leaves the first consent's nonce alone.
    second = c.reader.consents.sign_grant(
        owner, ds, institute.address, "audit", now, now + DAY, deadline=now + 600
    )
    assert second.nonce == 0
    institute.consents.relay_grant(second)
    assert c.reader.consents.is_valid(ds, institute.address, "audit")
    assert c.reader.consents.nonce_of(ds, institute.address, "audit") == 1
    assert c.reader.consents.nonce_of(ds, bank.address, PURPOSE) == 1
    third = c.reader.consents.sign_grant(
        owner, ds, bank.address, PURPOSE, now, now + 2 * DAY, deadline=now + 600
    )
    assert third.nonce == 1
    bank.consents.relay_grant(third)
    assert c.reader.consents.get(ds, bank.address, PURPOSE).valid_until == now + 2 * DAY


def test_signed_grant_voided_by_every_later_change_of_its_consent(chain: Chain) -> None:
    """A signed grant counts only for the consent as it was when signed: a revocation, a direct
    grant, a relayed grant or a cancellation after it voids it, so relaying it can neither
    revive a revoked consent nor roll back a newer window."""
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    owner = c.accounts[1]
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    consents = c.reader.consents

    def sign(until: int) -> SignedGrant:
        return consents.sign_grant(owner, ds, bank.address, PURPOSE, now, until, now + 600)

    # Revoked after signing: the grant cannot revive the consent.
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    revived = sign(now + 30 * DAY)
    assert revived.nonce == 1
    logistics.consents.revoke(ds, bank.address, PURPOSE)
    with reverts("InvalidGrantNonce", currentNonce=2, nonce=1):
        institute.consents.relay_grant(revived)
    assert consents.get(ds, bank.address, PURPOSE).revoked
    assert not consents.is_valid(ds, bank.address, PURPOSE)

    # Granted again directly with another window: the older signed window cannot return.
    stale = sign(now + 30 * DAY)
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + 2 * DAY)
    with reverts("InvalidGrantNonce", currentNonce=3, nonce=2):
        institute.consents.relay_grant(stale)
    held = consents.get(ds, bank.address, PURPOSE)
    assert (held.valid_until, held.revoked) == (now + 2 * DAY, False)

    # Cancelled: the consent is as it was, and no grant signed before can be relayed.
    cancelled = sign(now + 30 * DAY)
    epoch = c.consent_epoch()
    assert logistics.consents.cancel_signed_grants(ds, bank.address, PURPOSE) == 4
    assert c.consent_epoch() == epoch  # no validity changed
    assert consents.get(ds, bank.address, PURPOSE) == held
    with reverts("InvalidGrantNonce", currentNonce=4, nonce=3):
        institute.consents.relay_grant(cancelled)

    # Two grants signed for the same state: the first relayed voids the other.
    first, other = sign(now + 5 * DAY), sign(now + 6 * DAY)
    institute.consents.relay_grant(first)
    with reverts("InvalidGrantNonce", currentNonce=5, nonce=4):
        institute.consents.relay_grant(other)
    with reverts("InvalidGrantNonce", currentNonce=5, nonce=4):
        institute.consents.relay_grant(first)
    assert consents.get(ds, bank.address, PURPOSE).valid_until == now + 5 * DAY
    assert consents.nonce_of(ds, bank.address, PURPOSE) == 5


def test_cancel_signed_grants(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    owner = c.accounts[1]
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    consents = c.reader.consents

    # A consent never granted can have signed grants outstanding, and they can be cancelled.
    handed_out = consents.sign_grant(owner, ds, bank.address, PURPOSE, now, now + DAY, now + 600)
    receipt = logistics.send(
        logistics.consent_registry.functions.cancelSignedGrants(ds, bank.address, PURPOSE32)
    )
    assert events(logistics.consent_registry, "SignedGrantsCancelled", receipt) == [
        {"datasetId": ds, "grantee": bank.address, "purpose": PURPOSE32, "nonce": 1}
    ]
    assert event_names(logistics, receipt) == ["SignedGrantsCancelled"]
    with reverts("InvalidGrantNonce", currentNonce=1, nonce=0):
        institute.consents.relay_grant(handed_out)
    with pytest.raises(UsageError, match="no consent for dataset"):
        consents.get(ds, bank.address, PURPOSE)
    # Other consents of the dataset keep their nonces.
    assert consents.nonce_of(ds, institute.address, PURPOSE) == 0
    assert consents.nonce_of(ds, bank.address, "audit") == 0

    # Only the owner cancels; it may even while it lacks the PROVIDER role, since cancelling
    # only takes away what its signatures could still do.
    with reverts("NotDatasetOwner", datasetId=ds, account=bank.address):
        bank.consents.cancel_signed_grants(ds, bank.address, PURPOSE)
    with reverts("UnknownDataset", datasetId=99):
        logistics.consents.cancel_signed_grants(99, bank.address, PURPOSE)
    c.set_roles(logistics.address, AUDITOR)
    assert logistics.consents.cancel_signed_grants(ds, bank.address, PURPOSE) == 2
    c.set_roles(logistics.address, PROVIDER)
    fresh = consents.sign_grant(owner, ds, bank.address, PURPOSE, now, now + DAY, now + 600)
    assert fresh.nonce == 2
    institute.consents.relay_grant(fresh)
    assert consents.is_valid(ds, bank.address, PURPOSE)


def test_signed_grant_rejections(chain: Chain) -> None:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    owner, intruder = c.accounts[1], c.accounts[0]
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    consents = c.reader.consents

    # Signed by somebody else than the dataset owner.
    forged = consents.sign_grant(
        intruder, ds, bank.address, PURPOSE, now, now + DAY, deadline=now + 600
    )
    assert forged.recover() == intruder.address
    with reverts("WrongSigner", signer=intruder.address, owner=owner.address):
        institute.consents.relay_grant(forged)

    def signed_in(domain: Domain, deadline: int = now + 600, nonce: int = 0) -> SignedGrant:
        """A grant by the owner signed in ``domain`` but presented as made for this one."""
        message = {
            "datasetId": ds,
            "grantee": bank.address,
            "purpose": PURPOSE32,
            "validFrom": now,
            "validUntil": now + DAY,
            "nonce": nonce,
            "deadline": deadline,
        }
        signature = sign_typed(owner, domain, CONSENT_GRANT_TYPES, message)
        return SignedGrant(
            chain_id=chain.chain_id,
            verifying_contract=c.deployment.consents,
            dataset_id=ds,
            grantee=bank.address,
            purpose=PURPOSE,
            valid_from=now,
            valid_until=now + DAY,
            nonce=nonce,
            deadline=deadline,
            signer=owner.address,
            signature=signature,
        )

    # Signed for another chain id.
    other_chain = signed_in(Domain(chain.chain_id + 1, c.deployment.consents))
    assert other_chain.recover() != owner.address
    with reverts("WrongSigner", signer=other_chain.recover(), owner=owner.address):
        institute.consents.relay_grant(other_chain)

    # Signed for another deployment's consent registry, or for another contract.
    elsewhere = deploy_artifact(chain, c.accounts[2], "ConsentRegistry", c.deployment.registry)
    for verifying_contract in (elsewhere, c.deployment.ledger):
        wrong = signed_in(Domain(chain.chain_id, to_checksum_address(verifying_contract)))
        with reverts("WrongSigner", signer=wrong.recover(), owner=owner.address):
            institute.consents.relay_grant(wrong)

    # The correct domain is accepted, which shows the rejections were about the domain only.
    good = signed_in(Domain(chain.chain_id, c.deployment.consents))
    assert good.recover() == owner.address

    # Past its deadline.
    late = signed_in(Domain(chain.chain_id, c.deployment.consents), deadline=now - 1)
    with reverts("SignatureExpired", deadline=now - 1):
        institute.consents.relay_grant(late)

    # Signed ahead of the consent's nonce: refused, since a later change (a revocation, say)
    # would otherwise be what arms it.
    ahead = signed_in(Domain(chain.chain_id, c.deployment.consents), nonce=1)
    with reverts("InvalidGrantNonce", currentNonce=0, nonce=1):
        institute.consents.relay_grant(ahead)

    # The Python side refuses to submit a grant made for another chain.
    with pytest.raises(UsageError):
        institute.consents.relay_grant(dataclasses.replace(good, chain_id=chain.chain_id + 1))

    assert not consents.is_valid(ds, bank.address, PURPOSE)
    institute.consents.relay_grant(good)
    assert consents.is_valid(ds, bank.address, PURPOSE)
    assert consents.nonce_of(ds, bank.address, PURPOSE) == 1


# ============================================================================ training ledger


@dataclasses.dataclass
class JobSetup:
    c: Consortium
    bank: Ledger  # PROVIDER | CONSUMER: the consumer, and a participant with its own dataset
    logistics: Ledger  # PROVIDER: grants consent, participates
    institute: Ledger  # COORDINATOR | AUDITOR
    shipments: int  # logistics' dataset, with consent to the bank
    loans: int  # the bank's own dataset: no consent needed
    job: int


def job_setup(chain: Chain, *, valid_for: int = DAY) -> JobSetup:
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    shipments = logistics.consents.register("shipments", digest("shipments-schema"))
    loans = bank.consents.register("loans", digest("loans-schema"))
    now = logistics.now()
    logistics.consents.grant(shipments, bank.address, PURPOSE, now, now + valid_for)
    job = institute.jobs.create(
        purpose=PURPOSE,
        model_spec_digest=digest("spec"),
        initial_model_digest=digest("model-0"),
        consumer=bank.address,
        participants=[logistics.address, bank.address],
        dataset_ids=[shipments, loans],
    )
    return JobSetup(c, bank, logistics, institute, shipments, loans, job)


def anchor(s: JobSetup, round_number: int, **overrides: Any) -> tuple[RoundAnchor, TxReceipt]:
    """Anchors ``round_number`` of the setup's job by its coordinator."""
    values: dict[str, Any] = {
        "merkle_root": digest(f"root-{round_number}"),
        "participant_mask": 0b11,
        "model_digest": digest(f"model-{round_number}"),
        "metrics_digest": digest(f"metrics-{round_number}"),
    }
    values.update(overrides)
    ledger = values.pop("ledger", s.institute)
    job = values.pop("job", s.job)
    return ledger.jobs.anchor(job, round_number, **values)


def revalidated(s: JobSetup, receipt: TxReceipt) -> list[dict[str, Any]]:
    return events(s.institute.training, "JobRevalidated", receipt)


def test_create_job_records_everything(chain: Chain) -> None:
    s = job_setup(chain)
    bank, logistics, institute = s.bank, s.logistics, s.institute
    assert s.job == 1
    assert s.c.reader.jobs.count() == 1
    job = s.c.reader.jobs.get(s.job)
    assert (job.coordinator, job.consumer, job.status) == (
        institute.address,
        bank.address,
        "open",
    )
    assert (job.last_round, job.last_anchor_block) == (0, 0)
    assert job.head_model_digest == job.initial_model_digest == digest("model-0")
    assert (job.purpose, job.model_spec_digest) == (PURPOSE, digest("spec"))
    assert job.participants == tuple(
        sorted([logistics.address, bank.address], key=lambda a: int(a, 16))
    )
    assert job.dataset_ids == (s.shipments, s.loans)
    assert job.created_block > 0 and job.created_at > 0

    # The creation itself ran the full check and cached the consent window.
    consent = s.c.reader.consents.get(s.shipments, bank.address, PURPOSE)
    raw = s.c.call("training", "getJob", s.job)
    assert raw[4:8] == (0, 0, consent.valid_from, consent.valid_until)
    block = job.created_block
    created = institute.training.events.JobCreated().get_logs(from_block=block, to_block=block)
    assert [dict(e["args"]) for e in created] == [
        {
            "jobId": s.job,
            "coordinator": institute.address,
            "consumer": bank.address,
            "purpose": PURPOSE32,
            "modelSpecDigest": digest("spec"),
            "initialModelDigest": digest("model-0"),
            "participants": list(job.participants),
            "datasetIds": [s.shipments, s.loans],
        }
    ]
    checks = institute.training.events.JobRevalidated().get_logs(from_block=block, to_block=block)
    assert [dict(e["args"]) for e in checks] == [
        {
            "jobId": s.job,
            "participantMask": 0b11,
            "membershipEpoch": 0,
            "consentEpoch": 0,
            "windowStart": consent.valid_from,
            "windowEnd": consent.valid_until,
        }
    ]
    with reverts("UnknownJob", jobId=2):
        s.c.reader.jobs.get(2)


def test_create_job_reverts(chain: Chain) -> None:
    s = job_setup(chain)
    bank, logistics, institute = s.bank, s.logistics, s.institute
    outsider = Account.create().address
    valid: dict[str, Any] = {
        "purpose": PURPOSE,
        "model_spec_digest": digest("spec"),
        "initial_model_digest": digest("model-0"),
        "consumer": bank.address,
        "participants": [bank.address, logistics.address],
        "dataset_ids": [s.shipments, s.loans],
    }

    def create(ledger: Ledger = institute, **changes: Any) -> int:
        return ledger.jobs.create(**{**valid, **changes})

    def create_raw(participants: list[str], purpose: bytes = PURPOSE32) -> Any:
        fn = institute.training.functions.createJob(
            purpose,
            digest("spec"),
            digest("model-0"),
            bank.address,
            participants,
            [s.shipments],
        )
        return institute.send(fn)

    with reverts("NotCoordinator", account=bank.address):
        create(bank)
    with reverts("NotConsumer", account=logistics.address):
        create(consumer=logistics.address)
    with reverts("NotConsumer", account=outsider):
        create(consumer=outsider)
    with reverts("InvalidParticipants", index=0):
        create(participants=[])
    low, high = sorted([bank.address, logistics.address], key=lambda a: int(a, 16))
    with reverts("InvalidParticipants", index=1):
        create_raw([high, low])
    with reverts("InvalidParticipants", index=1):
        create_raw([low, low])
    three = sorted([bank.address, logistics.address, institute.address], key=lambda a: int(a, 16))
    with reverts("InvalidParticipants", index=2):
        create_raw([three[0], three[2], three[1]])
    with reverts("EmptyPurpose"):
        create_raw([low, high], purpose=ZERO32)
    with reverts("InvalidDatasets"):
        create(dataset_ids=[])
    with reverts("EmptyDigest"):
        create(initial_model_digest=ZERO32)
    with reverts("ParticipantNotMember", participant=outsider):
        create(participants=[bank.address, outsider])
    with reverts("UnknownDataset", datasetId=99):
        create(dataset_ids=[s.shipments, 99])
    assert institute.jobs.count() == 1


def test_create_job_needs_valid_consent(chain: Chain) -> None:
    s = job_setup(chain)
    bank, logistics, institute = s.bank, s.logistics, s.institute
    unconsented = logistics.consents.register("invoices", digest("invoices-schema"))
    now = logistics.now()
    later = logistics.consents.register("later", digest("later-schema"))
    logistics.consents.grant(later, bank.address, PURPOSE, now + 1_000, now + DAY)
    base: dict[str, Any] = {
        "purpose": PURPOSE,
        "model_spec_digest": digest("spec"),
        "initial_model_digest": digest("model-0"),
        "consumer": bank.address,
        "participants": [bank.address, logistics.address],
    }
    purpose = encode_purpose("marketing")
    with reverts("ConsentNotValid", datasetId=s.shipments, grantee=bank.address, purpose=purpose):
        institute.jobs.create(**{**base, "purpose": "marketing"}, dataset_ids=[s.shipments])
    for ds in (unconsented, later):
        with reverts("ConsentNotValid", datasetId=ds, grantee=bank.address, purpose=PURPOSE32):
            institute.jobs.create(**base, dataset_ids=[s.loans, ds])
    # The consumer's own dataset needs no consent, for any purpose.
    assert institute.jobs.create(**{**base, "purpose": "marketing"}, dataset_ids=[s.loans]) == 2


def test_anchor_rounds_chain_and_commitments(chain: Chain) -> None:
    s = job_setup(chain)
    reader = s.c.reader.jobs

    first, r1 = anchor(s, 1)
    assert revalidated(s, r1) == []  # nothing changed since the job was created
    (event,) = events(s.institute.training, "RoundAnchored", r1)
    assert event == {
        "jobId": s.job,
        "round": 1,
        "merkleRoot": digest("root-1"),
        "participantCount": 2,
        "participantMask": 0b11,
        "modelDigest": digest("model-1"),
        "metricsDigest": digest("metrics-1"),
        "previousModelDigest": digest("model-0"),
        "previousAnchorBlock": 0,
        "commitment": first.commitment(),
    }
    assert first.block_number == r1["blockNumber"]
    assert first.timestamp == block_time(chain, r1)
    job = reader.get(s.job)
    assert (job.last_round, job.last_anchor_block) == (1, r1["blockNumber"])
    assert job.head_model_digest == digest("model-1")

    second, r2 = anchor(s, 2, participant_mask=0b01, metrics_digest=ZERO32)
    assert (second.participant_count, second.participant_mask) == (1, 0b01)
    (event,) = events(s.institute.training, "RoundAnchored", r2)
    assert event["previousAnchorBlock"] == r1["blockNumber"]
    assert event["previousModelDigest"] == digest("model-1") == second.previous_model_digest
    assert second.metrics_digest == ZERO32
    job = reader.get(s.job)
    assert (job.last_round, job.last_anchor_block) == (2, r2["blockNumber"])
    assert job.head_model_digest == digest("model-2")

    for rnd, (a, commitment) in enumerate(
        ((first, first.commitment()), (second, second.commitment())), start=1
    ):
        assert reader.round_commitment(s.job, rnd) == commitment
        assert s.c.call("training", "computeRoundCommitment", astuple(a)) == commitment
        assert reader.verify(a)

    for name, value in [
        ("job_id", first.job_id + 1),
        ("round", 2),
        ("round", 3),
        ("merkle_root", digest("other-root")),
        ("participant_count", 1),
        ("participant_mask", 0b10),
        ("model_digest", digest("other-model")),
        ("metrics_digest", ZERO32),
        ("previous_model_digest", digest("model-1")),
        ("block_number", first.block_number + 1),
        ("timestamp", first.timestamp + 1),
    ]:
        altered = dataclasses.replace(first, **{name: value})
        assert not reader.verify(altered), f"verifyRound accepted a changed {name}"
    with reverts("UnknownRound", jobId=s.job, round=3):
        reader.round_commitment(s.job, 3)
    with reverts("UnknownRound", jobId=99, round=1):
        reader.round_commitment(99, 1)


def test_anchor_reverts_and_close(chain: Chain) -> None:
    s = job_setup(chain)
    job = s.job
    with reverts("WrongRound", jobId=job, expected=1, round=2):
        anchor(s, 2)
    with reverts("WrongRound", jobId=job, expected=1, round=0):
        anchor(s, 0)
    with reverts("NotJobCoordinator", jobId=job, account=s.bank.address):
        anchor(s, 1, ledger=s.bank)
    with reverts("UnknownJob", jobId=99):
        anchor(s, 1, job=99)
    for mask in (0, 0b100):
        with reverts("InvalidParticipantMask", mask=mask, participants=2):
            anchor(s, 1, participant_mask=mask)
    with reverts("EmptyDigest"):
        anchor(s, 1, merkle_root=ZERO32)
    with reverts("EmptyDigest"):
        anchor(s, 1, model_digest=ZERO32)

    anchor(s, 1)
    with reverts("WrongRound", jobId=job, expected=2, round=1):
        anchor(s, 1)

    with reverts("NotJobCoordinator", jobId=job, account=s.logistics.address):
        s.logistics.jobs.close(job)
    with reverts("UnknownJob", jobId=99):
        s.institute.jobs.close(99)
    receipt = s.institute.jobs.close(job)
    assert events(s.institute.training, "JobClosed", receipt) == [
        {"jobId": job, "lastRound": 1, "modelDigest": digest("model-1")}
    ]
    assert s.c.reader.jobs.get(job).status == "closed"
    progress = s.c.reader.jobs.progress(job)
    assert (progress.status, progress.last_round, progress.head_model_digest) == (
        "closed",
        1,
        digest("model-1"),
    )
    with reverts("UnknownJob", jobId=99):
        s.c.reader.jobs.progress(99)
    with reverts("JobNotOpen", jobId=job):
        anchor(s, 2)
    with reverts("JobNotOpen", jobId=job):
        s.institute.jobs.close(job)
    # Still verifiable after closing.
    assert s.c.reader.jobs.round_commitment(job, 1) != ZERO32


def test_anchor_rechecks_membership_and_roles(chain: Chain) -> None:
    s = job_setup(chain)
    anchor(s, 1)
    c = s.c
    c.remove(s.logistics.address)
    with reverts("ParticipantNotMember", participant=s.logistics.address):
        anchor(s, 2)

    # Re-admitted, the participant counts again; the slow path re-checks everything.
    c.admit(c.accounts[1], "Logistics Platform", PROVIDER)
    _, receipt = anchor(s, 2)
    (check,) = revalidated(s, receipt)
    assert check["membershipEpoch"] == c.membership_epoch()

    c.set_roles(s.institute.address, AUDITOR)
    with reverts("NotCoordinator", account=s.institute.address):
        anchor(s, 3)
    c.set_roles(s.institute.address, COORDINATOR)
    c.set_roles(s.bank.address, PROVIDER)
    with reverts("NotConsumer", account=s.bank.address):
        anchor(s, 3)
    c.set_roles(s.bank.address, PROVIDER | CONSUMER)
    # The consent's owner losing PROVIDER invalidates the consent.
    c.set_roles(s.logistics.address, CONSUMER)
    with reverts(
        "ConsentNotValid", datasetId=s.shipments, grantee=s.bank.address, purpose=PURPOSE32
    ):
        anchor(s, 3)
    c.set_roles(s.logistics.address, PROVIDER)
    anchor(s, 3)


def test_anchor_rechecks_consent_revocation(chain: Chain) -> None:
    s = job_setup(chain)
    anchor(s, 1)
    s.logistics.consents.revoke(s.shipments, s.bank.address, PURPOSE)
    with reverts(
        "ConsentNotValid", datasetId=s.shipments, grantee=s.bank.address, purpose=PURPOSE32
    ):
        anchor(s, 2)
    now = s.logistics.now()
    s.logistics.consents.grant(s.shipments, s.bank.address, PURPOSE, now, now + DAY)
    _, receipt = anchor(s, 2)
    (check,) = revalidated(s, receipt)
    assert (check["consentEpoch"], check["windowEnd"]) == (2, now + DAY)


def test_a_round_without_a_departed_participant_is_anchored(chain: Chain) -> None:
    """A round names its participants: one that left, or whose consent was revoked, is left
    out, and the job goes on with the others; the fast path holds for that set again."""
    s = job_setup(chain)
    job = s.c.reader.jobs.get(s.job)
    only_bank = participant_mask(job.participants, [s.bank.address])
    anchor(s, 1)
    s.logistics.consents.revoke(s.shipments, s.bank.address, PURPOSE)
    with reverts("ConsentNotValid", datasetId=s.shipments):
        anchor(s, 2)  # logistics is still named, its dataset's consent is gone
    second, receipt = anchor(s, 2, participant_mask=only_bank)
    assert (second.participant_count, second.participant_mask) == (1, only_bank)
    (check,) = revalidated(s, receipt)
    assert check["participantMask"] == only_bank
    assert s.c.reader.jobs.progress(s.job).checked_participants == only_bank

    _, receipt = anchor(s, 3, participant_mask=only_bank)
    assert revalidated(s, receipt) == []  # the same set, nothing changed: the fast path
    assert s.c.reader.jobs.progress(s.job).check_still_holds

    s.c.remove(s.logistics.address)  # gone altogether: a round without it still anchors
    _, receipt = anchor(s, 4, participant_mask=only_bank)
    (check,) = revalidated(s, receipt)
    assert check["membershipEpoch"] == s.c.membership_epoch()
    with reverts("ParticipantNotMember", participant=s.logistics.address):
        anchor(s, 5)


@pytest.mark.parametrize("mask", [1, 0b1011, 2**100 - 1, 2**255, 2**256 - 2, 2**256 - 1])
def test_the_contract_counts_a_mask_as_python_does(chain: Chain, mask: int) -> None:
    s = job_setup(chain)
    assert s.c.call("training", "countParticipants", mask) == bin(mask).count("1")


def test_anchor_rechecks_consent_window(chain: Chain) -> None:
    s = job_setup(chain, valid_for=2_000)
    _, receipt = anchor(s, 1)
    assert revalidated(s, receipt) == []
    assert s.c.reader.jobs.progress(s.job).check_still_holds
    chain.increase_time(3_000)  # past validUntil; no epoch moved
    assert s.c.consent_epoch() == 0 and s.c.membership_epoch() == 0
    assert not s.c.reader.jobs.progress(s.job).check_still_holds
    with reverts(
        "ConsentNotValid", datasetId=s.shipments, grantee=s.bank.address, purpose=PURPOSE32
    ):
        anchor(s, 2)
    # Extending the consent (a replacement) lets the job go on.
    now = s.logistics.now()
    s.logistics.consents.grant(s.shipments, s.bank.address, PURPOSE, now - 10, now + DAY)
    _, receipt = anchor(s, 2)
    (check,) = revalidated(s, receipt)
    assert (check["windowStart"], check["windowEnd"]) == (now - 10, now + DAY)


def test_slow_path_only_when_an_epoch_moved(chain: Chain) -> None:
    s = job_setup(chain)
    c = s.c
    dave = new_account(chain)
    rounds = iter(range(1, 100))

    def anchored_with_check() -> bool:
        """Anchors the next round; whether the contract re-checked in full, which
        ``jobProgress`` must have predicted."""
        before = c.reader.jobs.progress(s.job)
        _, receipt = anchor(s, next(rounds))
        checks = revalidated(s, receipt)
        assert before.check_still_holds == (not checks)
        after = c.reader.jobs.progress(s.job)
        assert (after.status, after.last_round, after.check_still_holds) == (
            "open",
            before.last_round + 1,
            True,
        )
        if checks:
            (check,) = checks
            assert check["membershipEpoch"] == c.membership_epoch()
            assert check["consentEpoch"] == c.consent_epoch()
        return bool(checks)

    assert not anchored_with_check()
    assert not anchored_with_check()

    c.admit(dave, "Dave", PROVIDER | CONSUMER)  # adding a member moves no epoch
    assert not anchored_with_check()

    mine = c.ledger(dave).consents.register("dave", digest("dave-schema"))
    now = s.logistics.now()
    c.ledger(dave).consents.grant(mine, s.bank.address, PURPOSE, now, now + DAY)  # first grant
    s.logistics.consents.update_subjects(s.shipments, digest("subjects"))
    assert not anchored_with_check()

    c.ledger(dave).consents.revoke(mine, s.bank.address, PURPOSE)  # unrelated, but epoch moves
    assert anchored_with_check()
    assert not anchored_with_check()

    c.set_roles(dave.address, PROVIDER)  # unrelated role change: membership epoch moves
    assert anchored_with_check()
    assert not anchored_with_check()

    c.ledger(dave).members.leave()
    assert anchored_with_check()
    assert not anchored_with_check()
    assert c.reader.jobs.get(s.job).last_round == 10


def test_training_ledger_refuses_a_consent_registry_of_another_registry(chain: Chain) -> None:
    c = deploy_consortium(chain)
    deployer = c.accounts[0]
    other_registry = deploy_artifact(
        chain, deployer, "ConsortiumRegistry", [deployer.address], ["Solo"], [15], 0, LIFETIME
    )
    other_consents = deploy_artifact(chain, deployer, "ConsentRegistry", other_registry)
    with reverts("RegistryMismatch", consents=other_consents):
        deploy_artifact(chain, deployer, "TrainingLedger", c.deployment.registry, other_consents)
    with reverts("RegistryMismatch", consents=c.deployment.consents):
        deploy_artifact(chain, deployer, "TrainingLedger", other_registry, c.deployment.consents)
    # Matching pairs deploy.
    assert deploy_artifact(chain, deployer, "TrainingLedger", other_registry, other_consents)


# ============================================================================ Ledger object


def _fake_deployment(chain_id: int) -> Deployment:
    addresses = [Account.create().address for _ in range(4)]
    return Deployment(chain_id, *addresses[:3], block_number=1, deployer=addresses[3])


def _deployment_as_if_on(chain: Chain, chain_id: int) -> Deployment:
    """Real contracts on ``chain``, in a deployment record that says ``chain_id``."""
    return dataclasses.replace(deploy_consortium(chain).deployment, chain_id=chain_id)


def test_ledger_refuses_a_deployment_of_another_chain(chain: Chain) -> None:
    with pytest.raises(UsageError, match="chain"):
        Ledger(chain, _fake_deployment(chain.chain_id + 1))
    with pytest.raises(UsageError, match="chain"):
        Ledger(chain, _fake_deployment(1), Account.create())
    ledger = Ledger(chain, deploy_consortium(chain).deployment)
    with pytest.raises(UsageError, match="account"):
        ledger.members.leave()
    with pytest.raises(UsageError, match="account"):
        _ = ledger.address


def test_ledger_refuses_a_deployment_whose_contracts_have_no_code(chain: Chain) -> None:
    """What a deployment file holds after its development chain was reset."""
    stale = _fake_deployment(chain.chain_id)
    addresses = f"{stale.registry}, {stale.consents}, {stale.ledger}"
    expected = (
        f"deployment.json names contracts with no code on chain {chain.chain_id} at "
        f"{addresses}: the chain was reset? move the file away and re-run `consortium deploy`"
    )
    with pytest.raises(UsageError) as refused:
        Ledger(chain, stale, source="deployment.json")
    assert str(refused.value) == expected


def test_ledger_refuses_development_keys_on_other_chains(chain: Chain) -> None:
    dev_keys = [Account.from_key(ANVIL_KEYS[3]), Account.from_key(ETH_TESTER_KEYS[3])]
    # On the local chain they are fine.
    deployment = deploy_consortium(chain).deployment
    for key in dev_keys:
        assert Ledger(chain, deployment, key).address == key.address
    # A chain that says it is chain 1 (the Ethereum mainnet id).
    remote = SimpleNamespace(chain_id=1, w3=chain.w3, has_code=chain.has_code, description="remote")
    for key in dev_keys:
        with pytest.raises(KeystoreError, match="development key"):
            Ledger(remote, _fake_deployment(1), key)  # type: ignore[arg-type]
        with pytest.raises(KeystoreError):
            refuse_dev_key(key.address, 1)
        refuse_dev_key(key.address, chain.chain_id)
    fresh = Account.create()
    remote_deployment = _deployment_as_if_on(chain, 1)
    assert Ledger(remote, remote_deployment, fresh).address == fresh.address  # type: ignore[arg-type]
    refuse_dev_key(fresh.address, 1)


def test_batch_views_answer_as_the_single_ones_do(chain: Chain) -> None:
    """getMembers, ownersOf and getConsents give, in one call, what the single views give."""
    c = deploy_consortium(chain)
    bank, logistics, institute = c.ledgers
    ds = logistics.consents.register("shipments", digest("schema"))
    other = bank.consents.register("ledger", digest("schema-2"))
    now = logistics.now()
    logistics.consents.grant(ds, institute.address, PURPOSE, now, now + DAY)
    stranger, _ = c.outsider()

    accounts = [institute.address, stranger.address, bank.address]
    assert c.call("registry", "getMembers", accounts) == [
        c.call("registry", "getMember", a) for a in accounts
    ]
    assert c.call("registry", "getMembers", []) == []
    assert c.call("consents", "ownersOf", [other, 99, ds]) == [
        bank.address,
        ZERO_ADDRESS,
        logistics.address,
    ]
    assert c.call("consents", "getConsents", [ds, other, 99], institute.address, PURPOSE32) == [
        c.call("consents", "getConsent", d, institute.address, PURPOSE32) for d in (ds, other, 99)
    ]
    granted, never, _ = c.call(
        "consents", "getConsents", [ds, other, 99], institute.address, PURPOSE32
    )
    assert granted[4] != 0 and never[4] == 0  # grantedAt
