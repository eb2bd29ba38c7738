"""Model-use events on the TrainingLedger through the typed Python API, on both backends.

A use of a job's model (one applicant scored, or a referral batch) is anchored by the job's
consumer or coordinator, names the job's head model, and is held to the job's standing: every
refusal is asserted by its decoded custom error, the same on eth-tester and on anvil.
"""

from __future__ import annotations

from typing import Any

import pytest
from ledger_fixtures import PURPOSE, digest, reverts
from test_ledger import PURPOSE32, JobSetup, anchor, job_setup

from consortium.chain.base import Chain
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import REFERRAL, SCORE, ModelUse, participant_mask
from consortium.ledger.values import ZERO32


def use(s: JobSetup, kind: str = SCORE, **overrides: Any) -> ModelUse:
    """Records a use of the setup's job by its consumer, with the latest round's model."""
    values: dict[str, Any] = {
        "model_digest": s.c.reader.jobs.get(s.job).head_model_digest,
        "kind": kind,
        "query_commitment": digest(f"query-{kind}"),
        "result_commitment": digest(f"result-{kind}"),
        "subjects": 1,
    }
    values.update(overrides)
    ledger: Ledger = values.pop("ledger", s.bank)
    job = values.pop("job", s.job)
    return ledger.jobs.record_model_use(job, **values)


def logged(s: JobSetup, name: str, block: int) -> list[dict[str, Any]]:
    """The arguments of every ``name`` event of the ledger in ``block``."""
    found = s.institute.training.events[name]().get_logs(from_block=block, to_block=block)
    return [dict(e["args"]) for e in found]


def test_uses_are_recorded_counted_and_listed(chain: Chain) -> None:
    s = job_setup(chain)
    reader = s.c.reader.jobs
    anchor(s, 1)
    assert reader.model_uses(s.job) == []
    assert reader.model_use_count(s.job) == 0

    scored = use(s, SCORE)
    assert scored == ModelUse(
        job_id=s.job,
        use_index=1,
        caller=s.bank.address,
        model_digest=digest("model-1"),
        kind="score",
        query_commitment=digest("query-score"),
        result_commitment=digest("result-score"),
        subjects=1,
        block_number=scored.block_number,
        timestamp=scored.timestamp,
    )
    assert scored.timestamp == chain.w3.eth.get_block(scored.block_number)["timestamp"]
    # The event carries exactly the fields, the kind readable as text on chain.
    assert logged(s, "ModelUsed", scored.block_number) == [
        {
            "jobId": s.job,
            "useIndex": 1,
            "caller": s.bank.address,
            "modelDigest": digest("model-1"),
            "useKind": b"score".ljust(32, b"\x00"),
            "queryCommitment": digest("query-score"),
            "resultCommitment": digest("result-score"),
            "subjects": 1,
        }
    ]
    (entry,) = [e for e in s.bank.training.abi if e.get("name") == "ModelUsed"]
    assert [(i["name"], i["type"], i["indexed"]) for i in entry["inputs"]] == [
        ("jobId", "uint256", True),
        ("useIndex", "uint256", True),
        ("caller", "address", True),
        ("modelDigest", "bytes32", False),
        ("useKind", "bytes32", False),
        ("queryCommitment", "bytes32", False),
        ("resultCommitment", "bytes32", False),
        ("subjects", "uint32", False),
    ]
    # Nothing changed since the job's last full check, so the use skipped it.
    assert logged(s, "JobRevalidated", scored.block_number) == []

    anchor(s, 2)
    referred = use(s, REFERRAL, ledger=s.institute, subjects=250)
    assert (referred.use_index, referred.caller, referred.model_digest) == (
        2,
        s.institute.address,
        digest("model-2"),
    )
    assert (referred.kind, referred.subjects) == ("referral", 250)
    assert reader.model_uses(s.job) == [scored, referred]
    assert reader.model_uses(s.job, chunk=1) == [scored, referred]  # across bounded ranges
    assert reader.model_use_count(s.job) == 2 == reader.get(s.job).model_use_count

    # Indices count per job: another job's first use is its use 1, and leaves this one's alone.
    other = s.institute.jobs.create(
        purpose=PURPOSE,
        model_spec_digest=digest("spec"),
        initial_model_digest=digest("model-0"),
        consumer=s.bank.address,
        participants=[s.bank.address],
        dataset_ids=[s.loans],
    )
    anchor(s, 1, job=other, participant_mask=1, model_digest=digest("other-model-1"))
    first = use(s, job=other, model_digest=digest("other-model-1"))
    assert (first.job_id, first.use_index) == (other, 1)
    assert reader.model_uses(other) == [first]
    assert reader.model_uses(s.job) == [scored, referred]

    # A closed job's final model is still in use.
    s.institute.jobs.close(s.job)
    assert use(s).use_index == 3
    assert reader.model_use_count(s.job) == 3


