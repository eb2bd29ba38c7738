"""The coordinator: runs the rounds of one job and anchors each, crash-safe (DESIGN.md, steps 1-6).

Write-ahead: nothing is anchored before the artifacts it commits to are durable in the
coordinator's store and the intent to anchor them is in its journal; the signed anchor
transaction is journaled before it is sent. On (re)start every round reads the chain first
(is it anchored, with which commitment?) and then the journal, and picks up where the
interrupted run stopped: it never anchors a round twice, resends an anchor transaction that
the node lost, and redoes a round whose intent was never written. Training is deterministic,
so a redone round produces the same records, root and model as the lost attempt would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from hexbytes import HexBytes

from consortium.chain.transact import SignedTransaction
from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord, sort_key
from consortium.errors import ConsortiumError, TransactionRejected
from consortium.faults import crash_point
from consortium.fl.aggregation import fedavg
from consortium.fl.data import LabeledTable
from consortium.fl.metrics import binary_metrics
from consortium.fl.model import Model, predict_proba
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Job, JobProgress, RoundAnchor
from consortium.protocol.fedavg.checks import (
    RoundContext,
    Standing,
    UpdateRefused,
    check_submission,
    update_allowance,
)
from consortium.protocol.messages import (
    RoundOpen,
    RoundReceipt,
    UpdateSubmission,
    anchor_from_json,
    anchor_to_json,
    pack_objects,
)
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.store.models import get_model, model_objects, put_model

MAX_REASON = 500


class RoundRefused(ConsortiumError):
    """The round cannot run: the chain would refuse its anchor, or no update was usable."""


class ReceiptsFailed(ConsortiumError):
    """A participant raised an alarm over its receipt, or could not be given one."""


class JournalMismatch(ConsortiumError):
    """The chain and the coordinator's journal disagree about a round: an alarm."""


class Transport(Protocol):
    """How the coordinator reaches participants; it sends nothing but protocol messages."""

    def open_round(self, participant: str, message: RoundOpen) -> UpdateSubmission: ...

    def deliver(self, participant: str, receipt: RoundReceipt) -> None: ...


@dataclass
class RoundResult:
    """One anchored round, as the round table shows it."""

    round: int
    anchor: RoundAnchor
    tx_hash: str
    gas_used: int
    metrics: dict[str, Any]
    refused: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    resumed: bool = False


