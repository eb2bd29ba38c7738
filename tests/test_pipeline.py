"""Pipelined rounds: round r+1 trains while round r's anchor confirms, and nothing else changes.

Two runs of the same job (one seed, so the same keys and the same chain state) on fresh
embedded chains, one with the pipeline off and one with two rounds in flight, must anchor the
very same rounds; and the
pipelined one must really overlap: a receipt of round r waits, here, until round r+1 has begun
training, which only a pipelined engine can satisfy.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consortium.chain.embedded import EmbeddedChain
from consortium.errors import ChainRevert, UsageError
from consortium.orchestration.engine import RoundEngine
from consortium.orchestration.transport import LocalTransport
from consortium.protocol.base import RoundIntent, RoundRefused, RoundStart
from consortium.protocol.fedavg.participant import Participant
from consortium.protocol.messages import RoundOpen, RoundReceipt, UpdateSubmission
from consortium.scenarios import aml
from consortium.store.journal import JournalReader
from consortium.timing import Timings

ROUNDS = 4
SETTINGS = aml.AmlSettings(banks=3, rounds=ROUNDS, seed=11, epochs=1)


class OverlapProbe(LocalTransport):
    """Records, for each round r, whether round r+1 had been opened to some participant when
    round r's receipts went out; with ``hold``, it waits (5 s at most) for that to happen."""

    def __init__(self, participants: dict[str, Participant], *, hold: bool) -> None:
        super().__init__(participants)
        self.hold = hold
        self.opened: dict[int, threading.Event] = {}
        self.overlapped: set[int] = set()

    def _opened(self, round_number: int) -> threading.Event:
        return self.opened.setdefault(round_number, threading.Event())

    def open_round(self, participant: str, message: RoundOpen) -> UpdateSubmission:
        self._opened(message.round).set()
        return super().open_round(participant, message)

    def deliver(self, participant: str, receipt: RoundReceipt) -> None:
        following = self._opened(receipt.anchor.round + 1)
        hold = self.hold and receipt.anchor.round < ROUNDS  # the last round has no follower
        if following.wait(timeout=5) if hold else following.is_set():
            self.overlapped.add(receipt.anchor.round)
        super().deliver(participant, receipt)


def _set_up(out: Path) -> tuple[EmbeddedChain, aml.AmlRun]:
    """The scenario on a fresh embedded chain; one seed, so the same keys every time."""
    chain = EmbeddedChain()
    return chain, aml.set_up(chain, out, SETTINGS, report=lambda _: None)


def _run(chain: EmbeddedChain, run: aml.AmlRun, depth: int) -> tuple[list[str], OverlapProbe]:
    participants = aml.participants_for(chain, run)
    probe = OverlapProbe(participants, hold=depth > 1)
    coordinator = aml.coordinator_for(chain, run, probe, depth=depth)
    try:
        results = coordinator.run(ROUNDS)
    finally:
        coordinator.journal.close()
        for participant in participants.values():
            participant.journal.close()
    assert [r.round for r in results] == list(range(1, ROUNDS + 1))
    job = coordinator.ledger.jobs.get(run.job_id)
    assert job.last_round == ROUNDS
    for result in results:
        assert coordinator.ledger.jobs.verify(result.anchor)  # each anchor is the chain's
    return [r.anchor.model_digest.hex() for r in results], probe


def test_pipelined_rounds_overlap_and_anchor_what_unpipelined_rounds_anchor(
    tmp_path: Path,
) -> None:
    runs = {}
    for depth in (1, 2):
        chain, run = _set_up(tmp_path / f"depth-{depth}")
        runs[depth] = (*_run(chain, run, depth), run.institute.directory)
        chain.close()
    (models_1, probe_1, _), (models_2, probe_2, out_2) = runs[1], runs[2]
    assert models_2 == models_1
    assert probe_1.overlapped == set()  # unpipelined: round r+1 never starts before r is done
    assert probe_2.overlapped == set(range(1, ROUNDS))
    # The journal shows it too: round r+1 opened before round r was delivered, and still
    # every anchor was signed in round order, each after its own intent.
    entries = list(JournalReader(out_2 / "journal.jsonl"))
    position = {(e["kind"], e.get("round")): e["seq"] for e in entries}
    for number in range(1, ROUNDS):
        assert position[("opened", number + 1)] < position[("delivered", number)]
        assert position[("signed", number)] < position[("signed", number + 1)]
    for number in range(1, ROUNDS + 1):
        assert position[("intent", number)] < position[("signed", number)]


