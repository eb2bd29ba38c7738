"""The chain as the auditor reads it: the trusted ledger's state, now and as of past blocks.

Everything the auditor believes comes from here or from recomputation, never from the bundle's
say-so. The ledger address is the one the auditor trusts (pinned, or the manifest's); the
registry and consent registry addresses are read from the ledger itself (its immutables), so
a bundle cannot point the auditor at a look-alike registry.

Reads here only use view functions, single receipts and single blocks. The one scan of logs
the audit makes, of the registries' events for the ``events`` check, goes through
:mod:`consortium.audit.timeline` in bounded block ranges from the deployment block: on the
embedded chain a scan costs time quadratic in the number of events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3Exception
from web3.logs import DISCARD
from web3.types import TxReceipt

from consortium.chain.artifacts import load_artifact
from consortium.chain.base import Chain
from consortium.errors import ChainRevert, ChainUnavailable, ConsortiumError
from consortium.ledger.client import Ledger
from consortium.ledger.consents import Consent
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import Job
from consortium.ledger.members import MemberState


class StateUnavailable(ConsortiumError):
    """The node cannot (or will not truthfully) serve the state of a past block."""


@dataclass(frozen=True)
class BlockFacts:
    """What the audit needs of one block: its time and which transactions it holds."""

    number: int
    timestamp: int
    transactions: tuple[str, ...]  # 0x-prefixed hashes, in block order


@dataclass(frozen=True)
class AnchorTransaction:
    """The receipt of a round's ``anchorRound`` transaction, as the chain has it."""

    status: int
    block_number: int
    to: str | None
    events: tuple[dict[str, Any], ...]  # RoundAnchored args emitted by the trusted ledger


