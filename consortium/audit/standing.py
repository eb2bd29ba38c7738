"""Membership and consent as of the block before each anchoring block, each fact read once for
as long as the chain shows it cannot have changed.

The standing checks need, per round, the state of the registries as of one block: the job's
parties and the owners of its datasets as members, each dataset's owner, and the consumer's
consent to each dataset it does not own. Read naively that is a call per fact per round.
:class:`StandingReader` reads a fact again only when it could have changed:

- **Nothing changed at all.** When the block before a round's anchor is the previous round's
  anchoring block, and that block held nothing but the previous round's anchoring transaction
  (``anchorRound`` only reads the registries), the registries' state is the one already read,
  and so is the job's round count: nothing is read, not even the probe or the epochs.
- **Nothing was taken away.** Otherwise the probe and the two epochs are read. Both registries
  bump their epoch on every change that can take a right away (removal, leaving, role change;
  revocation, a replaced consent); additions do not. So under an unchanged membership epoch an
  active member's record (its roles included) is still what was read, and under an unchanged
  consent epoch so is a granted consent; records that an addition could change (never or no
  longer a member, never granted) are read again. A dataset's owner never changes once
  registered. Each registry's epoch only discards its own records.

Blocks asked out of order (a damaged bundle's rounds) discard everything: facts are carried
forward in block order only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from eth_typing import ChecksumAddress

from consortium.audit.chainview import ChainView, StateUnavailable
from consortium.errors import ChainRevert
from consortium.ledger.consents import Consent
from consortium.ledger.members import MemberState


@dataclass(frozen=True)
class Standing:
    """The registries' state as of ``block`` for one round's accounts and the job's datasets.

    ``owners`` holds the datasets the consent registry knows, ``unknown`` the others with its
    revert; ``consents`` holds the consumer's consent for the job's purpose to each known
    dataset it does not own itself.
    """

    block: int
    members: Mapping[str, MemberState]
    owners: Mapping[int, ChecksumAddress]
    unknown: Mapping[int, str]
    consents: Mapping[int, Consent]


class StandingReader:
    """Reads :class:`Standing` for the rounds of one job, in block order, each fact once while
    it cannot have changed (see the module's description)."""

    def __init__(
        self, view: ChainView, job_id: int, consumer: ChecksumAddress, purpose: str
    ) -> None:
        self.view = view
        self.job_id = job_id
        self.consumer = consumer
        self.purpose = purpose
        self._block: int | None = None  # where the cached facts were last known to hold
        self._same_through = -1  # the registries held the same state through this block
        self._epochs: tuple[int, int] | None = None
        self._members: dict[str, MemberState] = {}
        self._owners: dict[int, ChecksumAddress] = {}
        self._unknown: dict[int, str] = {}
        self._consents: dict[int, Consent] = {}

    def read(
        self, round_number: int, block: int, accounts: Iterable[str], datasets: Sequence[int]
    ) -> Standing:
        """The state as of ``block``, the block before round ``round_number``'s anchor.

        Raises:
            StateUnavailable: the node cannot serve ``block``'s state, or does not serve its
                real state (the job's round count as of ``block`` is not ``round_number - 1``).
        """
        try:
            self._refresh(round_number, block)
            standing = self._collect(block, accounts, datasets)
        except StateUnavailable:
            self._forget()
            raise
        self._block = self._same_through = block
        return standing

    def unchanged_in(self, block: int) -> None:
        """Tells the reader that block ``block`` changed nothing in the registries (it held only
        an anchoring transaction). Only a block right after the state last read extends it."""
        if self._block is not None and self._same_through == block - 1:
            self._same_through = block

    # ------------------------------------------------------------------ what may have changed

    def _refresh(self, round_number: int, block: int) -> None:
        """Unless the registries are known unchanged since the last read, probes ``block`` and
        drops what may have changed since."""
        if self._block is not None and self._block <= block <= self._same_through:
            return  # the registries' state already read and probed: every fact holds
        if self._block is not None and block < self._block:
            self._forget()
        self._probe(round_number, block)
        epochs = self.view.epochs_at(block)
        previous = self._epochs or (-1, -1)
        self._members = (
            {a: s for a, s in self._members.items() if s.active} if epochs[0] == previous[0] else {}
        )
        self._consents = (
            {d: c for d, c in self._consents.items() if c.granted_at}
            if epochs[1] == previous[1]
            else {}
        )
        self._unknown = {}
        self._epochs = epochs

    def _probe(self, round_number: int, block: int) -> None:
        """The node serves ``block``'s real state: the job stood at the round before."""
        try:
            last = self.view.last_round_at(self.job_id, block)
        except ChainRevert as exc:
            raise StateUnavailable(
                f"the node reports no job {self.job_id} as of block {block} ({exc}), though "
                f"its round {round_number} was anchored in block {block + 1}: it does not "
                "serve that block's real state"
            ) from None
        if last != round_number - 1:
            raise StateUnavailable(
                f"the node reports job {self.job_id} at round {last} as of block {block}, "
                f"though round {round_number} was anchored in block {block + 1}: it does not "
                "serve that block's real state"
            )

    def _forget(self) -> None:
        self._block, self._same_through, self._epochs = None, -1, None
        self._members, self._owners, self._unknown, self._consents = {}, {}, {}, {}

    # ------------------------------------------------------------------ reading

    def _collect(self, block: int, accounts: Iterable[str], datasets: Sequence[int]) -> Standing:
        """The state as of ``block``: what is not known yet is read in at most four calls
        (the accounts, the owners, the owners that are no party, the consents)."""
        parties = list(dict.fromkeys(accounts))
        self._read_members(parties, block)
        self._read_owners(datasets, block)
        owners = {d: self._owners[d] for d in datasets if d in self._owners}
        self._read_members(owners.values(), block)
        needing_consent = [d for d, owner in owners.items() if owner != self.consumer]
        self._read_consents(needing_consent, block)
        return Standing(
            block,
            {a: self._members[a] for a in [*parties, *owners.values()]},
            owners,
            {d: self._unknown[d] for d in datasets if d in self._unknown},
            {d: self._consents[d] for d in needing_consent},
        )

    def _read_members(self, accounts: Iterable[str], block: int) -> None:
        missing = [a for a in dict.fromkeys(accounts) if a not in self._members]
        if missing:
            self._members.update(self.view.members_at(missing, block))

    def _read_owners(self, datasets: Sequence[int], block: int) -> None:
        missing = [
            d for d in dict.fromkeys(datasets) if d not in self._owners and d not in self._unknown
        ]
        if not missing:
            return
        for dataset_id, owner in self.view.dataset_owners_at(missing, block).items():
            if owner is None:
                self._unknown[dataset_id] = "the consent registry has no such dataset"
            else:
                self._owners[dataset_id] = owner

    def _read_consents(self, datasets: Sequence[int], block: int) -> None:
        missing = [d for d in datasets if d not in self._consents]
        if missing:
            self._consents.update(
                self.view.consents_at(missing, self.consumer, self.purpose, block)
            )
