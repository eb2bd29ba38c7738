"""Membership: who is in, in which roles, and the proposals that change it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from web3.types import BlockIdentifier, TxReceipt

from consortium.errors import UsageError
from consortium.ledger.roles import Role
from consortium.ledger.values import address

if TYPE_CHECKING:
    from consortium.ledger.client import Ledger


class ProposalKind(Enum):
    """What a proposal changes; values match the contract's enum."""

    ADD_MEMBER = 0
    REMOVE_MEMBER = 1
    CHANGE_ROLES = 2
    CHANGE_QUORUM = 3


@dataclass(frozen=True)
class Member:
    """A member as recorded on chain."""

    address: ChecksumAddress
    name: str
    roles: Role
    active: bool
    joined_at: int


@dataclass(frozen=True)
class MemberState:
    """An account's standing in the registry, as the contracts' role checks read it; an
    account that never joined has one too (``ever_joined`` False)."""

    active: bool
    roles: Role
    ever_joined: bool

    @property
    def is_provider(self) -> bool:
        """What ``hasRole(account, PROVIDER)`` answers: an active member with that role."""
        return self.active and Role.PROVIDER in self.roles


@dataclass(frozen=True)
class Proposal:
    """A membership proposal and where it stands now."""

    id: int
    kind: ProposalKind
    status: str  # "pending", "executed" or "expired"
    account: ChecksumAddress | None
    name: str
    roles: Role
    quorum_bps: int
    proposer: ChecksumAddress
    created_at: int
    expires_at: int
    approvals: int
    needed: int

    def describe(self) -> str:
        """One line saying what the proposal would change."""
        match self.kind:
            case ProposalKind.ADD_MEMBER:
                return f"add {self.name} {self.account} as {self.roles.describe()}"
            case ProposalKind.REMOVE_MEMBER:
                return f"remove {self.account}"
            case ProposalKind.CHANGE_ROLES:
                return f"set roles of {self.account} to {self.roles.describe()}"
            case ProposalKind.CHANGE_QUORUM:
                return f"set quorum to {self.quorum_bps} bps"


@dataclass(frozen=True)
class ProposalOutcome:
    """What a propose or approve transaction did."""

    proposal_id: int
    executed: bool
    receipt: TxReceipt