class Coordinator:
    """Runs the rounds of job ``job_id`` as its coordinator."""

    def __init__(
        self,
        ledger: Ledger,
        job_id: int,
        store: ArtifactStore,
        journal: Journal,
        transport: Transport,
        validation: LabeledTable,
    ) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self.store = store
        self.journal = journal
        self.transport = transport
        self.validation = validation
        self.domain = Domain(ledger.chain.chain_id, ledger.deployment.ledger)
        self._terms: Job | None = None
        self._owners: dict[int, str] | None = None

    def run(
        self, rounds: int, on_round: Callable[[RoundResult], None] = lambda result: None
    ) -> list[RoundResult]:
        """Runs (or finishes) rounds 1..``rounds``; rounds already done are reported as such.

        The chain, not the journal, says which rounds are done: a round the journal calls
        delivered is taken from the journal only while the chain still holds its anchor. A
        node that lost it (restarted from state saved before the anchor was mined) gets the
        journaled transaction again, through :meth:`run_round`.
        """
        self._bind_journal()
        anchored_on_chain = self.ledger.jobs.progress(self.job_id).last_round
        results = []
        for round_number in range(1, rounds + 1):
            done = round_number <= anchored_on_chain
            if done and self.journal.last("delivered", round=round_number):
                result = self._result_from_journal(round_number)
            else:
                result = self.run_round(round_number)
            results.append(result)
            on_round(result)
        return results

    def run_round(self, round_number: int) -> RoundResult:
        """Runs one round to the end, resuming whatever an earlier attempt left."""
        self._bind_journal()
        timings: dict[str, float] = {}
        progress = self.ledger.jobs.progress(self.job_id)
        if progress.last_round < round_number - 1:
            raise RoundRefused(
                f"round {round_number} of job {self.job_id}: round {progress.last_round + 1} "
                "is not anchored yet"
            )
        intent = self.journal.last("intent", round=round_number)
        resumed = intent is not None or bool(self.journal.last("opened", round=round_number))
        if progress.last_round >= round_number and intent is None:
            raise JournalMismatch(
                f"round {round_number} of job {self.job_id} is anchored on chain, but this "
                "coordinator's journal never meant to anchor it"
            )
        if intent is None:
            intent = self._prepare(progress, round_number, timings)
        with _timed(timings, "anchor"):
            anchor, tx_hash, gas_used = self._anchor(progress, intent)
        with _timed(timings, "receipts"):
            failures = self._deliver(anchor, intent)
        self.journal.append("delivered", round=round_number, failures=failures)
        crash_point("delivered", round_number)
        if failures:
            raise ReceiptsFailed(
                f"round {round_number} is anchored, but receipts failed: "
                + "; ".join(f"{p}: {reason}" for p, reason in failures.items())
            )
        return RoundResult(
            round_number, anchor, tx_hash, gas_used, self.store.get_json(anchor.metrics_digest),
            intent["refused"], timings, resumed,
        )  # fmt: skip

    def _bind_journal(self) -> None:
        """Ties the journal to this job, ledger and chain on first use, and refuses a journal
        tied to another: its rounds would otherwise pass for this job's. The first entry also
        records the whole deployment, so that the journal alone says where to export from."""
        job = {
            "jobId": self.job_id,
            "ledger": self.ledger.deployment.ledger,
            "chainId": self.ledger.chain.chain_id,
        }
        bound = self.journal.last("job")
        if bound is None and not list(self.journal):
            self.journal.append("job", **job, deployment=self.ledger.deployment.to_json())
        elif bound is None or {key: bound.get(key) for key in job} != job:
            owner = (
                "names no job"
                if bound is None
                else f"belongs to job {bound.get('jobId')} of ledger {bound.get('ledger')} "
                f"on chain {bound.get('chainId')}"
            )
            raise JournalMismatch(
                f"{self.journal.path} {owner}, not job {self.job_id} of ledger "
                f"{job['ledger']} on chain {job['chainId']}: use one journal per job"
            )

    # ------------------------------------------------------------------ steps 1-5

    def _prepare(
        self, progress: JobProgress, round_number: int, timings: dict[str, float]
    ) -> dict[str, Any]:
        """Opens the round, collects and checks updates, aggregates; journals the intent."""
        job = self._job_terms()
        standing = self._preflight(job, progress)
        base_digest = progress.head_model_digest
        base = get_model(self.store, base_digest)
        self.journal.append("opened", round=round_number, base=hex32(base_digest))
        crash_point("opened", round_number)

        message = RoundOpen(
            job.id, round_number, base_digest,
            pack_objects(self.store, model_objects(self.store, base_digest)),
        )  # fmt: skip
        submissions: dict[str, UpdateSubmission] = {}
        refused: dict[str, str] = {}
        with _timed(timings, "train"):
            for participant in job.participants:
                try:
                    submissions[participant] = self.transport.open_round(participant, message)
                except ConsortiumError as exc:
                    refused[participant] = _bounded(f"no update: {exc}")
        context = RoundContext(
            job, round_number, base_digest, base, self.domain, self._dataset_owners(job), standing,
            update_allowance(message.objects),
        )  # fmt: skip
        accepted: list[tuple[SignedUpdateRecord, Model]] = []
        with _timed(timings, "verify"):
            for participant, submission in submissions.items():
                try:
                    if submission.record.record.participant != participant:
                        raise UpdateRefused(
                            f"sent a record of {submission.record.record.participant}"
                        )
                    update = check_submission(submission, context, self.store)
                except UpdateRefused as exc:
                    refused[participant] = _bounded(str(exc))
                    continue
                accepted.append((submission.record, update))
        if not accepted:
            raise RoundRefused(f"round {round_number}: no usable update ({refused})")
        crash_point("collected", round_number)

        with _timed(timings, "aggregate"):
            accepted.sort(key=lambda item: sort_key(item[0]))
            model = fedavg([(r.record.participant, u, r.record.num_examples) for r, u in accepted])
            model_digest = put_model(self.store, model)
            records = [self.store.put_json(r.to_json()) for r, _ in accepted]
            tree = MerkleTree(self.store.get(d) for d in records)
            validation = binary_metrics(self.validation.y, predict_proba(model, self.validation.X))
            metrics_digest = self.store.put_json(
                {
                    "round": round_number,
                    "validation": validation.to_json(),
                    "accepted": [r.record.participant for r, _ in accepted],
                    "examples": sum(r.record.num_examples for r, _ in accepted),
                    "refused": refused,
                }
            )
        intent = self.journal.append(
            "intent",
            round=round_number,
            root=hex32(tree.root),
            count=tree.size,
            model=hex32(model_digest),
            metrics=hex32(metrics_digest),
            records=[hex32(d) for d in records],
            participants=[r.record.participant for r, _ in accepted],
            refused=refused,
        )
        crash_point("intent", round_number)
        return intent

    def _job_terms(self) -> Job:
        """The job as created: participants, datasets, consumer and purpose never change, so
        they are read once; what does change comes from :meth:`Jobs.progress` every round."""
        if self._terms is None:
            self._terms = self.ledger.jobs.get(self.job_id)
        return self._terms

    def _preflight(self, job: Job, progress: JobProgress) -> Standing:
        """The job's standing on chain now; refuses a round whose anchor the contract would
        reject, saying why."""
        if progress.status != "open":
            raise RoundRefused(f"job {job.id} is {progress.status}")
        if progress.check_still_holds:
            return Standing.unchanged(job)
        owners = self._dataset_owners(job)
        standing = Standing.read(self.ledger, job, owners)
        problems = [
            f"{p} is no longer an active member"
            for p in job.participants
            if p not in standing.members
        ] + [
            f"consent for dataset {d} (owner {owner}) to {job.consumer} for {job.purpose!r} "
            "is not valid now (revoked, outside its window, or its owner no longer an active "
            "provider)"
            for d, owner in owners.items()
            if d not in standing.usable_datasets
        ]
        if problems:
            raise RoundRefused(
                f"round {progress.last_round + 1} refused: {'; '.join(problems)}; the contract "
                f"accepts no anchor for job {job.id} until this is undone (close the job and "
                "create a new one without them otherwise)"
            )
        return standing

    def _dataset_owners(self, job: Job) -> dict[int, str]:
        """Who owns each of the job's datasets; read once, in one call, since ownership never
        changes (and every dataset of a job was registered when the job was created)."""
        if self._owners is None:
            owners = self.ledger.consents.owners(job.dataset_ids)
            unknown = sorted(d for d, owner in owners.items() if owner is None)
            if unknown:
                raise RoundRefused(f"job {job.id} names unregistered datasets {unknown}")
            self._owners = {d: owner for d, owner in owners.items() if owner is not None}
        return self._owners

    # ------------------------------------------------------------------ step 5: anchor

    def _anchor(
        self, progress: JobProgress, intent: dict[str, Any]
    ) -> tuple[RoundAnchor, str, int]:
        """The round's anchor on chain: found if already mined, else (re)sent and awaited."""
        round_number = intent["round"]
        transactor = self.ledger.transactor
        journaled = [
            SignedTransaction(HexBytes(e["txHash"]), HexBytes(e["raw"]), e["nonce"])
            for e in self.journal.find("signed", round=round_number)
        ]
        receipt = self._settle(journaled) if journaled else None
        if receipt is None:
            # Without earlier attempts the progress read at the start of this round is
            # current; after them, the chain may have moved since.
            latest = self.ledger.jobs.progress(self.job_id) if journaled else progress
            if latest.last_round >= round_number:
                raise JournalMismatch(
                    f"round {round_number} of job {self.job_id} is anchored on chain by a "
                    "transaction this coordinator's journal does not know"
                )
            signed = self.ledger.jobs.sign_anchor(
                self.job_id, round_number, from_hex32(intent["root"]), intent["count"],
                from_hex32(intent["model"]), from_hex32(intent["metrics"]),
            )  # fmt: skip
            self.journal.append(
                "signed", round=round_number, txHash=signed.tx_hash.to_0x_hex(),
                raw=signed.raw.to_0x_hex(), nonce=signed.nonce,
            )  # fmt: skip
            crash_point("signed", round_number)
            transactor.broadcast(signed)
            crash_point("sent", round_number)
            receipt = transactor.confirm(signed.tx_hash)
        anchor = self.ledger.jobs.anchor_in(receipt)
        self._check_anchor(anchor, intent)
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        journaled_anchor = self.journal.last("anchored", round=round_number)
        # A resent anchor is mined in another block than the one journaled before the node
        # lost it: the newest entry must name the anchor the chain now holds.
        if journaled_anchor is None or journaled_anchor["anchor"] != anchor_to_json(anchor):
            self.journal.append(
                "anchored", round=round_number, anchor=anchor_to_json(anchor), txHash=tx_hash,
                gasUsed=receipt["gasUsed"],
            )  # fmt: skip
        crash_point("anchored", round_number)
        return anchor, tx_hash, int(receipt["gasUsed"])

    def _settle(self, journaled: list[SignedTransaction]) -> Any:
        """The receipt of the round's journaled anchor transaction, resending the newest if
        the node lost it; None when none can be mined any more (its nonce went elsewhere).

        Every journaled attempt is looked up, not only the newest: an older one that the node
        rejected on resend may still have been mined from another node's pool.
        """
        transactor = self.ledger.transactor
        for signed in reversed(journaled):
            if transactor.receipt(signed.tx_hash) is not None:
                return transactor.confirm(signed.tx_hash)  # raises the reason if it failed
        for signed in reversed(journaled):
            if transactor.is_known(signed.tx_hash):  # pending: wait for it
                return transactor.confirm(signed.tx_hash)
        newest = journaled[-1]
        try:
            transactor.broadcast(newest)  # lost (a node restart empties its pool): resend
        except TransactionRejected:
            # Mined between the look-up and the resend ("nonce too low"), or truly dead.
            return (
                transactor.confirm(newest.tx_hash) if transactor.is_known(newest.tx_hash) else None
            )
        return transactor.confirm(newest.tx_hash)

    def _check_anchor(self, anchor: RoundAnchor, intent: dict[str, Any]) -> None:
        """The mined anchor is the intended one. The anchor comes from the contract's own
        ``RoundAnchored`` event, emitted with the commitment it stored in the same call, so no
        read-back is needed; every participant reads the stored commitment anyway."""
        intended = (intent["root"], intent["count"], intent["model"], intent["metrics"])
        mined = (
            hex32(anchor.merkle_root), anchor.participant_count,
            hex32(anchor.model_digest), hex32(anchor.metrics_digest),
        )  # fmt: skip
        if mined != intended:
            raise JournalMismatch(
                f"round {anchor.round} of job {anchor.job_id}: the chain holds another anchor "
                "than the journal's intent"
            )

    # ------------------------------------------------------------------ step 6: receipts

    def _deliver(self, anchor: RoundAnchor, intent: dict[str, Any]) -> dict[str, str]:
        """Hands every participant its inclusion proof, or the reason it was left out.

        Every participant gets its receipt even when another one's fails; the failures (a
        participant's alarm, an unreachable participant) are returned to be journaled.
        """
        records = [from_hex32(d) for d in intent["records"]]
        tree = MerkleTree(self.store.get(d) for d in records)
        receipts = [
            *(
                (participant, RoundReceipt(anchor, index, tree.inclusion_proof(index)))
                for index, participant in enumerate(intent["participants"])
            ),
            *(
                (participant, RoundReceipt(anchor, None, [], reason))
                for participant, reason in intent["refused"].items()
            ),
        ]
        failures: dict[str, str] = {}
        for participant, receipt in receipts:
            try:
                self.transport.deliver(participant, receipt)
            except ConsortiumError as exc:
                failures[participant] = _bounded(str(exc))
        return failures

    def _result_from_journal(self, round_number: int) -> RoundResult:
        anchored = self.journal.last("anchored", round=round_number)
        intent = self.journal.last("intent", round=round_number)
        if anchored is None or intent is None:
            raise JournalMismatch(f"round {round_number} is delivered but not anchored")
        anchor = anchor_from_json(anchored["anchor"])
        return RoundResult(
            round_number, anchor, anchored["txHash"], anchored["gasUsed"],
            self.store.get_json(anchor.metrics_digest), intent["refused"], resumed=True,
        )  # fmt: skip


def _bounded(reason: str) -> str:
    """A refusal reason short enough to anchor and journal: participants control its text."""
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
