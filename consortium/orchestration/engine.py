"""The round engine: runs and resumes the rounds of one job, whatever the protocol.

It owns what must be the same for every protocol (DESIGN.md, "Round engine and protocols"):
the write-ahead journal, anchoring through an :class:`~consortium.orchestration.anchorer.
Anchorer`, receipts, resume and pipelining. A round goes: journal ``opened``; the protocol runs
the round to its intent (every artifact durable); journal ``intent``; anchor it (``signed``,
``anchored``); hand every party its receipt; journal ``delivered``.

On (re)start the chain, not the journal, says which rounds are done: a round the journal calls
delivered is taken from the journal only while the chain holds its anchor; a journaled intent
is anchored before anything new is trained; a round whose intent was never written is redone.

Pipelining (``depth`` > 1): round r+1 is trained as soon as round r's intent is journaled,
while one background thread awaits round r's anchor and another hands out its receipts, which
the parties check on their own time. Anchors are still sent in round order (their nonces follow
the rounds), and each only after its intent (and so its artifacts) is durable; where the
anchorer can sign without asking the chain first
(:meth:`~consortium.orchestration.anchorer.ChainAnchorer.send_ahead`), round r+1's anchor goes
out before round r's is mined, so that at slow block times several anchors share a block. At
most ``depth`` rounds are in flight, receipts included: round r+depth is not trained before
every party has checked round r's receipt, so an alarm stops the job within ``depth`` rounds.
Resuming is never pipelined: whatever an interrupted run left is finished round by round first.

Each round's timings separate the coordinator's own work (``preflight``: the chain reads
before a round; ``anchor``; ``proofs``: building the receipts) from the parties' (``train``;
``receipts``: handing the receipts over until every party has checked its own).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from consortium.crypto.merkle import MerkleTree
from consortium.errors import ConsortiumError, UsageError
from consortium.faults import crash_point
from consortium.ledger.jobs import JobProgress, RoundAnchor
from consortium.orchestration import journal_entries
from consortium.orchestration.anchorer import Anchorer, JournalMismatch
from consortium.orchestration.journal_entries import AnchorMined, RoundDelivered, RoundOpened
from consortium.protocol.base import (
    RoundIntent,
    RoundProtocol,
    RoundRefused,
    RoundStart,
    bounded,
)
from consortium.protocol.messages import RoundReceipt
from consortium.protocol.receipts import ReceiptAlarm
from consortium.store.journal import Journal
from consortium.timing import Timings, timed

DEFAULT_DEPTH = 2
MAX_DEPTH = 8
MAX_DELIVERIES = 16
_DELIVERIES = ThreadPoolExecutor(max_workers=MAX_DELIVERIES, thread_name_prefix="receipt")
"""The threads that hand receipts out, shared by every engine of the process and kept between
rounds: starting a round's threads afresh cost more than a round's anchor on a local node."""


class ReceiptsFailed(ConsortiumError):
    """A participant raised an alarm over its receipt: it says the round does not hold its
    record as it sent it. (A receipt that could not be handed over is journaled, not this.)"""


@dataclass
class RoundResult:
    """One anchored round, as the round table shows it."""

    round: int
    anchor: RoundAnchor
    tx_hash: str
    gas_used: int
    metrics: dict[str, Any]
    refused: dict[str, str]
    timings: Timings = field(default_factory=dict)
    resumed: bool = False
    final: bool = False  # the protocol's last round: no round follows it


class RoundEngine:
    """Runs the rounds of one job: ``protocol`` between the parties, ``anchorer`` on chain."""

    def __init__(
        self,
        protocol: RoundProtocol,
        anchorer: Anchorer,
        journal: Journal,
        *,
        depth: int = 1,
    ) -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise UsageError(f"pipeline depth must be 1 to {MAX_DEPTH}, not {depth}")
        self.protocol = protocol
        self.anchorer = anchorer
        self.journal = journal
        self.depth = depth
        # Intents journaled whose anchors have not gone out yet, oldest first (pipelined runs).
        self._unsent: deque[RoundIntent] = deque()
        self._unsent_lock = threading.Lock()

    # ------------------------------------------------------------------ driving

    def run(
        self, rounds: int, on_round: Callable[[RoundResult], None] = lambda result: None
    ) -> list[RoundResult]:
        """Runs (or finishes) rounds 1..``rounds``, or up to the protocol's final round if it
        comes first; rounds already done are reported as such."""
        self._bind_journal()
        chain_round = self.anchorer.progress().last_round
        results: list[RoundResult] = []
        number = 1
        # What an earlier run left (done, anchored, or journaled) is finished one by one.
        while number <= rounds and (
            number <= chain_round or journal_entries.last_opened(self.journal, number) is not None
        ):
            if (
                number <= chain_round
                and journal_entries.last_delivered(self.journal, number) is not None
            ):
                result = self._result_from_journal(number)
            else:
                result = self.run_round(number)
            results.append(result)
            on_round(result)
            if result.final:
                return results
            number += 1
        if number > rounds:
            return results
        if self.depth == 1:
            for round_number in range(number, rounds + 1):
                result = self.run_round(round_number)
                results.append(result)
                on_round(result)
                if result.final:
                    break
            return results
        return results + self._pipelined(number, rounds, on_round)

    def run_round(self, round_number: int) -> RoundResult:
        """Runs one round to the end, resuming whatever an earlier attempt left."""
        self._bind_journal()
        timings: Timings = {}
        with timed(timings, "preflight"):
            progress = self.anchorer.progress()
        if progress.last_round < round_number - 1:
            raise RoundRefused(
                f"round {round_number} of job {self.anchorer.job().id}: round "
                f"{progress.last_round + 1} is not anchored yet"
            )
        journaled = journal_entries.last_intent(self.journal, round_number)
        opened = journal_entries.last_opened(self.journal, round_number)
        resumed = journaled is not None or opened is not None
        if progress.last_round >= round_number and journaled is None:
            raise JournalMismatch(
                f"round {round_number} of job {self.anchorer.job().id} is anchored on chain, but "
                "this coordinator's journal never meant to anchor it"
            )
        intent = (
            journaled
            if journaled is not None
            else self._prepare(progress, round_number, progress.head_model_digest, timings)
        )
        anchored = self._anchor(intent, progress.last_round, timings)
        return self._hand_receipts(intent, anchored, timings, resumed)

    def _pipelined(
        self, first: int, rounds: int, on_round: Callable[[RoundResult], None]
    ) -> list[RoundResult]:
        """Rounds ``first``..``rounds``, each trained while the one before is anchored."""
        results: list[RoundResult] = []
        base = self.anchorer.progress().head_model_digest
        # Each round in flight: its anchoring, which ends by handing its receipts out.
        in_flight: deque[Future[Future[RoundResult]]] = deque()

        def settle(until: int) -> None:
            while len(in_flight) > until:
                # The anchoring thread's error, if any, then the receipts'.
                result = in_flight.popleft().result().result()
                results.append(result)
                on_round(result)

        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="receipts") as delivering,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="anchoring") as anchoring,
        ):

            def anchor_then_deliver(intent: RoundIntent, timings: Timings) -> Future[RoundResult]:
                anchored = self._anchor(intent, intent.round - 1, timings)
                return delivering.submit(self._hand_receipts, intent, anchored, timings, False)

            try:
                for round_number in range(first, rounds + 1):
                    timings: Timings = {}
                    with timed(timings, "preflight"):
                        progress = self.anchorer.progress()
                    intent = self._prepare(progress, round_number, base, timings)
                    with self._unsent_lock:
                        self._unsent.append(intent)
                    with timed(timings, "anchor"):
                        self._send_ahead()
                    in_flight.append(anchoring.submit(anchor_then_deliver, intent, timings))
                    base = intent.model
                    if intent.final:
                        break
                    settle(self.depth - 1)
                settle(0)
            except BaseException:
                # An anchor or a round failed: rounds not yet handed to the chain stay journaled
                # intents for a resume; the one being anchored, and the receipts of rounds
                # anchored, are let finish.
                for future in in_flight:
                    future.cancel()
                for future in in_flight:
                    if not future.cancelled() and future.exception() is None:
                        future.result().exception()
                raise
        return results

    # ------------------------------------------------------------------ one round

    def _bind_journal(self) -> None:
        """Ties the journal to this job, ledger and chain on first use, and refuses a journal
        tied to another: its rounds would otherwise pass for this job's. The first entry also
        records the whole deployment, so that the journal alone says where to export from."""
        binding = self.anchorer.binding()
        bound = journal_entries.job_binding(self.journal)
        if bound is None and not list(self.journal):
            journal_entries.record(self.journal, binding)
        elif bound is None or bound.identity() != binding.identity():
            owner = (
                "names no job"
                if bound is None
                else f"belongs to job {bound.job_id} of ledger {bound.ledger} "
                f"on chain {bound.chain_id}"
            )
            raise JournalMismatch(
                f"{self.journal.path} {owner}, not job {binding.job_id} of ledger "
                f"{binding.ledger} on chain {binding.chain_id}: use one journal per job"
            )

    def _prepare(
        self, progress: JobProgress, round_number: int, base: bytes, timings: Timings
    ) -> RoundIntent:
        """Opens the round, lets the protocol run it, and journals its intent."""
        with timed(timings, "preflight"):
            job = self.anchorer.job()
            standing = self.anchorer.preflight(job, progress, round_number)
            owners = self.anchorer.dataset_owners(job)
        journal_entries.record(self.journal, RoundOpened(round_number, base))
        crash_point("opened", round_number)
        intent = self.protocol.run_round(
            RoundStart(job, round_number, base, owners, standing), timings
        )
        journal_entries.record(self.journal, intent)
        crash_point("intent", round_number)
        return intent

    def _anchor(self, intent: RoundIntent, chain_round: int, timings: Timings) -> AnchorMined:
        with timed(timings, "anchor"):
            self.anchorer.send(intent, self.journal, chain_round)
            self._send_ahead()  # the rounds after it, now that it is out
            return self.anchorer.anchor(intent, self.journal, chain_round)

    def _hand_receipts(
        self, intent: RoundIntent, anchored: AnchorMined, timings: Timings, resumed: bool
    ) -> RoundResult:
        failures, alarms = self._deliver(anchored.anchor, intent, timings)
        journal_entries.record(self.journal, RoundDelivered(intent.round, failures))
        crash_point("delivered", intent.round)
        if alarms:
            raise ReceiptsFailed(
                f"round {intent.round} is anchored, but receipts failed: "
                + "; ".join(f"{p}: {failures[p]}" for p in alarms)
            )
        return self._result(intent, anchored, timings, resumed)

    def _send_ahead(self) -> None:
        """Sends the anchors of the rounds waiting behind the oldest one in flight, in round
        order, as far as the anchorer can without the chain's answer; called by both threads,
        after a round's intent is journaled and after the oldest round's anchor went out."""
        with self._unsent_lock:
            while self._unsent and (
                journal_entries.signed_attempts(self.journal, self._unsent[0].round)
                or self.anchorer.send_ahead(self._unsent[0], self.journal)
            ):
                self._unsent.popleft()

    def _deliver(
        self, anchor: RoundAnchor, intent: RoundIntent, timings: Timings
    ) -> tuple[dict[str, str], set[str]]:
        """Hands every party its inclusion proof, or the reason it was left out (DESIGN.md,
        step 6). Every party gets its receipt even when another one's fails; the failures (an
        alarm, an unreachable party) are returned to be journaled, and which are alarms.
        Parties check their receipts against the chain themselves, each on its own time: up
        to :data:`MAX_DELIVERIES` at once, so a round's receipts cost about the same at 100
        parties as at 4."""
        with timed(timings, "proofs"):
            tree = MerkleTree(self.protocol.store.get(d) for d in intent.records)
            receipts = [
                *(
                    (party, RoundReceipt(anchor, index, tree.inclusion_proof(index)))
                    for index, party in enumerate(intent.participants)
                ),
                *(
                    (party, RoundReceipt(anchor, None, [], reason))
                    for party, reason in intent.refused.items()
                ),
            ]
        with timed(timings, "receipts"):
            outcomes = list(_DELIVERIES.map(lambda item: self._hand_over(*item), receipts))
        failed = [(party, outcome) for (party, _), outcome in zip(receipts, outcomes, strict=True)]
        failures = {party: outcome[0] for party, outcome in failed if outcome is not None}
        alarms = {party for party, outcome in failed if outcome is not None and outcome[1]}
        return failures, alarms

    def _hand_over(self, party: str, receipt: RoundReceipt) -> tuple[str, bool] | None:
        """Delivers one receipt; the party's failure, if any: its journaled reason, and whether
        it is an alarm (the party says the receipt does not prove its record; that stops the
        job) rather than a receipt that did not reach it (a party gone: it can check its round
        against the chain whenever it is back)."""
        try:
            self.protocol.deliver(party, receipt)
        except ReceiptAlarm as exc:
            return bounded(str(exc)), True
        except ConsortiumError as exc:
            return bounded(str(exc)), False
        return None

    def _result(
        self, intent: RoundIntent, anchored: AnchorMined, timings: Timings, resumed: bool
    ) -> RoundResult:
        metrics = self.protocol.store.get_json(anchored.anchor.metrics_digest)
        return RoundResult(
            intent.round, anchored.anchor, anchored.tx_hash, anchored.gas_used, metrics,
            dict(intent.refused), timings, resumed, intent.final,
        )  # fmt: skip

    def _result_from_journal(self, round_number: int) -> RoundResult:
        anchored = journal_entries.last_anchored(self.journal, round_number)
        intent = journal_entries.last_intent(self.journal, round_number)
        if anchored is None or intent is None:
            raise JournalMismatch(f"round {round_number} is delivered but not anchored")
        return self._result(intent, anchored, {}, resumed=True)
