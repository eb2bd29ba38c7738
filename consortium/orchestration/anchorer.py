"""Anchoring a round's intent on chain, crash-safe; it knows nothing of models or protocols.

The :class:`ChainAnchorer` is the ledger side of the round engine: it reads the job's terms,
progress and standing, refuses a round the contract would reject, and anchors an intent by the
write-ahead rule (DESIGN.md, step 5): the signed transaction is journaled before it is sent, a
journaled attempt is looked up before anything is signed again, a transaction the node lost is
sent again as signed, and the mined anchor is checked against the intent. The
:class:`NullAnchorer` is the same interface with the ledger switched off: the baseline the
benchmarks measure anchoring against.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from hexbytes import HexBytes

from consortium.chain.transact import GAS_MARGIN_PERCENT, SignedTransaction
from consortium.errors import ConsortiumError, TransactionRejected
from consortium.faults import crash_point
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import (
    Job,
    JobProgress,
    RoundAnchor,
    mask_participants,
    participant_mask,
)
from consortium.orchestration import journal_entries
from consortium.orchestration.journal_entries import AnchorMined, AnchorSigned, JobBinding
from consortium.protocol.base import RoundIntent, RoundRefused, Standing
from consortium.store.journal import Journal


class JournalMismatch(ConsortiumError):
    """The chain and the coordinator's journal disagree about a round: an alarm."""


class Anchorer(Protocol):
    """What the round engine needs of the ledger side."""

    def binding(self) -> JobBinding:
        """What the journal's first entry ties the journal to (job, ledger, chain)."""
        ...

    def job(self) -> Job: ...

    def progress(self) -> JobProgress: ...

    def dataset_owners(self, job: Job) -> dict[int, str]: ...

    def preflight(self, job: Job, progress: JobProgress, round_number: int) -> Standing:
        """The job's standing now; RoundRefused if round ``round_number``'s anchor would be
        rejected."""
        ...

    def send(self, intent: RoundIntent, journal: Journal, chain_round: int) -> None:
        """Sends the anchor of the oldest round in flight, unless it went out already."""
        ...

    def send_ahead(self, intent: RoundIntent, journal: Journal) -> bool:
        """Sends the intent's anchor before the previous round's is mined, if it safely can;
        whether it did. :meth:`anchor` then awaits it."""
        ...

    def anchor(self, intent: RoundIntent, journal: Journal, chain_round: int) -> AnchorMined:
        """The intent anchored: found if already mined, else (re)sent and awaited.
        ``chain_round`` is the chain's last anchored round as the engine last read it."""
        ...


