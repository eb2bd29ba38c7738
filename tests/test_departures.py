"""A participant whose consent is revoked mid-job is left out of the rounds after it, and the
job goes on: each anchor names its round's participants, the contract checks those only, and
the audit of the whole job passes, saying in which rounds the participant took no part."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from consortium.audit import CheckResult, Verdict, open_bundle, verify_bundle
from consortium.chain.embedded import EmbeddedChain
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Job, mask_participants
from consortium.orchestration.bundle import export_bundle
from consortium.orchestration.engine import RoundResult
from consortium.orchestration.transport import LocalTransport, ParticipantFailed
from consortium.protocol.base import RoundRefused
from consortium.protocol.fedavg.participant import Participant
from consortium.protocol.messages import RoundOpen, UpdateSubmission
from consortium.scenarios import aml, sme_credit, sme_training
from consortium.scenarios.sme_credit import PURPOSE

REVOKED_AFTER = 2


@dataclass(frozen=True)
class Departed:
    job: Job
    results: list[RoundResult]
    leaving: str
    dataset: int
    audited: list[CheckResult]


@pytest.fixture(scope="module")
def departed(tmp_path_factory: pytest.TempPathFactory) -> Departed:
    """Four rounds of three banks; bank-1 revokes its consent after round 2."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("departed")
    run = aml.set_up(chain, out, aml.AmlSettings(banks=3, rounds=4, seed=7), lambda _: None)
    leaving = run.banks[1].account.address
    ledger = Ledger(chain, run.deployment, run.banks[1].account)
    job = ledger.jobs.get(run.job_id)
    (dataset,) = [d for d in job.dataset_ids if ledger.consents.dataset(d).owner == leaving]

    def revoke_after_round_2(result: RoundResult) -> None:
        if result.round == REVOKED_AFTER:
            ledger.consents.revoke(dataset, job.consumer, aml.PURPOSE)

    results = aml.run_rounds(chain, run, revoke_after_round_2)
    bundle = export_bundle(
        Ledger(chain, run.deployment), run.job_id, run.institute.store,
        run.institute.journal_reader(), out,
    )  # fmt: skip
    with open_bundle(bundle) as opened:
        audited = list(verify_bundle(opened, chain))
    chain.close()
    return Departed(job, results, leaving, dataset, audited)


def test_the_job_goes_on_without_the_participant(departed: Departed) -> None:
    assert [r.round for r in departed.results] == [1, 2, 3, 4]
    for result in departed.results:
        taking_part = mask_participants(departed.job.participants, result.anchor.participant_mask)
        assert (departed.leaving in taking_part) == (result.round <= REVOKED_AFTER), result.round
        assert result.anchor.participant_count == len(taking_part)
        if result.round == REVOKED_AFTER + 1:  # its standing read: the consent is gone
            assert "is no longer valid" in result.refused[departed.leaving]
        elif result.round > REVOKED_AFTER:  # the contract's check left it out, nothing changed
            assert "took no part since the contract's last" in result.refused[departed.leaving]
        if result.round > REVOKED_AFTER:  # never even sent the model
            assert result.refused[departed.leaving].startswith("not asked to train")


def test_the_audit_passes_and_says_who_took_part_in_which_round(departed: Departed) -> None:
    verdict = Verdict()
    for result in departed.audited:
        verdict.add(result)
    assert verdict.ok, [r.message for r in departed.audited if not r.ok]
    absent = [
        r.round
        for r in departed.audited
        if (r.name, r.participant) == ("membership", departed.leaving)
        and "took no part" in r.message
    ]
    assert absent == [3, 4]
    not_needed = [
        r.round
        for r in departed.audited
        if r.name == "consent" and f"dataset {departed.dataset} is" in r.message
        and "not needed" in r.message
    ]  # fmt: skip
    assert not_needed == [3, 4]


class SilentInRound(LocalTransport):
    """The local transport, but one participant gives no answer in one round."""

    def __init__(self, participants: Mapping[str, Participant], silent: str, round_number: int):
        super().__init__(participants)
        self.silent, self.round_number = silent, round_number

    def open_round(self, participant: str, message: RoundOpen) -> UpdateSubmission:
        if (participant, message.round) == (self.silent, self.round_number):
            raise ParticipantFailed(f"participant {participant} is offline")
        return super().open_round(participant, message)


@pytest.mark.parametrize("depth", [1, 2], ids=["unpipelined", "pipelined"])
def test_a_participant_silent_for_one_round_costs_no_full_check(tmp_path: Path, depth: int) -> None:
    """A round some participant sat out, nothing else changed, stays on the contract's fast
    path, with the gas limit learned from the rounds before; the participant is back next."""
    chain = EmbeddedChain()
    run = aml.set_up(chain, tmp_path, aml.AmlSettings(banks=3, rounds=4, seed=7), lambda _: None)
    participants = aml.participants_for(chain, run)
    silent = run.banks[1].account.address
    coordinator = aml.coordinator_for(
        chain, run, SilentInRound(participants, silent, 3), depth=depth
    )
    try:
        results = coordinator.run(4)
    finally:
        for journal in (coordinator.journal, *(p.journal for p in participants.values())):
            journal.close()
    job = coordinator.ledger.jobs.get(run.job_id)
    taking_part = [mask_participants(job.participants, r.anchor.participant_mask) for r in results]
    assert [silent in t for t in taking_part] == [True, True, False, True]
    assert "is offline" in results[2].refused[silent]
    gas = [r.gas_used for r in results]
    assert max(gas[1:]) - min(gas[1:]) < 2_000, gas  # rounds 2-4 alike: no full check
    chain.close()


def test_a_vertical_job_whose_host_loses_its_consent_refuses_its_next_round(
    tmp_path: Path,
) -> None:
    """Each data party holds half the features: the round is refused in one line before any
    encrypted work, instead of running an epoch whose anchor the contract would refuse."""
    chain = EmbeddedChain()
    settings = sme_credit.SmeSettings(businesses=600, seed=5, key_bits=512, max_rounds=3)
    run = sme_credit.set_up(chain, tmp_path, settings, lambda _: None)
    platform = Ledger(chain, run.deployment, run.platform.account)

    def revoke_after_round_1(result: RoundResult) -> None:
        if result.round == 1:
            platform.consents.revoke(run.datasets[1], run.bank.account.address, PURPOSE)

    with pytest.raises(RoundRefused) as refused:
        sme_training.run_rounds(chain, run, revoke_after_round_1)
    message = str(refused.value)
    assert message.startswith("round 2 refused: consent for dataset") and "\n" not in message
    assert "a vertical round needs both the guest and the host" in message
    journal = run.institute.journal_reader()
    assert journal.last("intent", round=2) is None  # no epoch ran
    chain.close()