def test_a_failed_anchor_stops_the_pipeline_after_the_round_in_training(
    tmp_path: Path,
) -> None:
    """Round 2's anchor fails (the job was closed just before it was signed, whether it went
    out ahead or not): the engine raises the chain's reason, and anchors nothing after it."""
    chain, run = _set_up(tmp_path / "run")
    participants = aml.participants_for(chain, run)
    coordinator = aml.coordinator_for(chain, run, LocalTransport(participants), depth=2)
    jobs = coordinator.ledger.jobs
    sign_anchor = jobs.sign_anchor

    def closing_before_round_2(job_id, round_number, *args, **kwargs):  # type: ignore[no-untyped-def]
        if round_number == 2:
            jobs.close(run.job_id)
        return sign_anchor(job_id, round_number, *args, **kwargs)

    jobs.sign_anchor = closing_before_round_2  # type: ignore[method-assign]
    try:
        # The chain's reason for round 2, or the preflight of round 3 saying the same first.
        with pytest.raises((ChainRevert, RoundRefused), match=r"(?i)job 1 is closed"):
            coordinator.run(ROUNDS)
    finally:
        coordinator.journal.close()
        for participant in participants.values():
            participant.journal.close()
    assert coordinator.ledger.jobs.get(run.job_id).last_round == 1
    journal = JournalReader(run.institute.directory / "journal.jsonl")
    assert journal.find("signed", round=3) == []


def test_the_depth_is_bounded() -> None:
    with pytest.raises(UsageError, match="pipeline depth must be 1 to 8, not 0"):
        RoundEngine(None, None, None, depth=0)  # type: ignore[arg-type]


class FinalAt:
    """The FedAvg protocol, except that round ``last`` says it is the job's last."""

    def __init__(self, inner: Any, last: int) -> None:
        self.inner, self.last = inner, last
        self.protocol_id, self.store = inner.protocol_id, inner.store
        self.opened: list[int] = []

    def run_round(self, start: RoundStart, timings: Timings) -> RoundIntent:
        self.opened.append(start.round)
        intent = self.inner.run_round(start, timings)
        return replace(intent, final=True) if start.round == self.last else intent

    def deliver(self, party: str, receipt: RoundReceipt) -> None:
        self.inner.deliver(party, receipt)


@pytest.mark.parametrize("depth", [1, 2])
def test_no_round_follows_a_final_one_in_this_run_or_a_resumed_one(
    tmp_path: Path, depth: int
) -> None:
    """A protocol whose convergence rule is met ends the job: the engine opens no round after
    the final one, pipelined or not, and a rerun asking for more rounds opens none either."""
    chain, run = _set_up(tmp_path / "run")
    for attempt in range(2):
        participants = aml.participants_for(chain, run)
        coordinator = aml.coordinator_for(chain, run, LocalTransport(participants), depth=depth)
        protocol = FinalAt(coordinator.protocol, last=2)
        coordinator.protocol = protocol
        try:
            results = coordinator.run(ROUNDS)
        finally:
            coordinator.journal.close()
            for participant in participants.values():
                participant.journal.close()
        assert [(r.round, r.final) for r in results] == [(1, False), (2, True)]
        assert protocol.opened == ([1, 2] if attempt == 0 else [])
        assert coordinator.ledger.jobs.get(run.job_id).last_round == 2
    journal = JournalReader(run.institute.directory / "journal.jsonl")
    assert journal.find("opened", round=3) == []