class ChainAnchorer:
    """Anchors the rounds of job ``job_id`` through ``ledger``, whose signer coordinates it."""

    def __init__(self, ledger: Ledger, job_id: int) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self._terms: Job | None = None
        self._owners: dict[int, str] | None = None
        # Rounds whose preflight found the contract's fast path (no membership or consent
        # change since the job's last full check), and the gas limit such an anchor needs: its
        # gas does not depend on the round or the number of participants, so it is estimated
        # once, and a later anchor on the fast path is signed without the estimate's request.
        self._fast_rounds: set[int] = set()
        self._fast_gas: int | None = None
        # Anchors are signed and sent one at a time, in round order (their nonces follow the
        # rounds), from whichever thread gets there first (see send_ahead).
        self._sending = threading.Lock()
        self._last_sent: int | None = None
        self._sent: set[HexBytes] = set()

    def binding(self) -> JobBinding:
        return JobBinding.for_ledger(self.ledger, self.job_id)

    def job(self) -> Job:
        """The job as created: participants, datasets, consumer and purpose never change, so
        they are read once; what does change comes from :meth:`progress` every round."""
        if self._terms is None:
            self._terms = self.ledger.jobs.get(self.job_id)
        return self._terms

    def progress(self) -> JobProgress:
        return self.ledger.jobs.progress(self.job_id)

    def dataset_owners(self, job: Job) -> dict[int, str]:
        """Who owns each of the job's datasets; read once, in one call, since ownership never
        changes (and every dataset of a job was registered when the job was created)."""
        if self._owners is None:
            owners = self.ledger.consents.owners(job.dataset_ids)
            unknown = sorted(d for d, owner in owners.items() if owner is None)
            if unknown:
                raise RoundRefused(f"job {job.id} names unregistered datasets {unknown}")
            self._owners = {d: owner for d, owner in owners.items() if owner is not None}
        return self._owners

    def preflight(self, job: Job, progress: JobProgress, round_number: int) -> Standing:
        """The job's standing on chain now; refuses a round whose anchor the contract would
        reject, saying why."""
        if progress.status != "open":
            raise RoundRefused(f"job {job.id} is {progress.status}")
        owners = self.dataset_owners(job)
        if progress.check_still_holds:
            # A round of the participants of the last check, or some of them (one may send no
            # usable update), needs no check of its own: its anchor's gas is known.
            self._fast_rounds.add(round_number)
            return Standing.unchanged(job, progress.checked_participants, owners)
        self._fast_rounds.discard(round_number)
        standing = Standing.read(self.ledger, job, owners)
        # A participant who left, or whose data lost its consent, is left out of the round
        # (the protocol refuses its update, and the anchor names the others); a dataset of
        # someone who takes no part in the job stands in every round's way.
        outside = [
            f"consent for dataset {d} (owner {owner}, no participant) to {job.consumer} for "
            f"{job.purpose!r} is not valid now (revoked, outside its window, or its owner no "
            "longer an active provider)"
            for d, owner in owners.items()
            if d not in standing.usable_datasets and owner not in job.participants
        ]
        if outside:
            raise RoundRefused(
                f"round {round_number} refused: {'; '.join(outside)}; the contract accepts no "
                f"anchor for job {job.id} until this is undone"
            )
        return standing

    def send_ahead(self, intent: RoundIntent, journal: Journal) -> bool:
        """Signs and sends the round's anchor now, before the round before it is mined, when
        nothing needs the chain's answer first: the round is on the fast path with its gas
        known (so no estimate has to run on a state the previous anchor has not reached yet),
        and the round before was sent by this anchorer (so the nonces follow the rounds).
        Several anchors then land in one block; :meth:`anchor` later awaits this one."""
        with self._sending:
            if not (
                intent.round in self._fast_rounds
                and self._fast_gas is not None
                and self._last_sent == intent.round - 1
                and not journal_entries.signed_attempts(journal, intent.round)
            ):
                return False
            self._sign_and_send(intent, journal, self._fast_gas)
        return True

    def send(self, intent: RoundIntent, journal: Journal, chain_round: int) -> None:
        """Signs and sends the round's anchor unless an attempt is journaled already. For the
        oldest round in flight: every round before it is mined, so an estimate, where one is
        needed, runs on the state the anchor will meet."""
        with self._sending:
            if journal_entries.signed_attempts(journal, intent.round):
                return
            if chain_round >= intent.round:
                raise self._foreign_anchor(intent.round)
            fast = intent.round in self._fast_rounds
            self._sign_and_send(intent, journal, self._fast_gas if fast else None)

    def anchor(self, intent: RoundIntent, journal: Journal, chain_round: int) -> AnchorMined:
        round_number = intent.round
        transactor = self.ledger.transactor
        self.send(intent, journal, chain_round)
        journaled = [
            attempt.transaction
            for attempt in journal_entries.signed_attempts(journal, round_number)
        ]
        if journaled[-1].tx_hash in self._sent:
            receipt = transactor.confirm(journaled[-1].tx_hash)  # sent by this anchorer
        else:
            receipt = self._settle(journaled)
        if receipt is None:  # every journaled attempt is dead
            if self.progress().last_round >= round_number:
                raise self._foreign_anchor(round_number)
            # Estimated again, so that an anchor the chain still refuses says why.
            with self._sending:
                signed = self._sign_and_send(intent, journal, None)
            receipt = transactor.confirm(signed.tx_hash)
        anchor = self.ledger.jobs.anchor_in(receipt)
        _check_anchor(anchor, intent, self.job())
        if round_number in self._fast_rounds and self._fast_gas is None:
            used = int(receipt["gasUsed"])
            self._fast_gas = used + used * GAS_MARGIN_PERCENT // 100
        mined = AnchorMined(
            anchor, HexBytes(receipt["transactionHash"]).to_0x_hex(), int(receipt["gasUsed"])
        )
        journaled_anchor = journal_entries.last_anchored(journal, round_number)
        # A resent anchor is mined in another block than the one journaled before the node
        # lost it: the newest entry must name the anchor the chain now holds.
        if journaled_anchor is None or journaled_anchor.anchor != anchor:
            journal_entries.record(journal, mined)
        crash_point("anchored", round_number)
        return mined

    def _foreign_anchor(self, round_number: int) -> JournalMismatch:
        return JournalMismatch(
            f"round {round_number} of job {self.job_id} is anchored on chain by a "
            "transaction this coordinator's journal does not know"
        )

    def _sign_and_send(
        self, intent: RoundIntent, journal: Journal, gas: int | None
    ) -> SignedTransaction:
        """Signs the anchor, journals it, then sends it (the write-ahead rule); under
        ``_sending``, so that anchors go out in round order."""
        round_number = intent.round
        mask = participant_mask(self.job().participants, intent.participants)
        signed = self.ledger.jobs.sign_anchor(
            self.job_id, round_number, intent.root, mask, intent.model, intent.metrics, gas=gas
        )
        journal_entries.record(journal, AnchorSigned(round_number, signed))
        crash_point("signed", round_number)
        self.ledger.transactor.broadcast(signed)
        self._last_sent = round_number
        self._sent.add(signed.tx_hash)
        crash_point("sent", round_number)
        return signed

    def _settle(self, journaled: list[SignedTransaction]) -> Any:
        """The receipt of the round's journaled anchor transaction, resending the newest live
        one if the node lost it; None when none can be mined any more (its nonce went
        elsewhere, or every attempt was mined and failed, as an anchor signed with a known
        gas limit does when the job changed under it).

        Every journaled attempt is looked up, not only the newest: an older one that the node
        rejected on resend may still have been mined from another node's pool.
        """
        transactor = self.ledger.transactor
        receipts = [transactor.receipt(signed.tx_hash) for signed in journaled]
        for receipt in reversed(receipts):
            if receipt is not None and receipt["status"] == 1:
                return receipt
        alive = [s for s, receipt in zip(journaled, receipts, strict=True) if receipt is None]
        if not alive:
            return None
        for signed in reversed(alive):
            if transactor.is_known(signed.tx_hash):  # pending: wait for it
                return transactor.confirm(signed.tx_hash)
        newest = alive[-1]
        try:
            transactor.broadcast(newest)  # lost (a node restart empties its pool): resend
        except TransactionRejected:
            # Mined between the look-up and the resend ("nonce too low"), or truly dead.
            return (
                transactor.confirm(newest.tx_hash) if transactor.is_known(newest.tx_hash) else None
            )
        return transactor.confirm(newest.tx_hash)


