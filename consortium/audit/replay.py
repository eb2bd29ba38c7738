"""The registries' state as their events tell it: membership and consent, replayed from events.

The ``events`` check compares this with the state the contracts hold (see
:func:`consortium.audit.checks.check_events`). Replaying is a fold over the events in block
order, with nothing read from anywhere: the events come from
:class:`consortium.audit.timeline.RegistryEvents`, and a test can feed any list of its own.

What each event implies follows the contracts: ``MemberAdded`` makes an account an active
member with the given roles (and a member ever after), ``MemberRemoved`` and ``MemberLeft``
make it inactive and keep its roles, ``RolesChanged`` sets its roles; ``DatasetRegistered``
names a dataset's owner for good; ``ConsentGranted`` sets (or replaces) a consent's window
and clears its revocation, ``ConsentRevoked`` revokes it. Events of other kinds (quorum,
subjects roots, ``SignedGrantsCancelled``, which only voids signatures not yet relayed) change
nothing the standing checks read, and are passed over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address

from consortium.audit.timeline import ChainEvent
from consortium.ledger.members import MemberState
from consortium.ledger.roles import Role
from consortium.ledger.values import decode_purpose

NEVER_A_MEMBER = MemberState(active=False, roles=Role(0), ever_joined=False)


@dataclass(frozen=True)
class ConsentTerms:
    """A consent as its events describe it (the events do not carry ``grantedAt``)."""

    valid_from: int
    valid_until: int
    revoked: bool


ConsentKey = tuple[int, ChecksumAddress, str]  # dataset id, grantee, purpose label


@dataclass
class ImpliedState:
    """Membership, dataset owners and consents implied by the events applied so far."""

    members: dict[ChecksumAddress, MemberState] = field(default_factory=dict)
    owners: dict[int, ChecksumAddress] = field(default_factory=dict)
    consents: dict[ConsentKey, ConsentTerms] = field(default_factory=dict)

    def member(self, account: str) -> MemberState:
        """The account's standing as the events tell it (never a member if they never name it)."""
        return self.members.get(to_checksum_address(account), NEVER_A_MEMBER)

    def consent(self, dataset_id: int, grantee: str, purpose: str) -> ConsentTerms | None:
        """The consent for the triple, or None if no event ever granted it."""
        return self.consents.get((dataset_id, to_checksum_address(grantee), purpose))

    def apply(self, events: Iterable[ChainEvent]) -> None:
        """Applies ``events`` (in block and log order) on top of the state so far."""
        for event in events:
            self._apply(event.name, event.args)

    def _apply(self, name: str, args: Mapping[str, Any]) -> None:
        if name in ("MemberAdded", "MemberRemoved", "MemberLeft", "RolesChanged"):
            account = to_checksum_address(args["account"])
            before = self.members.get(account, NEVER_A_MEMBER)
            if name == "MemberAdded":
                self.members[account] = MemberState(True, Role(args["roles"]), True)
            elif name == "RolesChanged":
                self.members[account] = replace(before, roles=Role(args["roles"]))
            else:
                self.members[account] = replace(before, active=False)
        elif name == "DatasetRegistered":
            self.owners[int(args["datasetId"])] = to_checksum_address(args["owner"])
        elif name in ("ConsentGranted", "ConsentRevoked"):
            key = (
                int(args["datasetId"]),
                to_checksum_address(args["grantee"]),
                decode_purpose(bytes(args["purpose"])),
            )
            if name == "ConsentGranted":
                self.consents[key] = ConsentTerms(
                    int(args["validFrom"]), int(args["validUntil"]), revoked=False
                )
            elif key in self.consents:
                self.consents[key] = replace(self.consents[key], revoked=True)