def test_use_refusals(chain: Chain) -> None:
    s = job_setup(chain)
    with reverts("NoAnchoredRound", jobId=s.job) as refused:
        use(s, model_digest=digest("model-0"))
    assert (
        str(refused.value)
        == f"Job {s.job} has no anchored round, so no model of it can be used yet."
    )
    anchor(s, 1)
    anchor(s, 2)

    _, outsider = s.c.outsider()
    for stranger in (outsider, s.logistics):  # a non-member, and a participant of the job
        with reverts("NotJobParty", jobId=s.job, account=stranger.address):
            use(s, ledger=stranger)
    for model in (digest("never-anchored"), digest("model-1")):  # unknown, and no longer head
        with reverts(
            "NotHeadModel", jobId=s.job, modelDigest=model, headModelDigest=digest("model-2")
        ):
            use(s, model_digest=model)
    with reverts("UnknownJob", jobId=99):
        use(s, job=99)
    with reverts("EmptyCommitment"):
        use(s, query_commitment=ZERO32)
    with reverts("EmptyCommitment"):
        use(s, result_commitment=ZERO32)
    with reverts("NoSubjects"):
        use(s, subjects=0)
    with reverts("EmptyUseKind"):
        fn = s.bank.training.functions.recordModelUse(
            s.job, digest("model-2"), ZERO32, digest("q"), digest("r"), 1
        )
        s.bank.send(fn)

    # The Python side refuses what no transaction could carry.
    for bad in ({"kind": ""}, {"kind": "k" * 33}, {"subjects": 2**32}, {"subjects": -1}):
        with pytest.raises(UsageError):
            use(s, **bad)
    with reverts("UnknownJob", jobId=99):
        s.c.reader.jobs.model_uses(99)
    with reverts("UnknownJob", jobId=99):
        s.c.reader.jobs.model_use_count(99)
    assert s.c.reader.jobs.model_use_count(s.job) == 0
    assert s.c.reader.jobs.model_uses(s.job) == []


def test_use_is_bound_to_the_jobs_consents(chain: Chain) -> None:
    s = job_setup(chain, valid_for=2_000)
    anchor(s, 1)
    assert use(s).use_index == 1
    s.logistics.consents.revoke(s.shipments, s.bank.address, PURPOSE)
    consent_gone: dict[str, Any] = {
        "datasetId": s.shipments,
        "grantee": s.bank.address,
        "purpose": PURPOSE32,
    }
    with reverts("ConsentNotValid", **consent_gone) as refused:
        use(s)
    assert str(refused.value) == (
        f"Dataset {s.shipments} has no valid consent for grantee {s.bank.address} and purpose "
        f"0x{PURPOSE32.hex()}."
    )
    with reverts("ConsentNotValid", **consent_gone):
        use(s, ledger=s.institute, kind=REFERRAL)

    # Granted again, uses go on, after the job's full re-check.
    now = s.logistics.now()
    s.logistics.consents.grant(s.shipments, s.bank.address, PURPOSE, now, now + 2_000)
    again = use(s)
    assert again.use_index == 2
    (check,) = logged(s, "JobRevalidated", again.block_number)
    assert check["windowEnd"] == now + 2_000

    # A consent that ran out refuses the use as a revoked one does.
    chain.increase_time(3_000)
    with reverts("ConsentNotValid", **consent_gone):
        use(s)
    assert s.c.reader.jobs.model_use_count(s.job) == 2


def test_a_model_trained_on_revoked_data_is_not_used_after_a_round_without_it(
    chain: Chain,
) -> None:
    """The head model descends from every round: a round the revoking provider sat out does not
    make the model usable again while its consent is gone."""
    s = job_setup(chain)
    anchor(s, 1)
    s.logistics.consents.revoke(s.shipments, s.bank.address, PURPOSE)
    job = s.c.reader.jobs.get(s.job)
    anchor(s, 2, participant_mask=participant_mask(job.participants, [s.bank.address]))
    with reverts("ConsentNotValid", datasetId=s.shipments, grantee=s.bank.address):
        use(s)