class ChainView:
    """Reads of one TrainingLedger deployment through a :class:`Ledger` without a signer.

    Construction reads the registry and consent registry addresses from the ledger's
    immutables; when that fails (no contract at the address) the given fallbacks are used and
    :attr:`linked` stays False, which the deployment check reports.
    """

    def __init__(
        self,
        chain: Chain,
        ledger_address: ChecksumAddress,
        fallback: Deployment,
    ) -> None:
        self.chain = chain
        self.ledger_address = ledger_address
        training = chain.w3.eth.contract(
            address=ledger_address, abi=load_artifact("TrainingLedger").abi
        )
        self.linked = True
        self.link_error = ""
        try:
            registry = to_checksum_address(training.functions.registry().call())
            consents = to_checksum_address(training.functions.consents().call())
        except (Web3Exception, ValueError, OSError) as exc:
            self.linked = False
            self.link_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            registry, consents = fallback.registry, fallback.consents
        self._block: BlockFacts | None = None  # the last block read, asked for again
        self.deployment = Deployment(
            chain_id=chain.chain_id,
            registry=registry,
            consents=consents,
            ledger=ledger_address,
            block_number=fallback.block_number,
            deployer=fallback.deployer,
        )
        self.ledger = Ledger(chain, self.deployment)

    # ---------------------------------------------------------------- present state

    def code(self, address: str) -> bytes:
        """The runtime code at ``address`` now."""
        try:
            return bytes(self.chain.w3.eth.get_code(to_checksum_address(address)))
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainUnavailable(f"cannot read the code at {address}: {exc}") from None

    def job(self, job_id: int) -> Job:
        """The job as ``getJob`` returns it now (ChainRevert ``UnknownJob`` if it has none)."""
        return self.ledger.jobs.get(job_id)

    def round_commitment(self, job_id: int, round_number: int) -> bytes:
        """The stored commitment (ChainRevert ``UnknownRound`` for an unanchored round)."""
        return self.ledger.jobs.round_commitment(job_id, round_number)

    def anchor_transaction(self, tx_hash: str) -> AnchorTransaction | None:
        """The receipt of ``tx_hash`` with the RoundAnchored events the ledger emitted in it;
        None when the chain knows no such transaction."""
        try:
            receipt: TxReceipt = self.chain.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainUnavailable(f"cannot read the receipt of {tx_hash}: {exc}") from None
        events = [
            dict(event["args"])
            for event in self.ledger.training.events.RoundAnchored().process_receipt(
                receipt, errors=DISCARD
            )
            if to_checksum_address(event["address"]) == self.ledger_address
        ]
        to = receipt.get("to")
        return AnchorTransaction(
            status=int(receipt["status"]),
            block_number=int(receipt["blockNumber"]),
            to=None if to is None else to_checksum_address(to),
            events=tuple(events),
        )

    def block(self, number: int) -> BlockFacts:
        """Block ``number``'s time and transactions. The last block read is kept: the
        transaction check reads an anchoring block and the standing reads then ask again
        whether it held anything but the anchor."""
        if self._block is not None and self._block.number == number:
            return self._block
        try:
            raw = self.chain.w3.eth.get_block(number)
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainUnavailable(f"cannot read block {number}: {exc}") from None
        self._block = BlockFacts(
            number=number,
            timestamp=int(raw["timestamp"]),
            transactions=tuple(HexBytes(tx).to_0x_hex() for tx in raw["transactions"]),
        )
        return self._block

    def creator(self, address: str, block: int) -> ChecksumAddress | None:
        """The sender of the transaction in block ``block`` that created the contract at
        ``address``, or None when none of that block's transactions created it (one block and
        the receipts of its contract creations are read)."""
        target = to_checksum_address(address)
        try:
            raw = self.chain.w3.eth.get_block(block, full_transactions=True)
        except BlockNotFound:
            return None
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainUnavailable(f"cannot read block {block}: {exc}") from None
        try:
            for tx in raw["transactions"]:
                if tx.get("to"):  # a creation has none (eth-tester gives an empty one)
                    continue
                receipt = self.chain.w3.eth.get_transaction_receipt(tx["hash"])
                created = receipt.get("contractAddress")
                if created is not None and to_checksum_address(created) == target:
                    return to_checksum_address(tx["from"])
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainUnavailable(f"cannot read a receipt of block {block}: {exc}") from None
        return None

    # ---------------------------------------------------------------- past state

    def _past(self, fn: Any, block: int, *, reverts: bool = False) -> Any:
        """``fn`` called as of ``block`` (see :meth:`_as_of`)."""
        with self._as_of(block, fn.fn_name, reverts=reverts):
            return self.ledger.call(fn, block)

    @contextmanager
    def _as_of(self, block: int, view: str, *, reverts: bool = False) -> Iterator[None]:
        """Reads of ``view`` as of ``block``; a node that cannot serve them is StateUnavailable.

        For a view that can revert (``reverts``), a revert (ChainRevert) is an answer and
        passes through unchanged. The committed code of every other view never reverts, so a
        revert from one is the node's doing and is StateUnavailable too.
        """
        try:
            yield
        except ChainUnavailable as exc:
            raise StateUnavailable(
                f"the node cannot serve the state of block {block} (it needs the history an "
                f"archive node keeps): {exc}"
            ) from None
        except ChainRevert as exc:
            if reverts:
                raise
            raise StateUnavailable(
                f"the node answers {view} as of block {block} with a revert the "
                f"committed contract cannot give ({exc})"
            ) from None

    def last_round_at(self, job_id: int, block: int) -> int:
        """The job's last anchored round as of ``block``: the probe that tells a node serving
        real past state from one that silently answers with today's (or an empty) state.
        ChainRevert ``UnknownJob`` if the job did not exist as of ``block``."""
        fn = self.ledger.training.functions.jobProgress(job_id)  # the job's small view
        return int(self._past(fn, block, reverts=True)[1])

    def epochs_at(self, block: int) -> tuple[int, int]:
        """(membership epoch, consent epoch) as of ``block``."""
        membership = self._past(self.ledger.registry.functions.membershipEpoch(), block)
        consent = self._past(self.ledger.consent_registry.functions.consentEpoch(), block)
        return int(membership), int(consent)

    def members_at(self, accounts: Sequence[str], block: int) -> dict[str, MemberState]:
        """Each account's standing as of ``block``, in one call (``getMembers``)."""
        with self._as_of(block, "getMembers"):
            return self.ledger.members.states(accounts, block)

    def dataset_owners_at(
        self, dataset_ids: Sequence[int], block: int
    ) -> dict[int, ChecksumAddress | None]:
        """Each dataset's owner as of ``block`` (None: not registered then), in one call."""
        with self._as_of(block, "ownersOf"):
            return self.ledger.consents.owners(dataset_ids, block)

    def consents_at(
        self, dataset_ids: Sequence[int], grantee: str, purpose: str, block: int
    ) -> dict[int, Consent]:
        """The consent record of each dataset for ``grantee`` and ``purpose`` as of ``block``
        (``granted_at`` 0: never granted), in one call (``getConsents``)."""
        with self._as_of(block, "getConsents"):
            return self.ledger.consents.many(dataset_ids, grantee, purpose, block)

    @property
    def training(self) -> Contract:
        return self.ledger.training
