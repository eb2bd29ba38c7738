"""The governance-and-consent walkthrough: a consortium founded, grown by vote, and its data
consents granted, relayed, checked and revoked, end to end on one chain.

It is the SME-credit consortium of the README: a research institute that coordinates, a bank
that wants a credit model, and a logistics platform whose shipment data the bank may use.
Each party signs with its own key; the walkthrough checks every fact it claims against the
chain and raises :class:`WalkthroughFailed` if one does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount

from consortium.chain.base import Chain
from consortium.crypto.canonical import json_digest
from consortium.errors import ChainRevert, ConsortiumError
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.roles import Role

PURPOSE = "sme-credit-scoring"
DAY = 86_400
SHIPMENTS_SCHEMA = {
    "dataset": "logistics-shipments",
    "fields": {
        "sme_id": "string",
        "monthly_shipments": "int",
        "on_time_ratio": "float",
        "avg_invoice_days": "float",
    },
}


class WalkthroughFailed(ConsortiumError):
    """A fact the walkthrough expects of the chain did not hold."""


@dataclass
class Party:
    """One consortium party and its own key."""

    name: str
    roles: Role
    key: LocalAccount = field(default_factory=Account.create)


@dataclass(frozen=True)
class Step:
    """One thing that happened, as the walkthrough reports it."""

    actor: str
    action: str
    outcome: str


@dataclass
class WalkthroughResult:
    deployment: Deployment
    steps: list[Step]


def run_governance(
    chain: Chain, *, report: Callable[[Step], None] = lambda step: None
) -> WalkthroughResult:
    """Runs the walkthrough on ``chain`` (a local dev chain: parties are funded from it)."""
    institute = Party("Research Institute", Role.COORDINATOR | Role.AUDITOR)
    bank = Party("Bank A", Role.CONSUMER | Role.PROVIDER)
    logistics = Party("Logistics Platform", Role.PROVIDER)
    regulator = Party("Regulator", Role.AUDITOR)
    for party in (institute, bank, logistics, regulator):
        chain.fund(party.key.address, 10**20)
    steps: list[Step] = []

    def record(actor: Party, action: str, outcome: str) -> None:
        step = Step(actor.name, action, outcome)
        steps.append(step)
        report(step)

    def expect(condition: bool, fact: str) -> None:
        if not condition:
            raise WalkthroughFailed(f"walkthrough: expected {fact}")

    deployment = deploy(
        chain,
        institute.key,
        [Founder(p.key.address, p.name, p.roles) for p in (institute, bank)],
        quorum_bps=5000,
        proposal_lifetime=7 * DAY,
    )
    record(institute, "deploy", f"ledger at {deployment.ledger}, 2 founders, quorum 50%")
    as_institute = Ledger(chain, deployment, institute.key)
    as_bank = as_institute.as_signer(bank.key)
    as_logistics = as_institute.as_signer(logistics.key)

    proposal = as_bank.members.propose_add(logistics.key.address, logistics.name, logistics.roles)
    expect(not proposal.executed, "one approval of two members not to pass")
    record(bank, f"propose #{proposal.proposal_id}", f"admit {logistics.name}: 1 of 2 approvals")
    vote = as_institute.members.approve(proposal.proposal_id)
    expect(vote.executed and as_institute.members.is_member(logistics.key.address), "admission")
    record(institute, f"approve #{proposal.proposal_id}", f"{logistics.name} admitted")

    regulator_vote = as_institute.members.propose_add(
        regulator.key.address, regulator.name, regulator.roles
    )
    as_logistics.members.approve(regulator_vote.proposal_id)
    expect(as_institute.members.is_member(regulator.key.address), "the regulator's admission")
    record(logistics, f"approve #{regulator_vote.proposal_id}", "Regulator admitted as auditor")

    dataset_id = as_logistics.consents.register(
        "logistics-shipments", json_digest(SHIPMENTS_SCHEMA), bytes(32)
    )
    record(logistics, "register dataset", f"dataset {dataset_id} (schema digest on chain)")

    now = as_institute.now()
    as_logistics.consents.grant(dataset_id, bank.key.address, PURPOSE, now, now + 90 * DAY)
    expect(as_bank.consents.is_valid(dataset_id, bank.key.address, PURPOSE), "a valid consent")
    record(logistics, "grant consent", f"Bank A may use dataset {dataset_id} for {PURPOSE}")

    try:
        as_bank.consents.grant(dataset_id, bank.key.address, "marketing", now, now + DAY)
    except ChainRevert as refused:
        record(bank, "grant itself consent", f"refused by the chain: {refused.name}")
    else:
        raise WalkthroughFailed("walkthrough: expected a non-owner's grant to be refused")

    signed = as_logistics.consents.sign_grant(
        logistics.key, dataset_id, bank.key.address, "sme-credit-monitoring",
        now, now + 30 * DAY, deadline=now + DAY,
    )  # fmt: skip
    expect(signed.recover() == logistics.key.address, "the offline signature to recover")
    as_institute.consents.relay_grant(signed)
    expect(
        as_bank.consents.is_valid(dataset_id, bank.key.address, "sme-credit-monitoring"),
        "the relayed consent to be valid",
    )
    record(institute, "relay signed grant", "offline-signed consent recorded, institute paid gas")

    as_logistics.consents.revoke(dataset_id, bank.key.address, "sme-credit-monitoring")
    expect(
        not as_bank.consents.is_valid(dataset_id, bank.key.address, "sme-credit-monitoring"),
        "the revoked consent to be invalid",
    )
    record(logistics, "revoke consent", "sme-credit-monitoring no longer valid")

    removal = as_bank.members.propose_remove(regulator.key.address)
    as_logistics.members.approve(removal.proposal_id)
    as_institute.members.approve(removal.proposal_id)
    expect(not as_institute.members.is_member(regulator.key.address), "the removal")
    record(bank, f"propose #{removal.proposal_id}", "Regulator removed by 3 of 4 votes")

    members = as_institute.members.all()
    consents = as_institute.consents.of_dataset(dataset_id)
    expect(len(members) == 3, "three active members")
    expect([c.state(as_institute.now()) for c in consents] == ["valid", "revoked"], "states")
    record(regulator, "check", f"{len(members)} active members, consents valid/revoked as recorded")
    return WalkthroughResult(deployment, steps)
