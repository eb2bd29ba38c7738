"""A small consortium deployed on the test chain, and helpers for asserting reverts.

Every test gets fresh accounts and a fresh deployment, so tests never depend on each other's
state, on either backend; only the chain's clock is shared on the session's anvil node, and
tests only ever read it relative to "now".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from consortium.chain.base import Chain
from consortium.errors import ChainRevert
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.members import Members, ProposalOutcome
from consortium.ledger.roles import Role

FUNDS = 10**20
LIFETIME = 3_600
QUORUM = 5_000
PURPOSE = "credit-scoring"
DAY = 86_400

PROVIDER, CONSUMER, COORDINATOR, AUDITOR = (
    Role.PROVIDER,
    Role.CONSUMER,
    Role.COORDINATOR,
    Role.AUDITOR,
)

# The seed scenario: a bank that provides and consumes, a logistics platform that provides,
# a research institute that coordinates and audits.
DEFAULT_FOUNDERS: tuple[tuple[str, Role], ...] = (
    ("Bank A", PROVIDER | CONSUMER),
    ("Logistics Platform", PROVIDER),
    ("Research Institute", COORDINATOR | AUDITOR),
)


def digest(label: str) -> bytes:
    """A deterministic non-zero 32-byte value for ``label``."""
    return hashlib.sha256(label.encode()).digest()


def new_account(chain: Chain, *, funded: bool = True) -> LocalAccount:
    """A fresh key, funded from the dev chain's faucet unless ``funded`` is false."""
    account: LocalAccount = Account.create()
    if funded:
        chain.fund(account.address, FUNDS)
    return account


@dataclass
class Consortium:
    """A deployment with its founders' keys and one Ledger per founder."""

    chain: Chain
    deployment: Deployment
    accounts: list[LocalAccount]
    ledgers: list[Ledger] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ledgers = [Ledger(self.chain, self.deployment, a) for a in self.accounts]

    def ledger(self, account: LocalAccount) -> Ledger:
        return Ledger(self.chain, self.deployment, account)

    def outsider(self) -> tuple[LocalAccount, Ledger]:
        """A funded account that is not a member, with its Ledger."""
        account = new_account(self.chain)
        return account, self.ledger(account)

    @property
    def reader(self) -> Ledger:
        """A Ledger without a signer."""
        return Ledger(self.chain, self.deployment)

    def call(self, contract: str, function: str, *args: Any) -> Any:
        """A view call on one of the three contracts by its ABI name."""
        ledger = self.reader
        target = {
            "registry": ledger.registry,
            "consents": ledger.consent_registry,
            "training": ledger.training,
        }[contract]
        return ledger.call(target.functions[function](*args))

    def membership_epoch(self) -> int:
        return int(self.call("registry", "membershipEpoch"))

    def consent_epoch(self) -> int:
        return int(self.call("consents", "consentEpoch"))

    def admit(self, account: LocalAccount, name: str, roles: Role) -> None:
        """Admits ``account`` by votes of the founders that are still members."""
        self._pass(lambda members: members.propose_add(account.address, name, roles))

    def remove(self, account: str) -> None:
        """Removes ``account`` by votes of the founders that are still members."""
        self._pass(lambda members: members.propose_remove(account), exclude=account)

    def set_roles(self, account: str, roles: Role) -> None:
        """Replaces the roles of ``account`` by votes of the founders that are still members."""
        self._pass(lambda members: members.propose_roles(account, roles))

    def _pass(
        self, propose: Callable[[Members], ProposalOutcome], exclude: str | None = None
    ) -> None:
        """Proposes with the first active founder and approves with the others until executed."""
        voters = [
            ledger
            for ledger in self.ledgers
            if ledger.address != exclude and ledger.members.is_member(ledger.address)
        ]
        outcome = propose(voters[0].members)
        for ledger in voters[1:]:
            if outcome.executed:
                break
            outcome = ledger.members.approve(outcome.proposal_id)
        assert outcome.executed


def deploy_consortium(
    chain: Chain,
    founders: Sequence[tuple[str, Role]] = DEFAULT_FOUNDERS,
    *,
    quorum_bps: int = QUORUM,
    lifetime: int = LIFETIME,
) -> Consortium:
    """Fresh founder keys, funded, and a fresh deployment by the first of them."""
    accounts = [new_account(chain) for _ in founders]
    deployment = deploy(
        chain,
        accounts[0],
        [
            Founder(to_checksum_address(a.address), name, roles)
            for a, (name, roles) in zip(accounts, founders, strict=True)
        ],
        quorum_bps=quorum_bps,
        proposal_lifetime=lifetime,
    )
    return Consortium(chain, deployment, accounts)


@contextmanager
def reverts(name: str, **expected: Any) -> Iterator[pytest.ExceptionInfo[ChainRevert]]:
    """Asserts that the block raises ChainRevert ``name`` whose arguments include ``expected``.

    Addresses compare checksummed; bytes32 arguments may be given as bytes.
    """
    with pytest.raises(ChainRevert) as info:
        yield info
    error = info.value
    assert error.name == name, f"expected {name}, got {error.name} {error.args_by_name}: {error}"
    for key, value in expected.items():
        assert key in error.args_by_name, f"{name} has no argument {key}: {error.args_by_name}"
        actual = error.args_by_name[key]
        if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
            value = to_checksum_address(value)
        assert actual == value, f"{name}.{key}: expected {value!r}, got {actual!r}"