class Members:
    """Membership reads and the proposal workflow of one :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._registry = ledger.registry

    # ------------------------------------------------------------ proposals

    def propose_add(self, account: str, name: str, roles: Role) -> ProposalOutcome:
        """Proposes to admit ``account``; executes at once if the caller's vote is enough."""
        fn = self._registry.functions.proposeAddMember(address(account), name, int(roles))
        return self._proposed(fn)

    def propose_remove(self, account: str) -> ProposalOutcome:
        """Proposes to remove member ``account``."""
        return self._proposed(self._registry.functions.proposeRemoveMember(address(account)))

    def propose_roles(self, account: str, roles: Role) -> ProposalOutcome:
        """Proposes to replace the roles of ``account``."""
        fn = self._registry.functions.proposeChangeRoles(address(account), int(roles))
        return self._proposed(fn)

    def propose_quorum(self, quorum_bps: int) -> ProposalOutcome:
        """Proposes a new quorum in basis points (0 to 9999)."""
        if not 0 <= quorum_bps < 10_000:
            raise UsageError(f"quorum must be 0 to 9999 basis points, got {quorum_bps}")
        return self._proposed(self._registry.functions.proposeChangeQuorum(quorum_bps))

    def approve(self, proposal_id: int) -> ProposalOutcome:
        """Approves a proposal; it executes when this approval reaches the quorum."""
        receipt = self._ledger.send(self._registry.functions.approve(proposal_id))
        return ProposalOutcome(proposal_id, self._executed(receipt), receipt)

    def execute(self, proposal_id: int) -> TxReceipt:
        """Executes a proposal that has reached its quorum (e.g. after members left)."""
        return self._ledger.send(self._registry.functions.execute(proposal_id))

    def leave(self) -> TxReceipt:
        """The signer leaves the consortium."""
        return self._ledger.send(self._registry.functions.leave())

    def _proposed(self, fn: object) -> ProposalOutcome:
        receipt = self._ledger.send(fn)  # type: ignore[arg-type]
        (created,) = self._ledger.events(self._registry, "ProposalCreated", receipt)
        return ProposalOutcome(created["args"]["id"], self._executed(receipt), receipt)

    def _executed(self, receipt: TxReceipt) -> bool:
        return bool(self._ledger.events(self._registry, "ProposalExecuted", receipt))

    # ------------------------------------------------------------ reads

    def get(self, account: str) -> Member:
        """The member record of ``account``; an address that never joined is an error."""
        member = address(account)
        name, roles, active, epoch, joined_at = self._ledger.call(
            self._registry.functions.getMember(member)
        )
        if epoch == 0:
            raise UsageError(f"{member} has never been a member")
        return Member(member, name, Role(roles), active, joined_at)

    def all(self, *, include_inactive: bool = False) -> list[Member]:
        """Members in the order they first joined."""
        addresses = self._ledger.call(self._registry.functions.memberAddresses())
        members = [self.get(a) for a in addresses]
        return [m for m in members if include_inactive or m.active]

    def states(
        self, accounts: Sequence[str], block: BlockIdentifier = "latest"
    ) -> dict[str, MemberState]:
        """Each of ``accounts``' standing (as of ``block``), keyed as given, in one call
        (``getMembers``)."""
        fn = self._registry.functions.getMembers([address(a) for a in accounts])
        return {
            account: MemberState(active=bool(active), roles=Role(roles), ever_joined=epoch != 0)
            for account, (_name, roles, active, epoch, _joined_at) in zip(
                accounts, self._ledger.call(fn, block), strict=True
            )
        }

    def is_member(self, account: str) -> bool:
        return bool(self._ledger.call(self._registry.functions.isMember(address(account))))

    def has_role(self, account: str, role: Role) -> bool:
        fn = self._registry.functions.hasRole(address(account), int(role))
        return bool(self._ledger.call(fn))

    def quorum_bps(self) -> int:
        return int(self._ledger.call(self._registry.functions.quorumBps()))

    def proposal(self, proposal_id: int) -> Proposal:
        """Proposal ``proposal_id`` with its live approval count."""
        registry = self._registry.functions
        raw = self._ledger.call(registry.getProposal(proposal_id))
        kind, status, account, roles, quorum, created_at, expires_at, proposer, name = raw
        approvals = self._ledger.call(registry.approvals(proposal_id))
        needed = self._ledger.call(registry.neededApprovals())
        if status == 2:
            state = "executed"
        elif self._ledger.now() > expires_at:
            state = "expired"
        else:
            state = "pending"
        return Proposal(
            id=proposal_id,
            kind=ProposalKind(kind),
            status=state,
            account=None if int(account, 16) == 0 else to_checksum_address(account),
            name=name,
            roles=Role(roles),
            quorum_bps=quorum,
            proposer=to_checksum_address(proposer),
            created_at=created_at,
            expires_at=expires_at,
            approvals=approvals,
            needed=needed,
        )

    def proposals(self) -> list[Proposal]:
        """Every proposal, oldest first."""
        count = self._ledger.call(self._registry.functions.proposalCount())
        return [self.proposal(i) for i in range(1, count + 1)]

    def open_proposal_for(
        self,
        kind: ProposalKind,
        *,
        account: str | None = None,
        name: str = "",
        roles: int = 0,
        quorum_bps: int = 0,
    ) -> Proposal | None:
        """The oldest pending proposal that would make exactly this change, if any.

        Lets a re-run of a propose command find the proposal its first run opened instead of
        opening a duplicate that would need its own round of votes.
        """
        wanted = None if account is None else address(account)
        for proposal in self.proposals():
            if (
                proposal.status == "pending"
                and proposal.kind == kind
                and proposal.account == wanted
                and proposal.name == name
                and proposal.roles == roles
                and proposal.quorum_bps == quorum_bps
            ):
                return proposal
        return None

    def has_approved(self, proposal_id: int, voter: str) -> bool:
        """Whether ``voter``'s approval of ``proposal_id`` currently counts."""
        fn = self._registry.functions.hasApproved(proposal_id, address(voter))
        return bool(self._ledger.call(fn))
