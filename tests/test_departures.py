"""A participant whose consent is revoked mid-job is left out of the rounds after it, and the
job goes on: each anchor names its round's participants, the contract checks those only, and
the audit of the whole job passes, saying in which rounds the participant took no part."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from consortium.audit import CheckResult, Verdict, open_bundle, verify_bundle
from consortium.chain.embedded import EmbeddedChain
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Job, mask_participants
from consortium.orchestration.bundle import export_bundle
from consortium.orchestration.engine import RoundResult
from consortium.scenarios import aml

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
        if result.round > REVOKED_AFTER:
            assert "is no longer valid" in result.refused[departed.leaving]


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