def _check_anchor(anchor: RoundAnchor, intent: RoundIntent, job: Job) -> None:
    """The mined anchor is the intended one. The anchor comes from the contract's own
    ``RoundAnchored`` event, emitted with the commitment it stored in the same call, so no
    read-back is needed; every participant reads the stored commitment anyway."""
    mined = (
        anchor.round,
        anchor.merkle_root,
        anchor.participant_count,
        set(mask_participants(job.participants, anchor.participant_mask)),
        anchor.model_digest,
        anchor.metrics_digest,
    )
    meant = (intent.round, intent.root, intent.count, set(intent.participants))
    if mined != (*meant, intent.model, intent.metrics):
        raise JournalMismatch(
            f"round {anchor.round} of job {anchor.job_id}: the chain holds another anchor "
            "than the journal's intent"
        )


class NullAnchorer:
    """The ledger switched off: the job lives in memory, and an anchor is the intent itself
    with no block, no transaction and no gas. The engine runs the same rounds over it, so the
    difference to a :class:`ChainAnchorer` run is what anchoring costs."""

    def __init__(self, job: Job) -> None:
        """``job``'s terms; its rounds start afresh from its initial model."""
        self._job = job
        everyone = participant_mask(job.participants, job.participants)
        self._progress = JobProgress("open", 0, job.initial_model_digest, everyone, True)

    def binding(self) -> JobBinding:
        return JobBinding(self._job.id, None, None)

    def job(self) -> Job:
        return self._job

    def progress(self) -> JobProgress:
        return self._progress

    def dataset_owners(self, job: Job) -> dict[int, str]:
        return {}

    def preflight(self, job: Job, progress: JobProgress, round_number: int) -> Standing:
        return Standing.unchanged(job, progress.checked_participants, {})

    def send(self, intent: RoundIntent, journal: Journal, chain_round: int) -> None:
        """Nothing to send."""

    def send_ahead(self, intent: RoundIntent, journal: Journal) -> bool:
        return False

    def anchor(self, intent: RoundIntent, journal: Journal, chain_round: int) -> AnchorMined:
        previous = self._progress.head_model_digest
        mask = participant_mask(self._job.participants, intent.participants)
        anchor = RoundAnchor(
            self._job.id, intent.round, intent.root, intent.count, mask, intent.model,
            intent.metrics, previous, 0, 0,
        )  # fmt: skip
        self._progress = JobProgress("open", intent.round, intent.model, mask, True)
        return AnchorMined(anchor, "", 0)
