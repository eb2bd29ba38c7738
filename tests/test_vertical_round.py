"""The hetero-lr/1 round on the round engine: epochs anchored on chain, each party's record
signed over its transcript and weight commitment, receipts checked, the convergence rule
ending the job, and a fresh set of parties resuming from the anchored model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vertical_job import HOST_FEATURES, ROWS, Job, close, new_engine, new_job, run

from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.fl.vertical.terms import HeteroLRError
from consortium.ledger.client import Ledger
from consortium.protocol.vertical.party import CommitmentUnknown
from consortium.protocol.vertical.round import HeteroLRRound
from consortium.store.journal import JournalReader


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return new_job(tmp_path)


def test_epochs_are_anchored_until_the_rule_ends_the_job(job: Job, tmp_path: Path) -> None:
    engine, protocol = new_engine(job, depth=2)
    results = run(engine, protocol, job.terms.config.max_epochs)
    assert results[-1].final and not any(r.final for r in results[:-1])
    assert 2 <= len(results) < job.terms.config.max_epochs
    ledger = Ledger(job.chain, job.deployment)
    assert ledger.jobs.get(job.job_id).last_round == len(results)
    losses = [r.metrics["loss"] for r in results]
    assert losses[-1] < losses[0]
    store = protocol.store
    journal = JournalReader(tmp_path / "institute" / "journal.jsonl")
    for result in results:
        assert ledger.jobs.verify(result.anchor)
        model = store.get_json(result.anchor.model_digest)
        assert sorted(model["weights"]) == sorted([job.bank.address, job.platform.address])
        intent = journal.last("intent", round=result.round)
        leaves = [store.get(bytes.fromhex(d)) for d in intent["records"]]
        assert MerkleTree(leaves).root == result.anchor.merkle_root
    # Every message a party received was sent by another party, and the other way round.
    last = store.get_json(results[-1].anchor.metrics_digest)
    assert last["converged"] is True


def _final_weights(protocol: HeteroLRRound, model_digest: bytes) -> list[np.ndarray]:
    """Each party's weights behind the model's commitments, opened by the party itself."""
    model = protocol.store.get_json(model_digest)
    return [
        np.concatenate([np.ravel(v) for v in party.weights_of(
            bytes.fromhex(model["weights"][party.address])).values()])
        for party in (protocol.guest, protocol.host)
    ]  # fmt: skip


def test_the_records_commit_to_transcripts_and_weights(job: Job, tmp_path: Path) -> None:
    engine, protocol = new_engine(job)
    results = run(engine, protocol, 2)
    store = protocol.store
    journal = JournalReader(tmp_path / "institute" / "journal.jsonl")
    for result in results:
        model = store.get_json(result.anchor.model_digest)
        metrics = store.get_json(result.anchor.metrics_digest)
        sent: list[str] = list(metrics["arbiter"]["sent"])
        received: list[str] = list(metrics["arbiter"]["received"])
        for digest in journal.last("intent", round=result.round)["records"]:
            signed = SignedUpdateRecord.from_json(store.get_json(bytes.fromhex(digest)))
            assert signed.recover() == signed.record.participant
            contribution = store.get_json(signed.record.update_digest)
            assert contribution["weights"] == model["weights"][signed.record.participant]
            assert signed.record.num_examples == ROWS
            sent += contribution["sent"]
            received += contribution["received"]
        # Every message one party sent, another received (the verdict by both data parties).
        assert set(sent) == set(received) and len(received) == len(sent) + 1


def test_fresh_parties_resume_from_the_anchored_model(tmp_path: Path) -> None:
    """Three rounds, then every party starts afresh (a restart): the job goes on from the
    weights the anchored model commits to and ends where an uninterrupted job ends."""
    engine, protocol = new_engine(new_job(tmp_path / "straight"), depth=2)
    expected = run(engine, protocol, 16)
    expected_weights = _final_weights(protocol, expected[-1].anchor.model_digest)

    resumed = new_job(tmp_path / "resumed")
    engine, protocol = new_engine(resumed, depth=2)
    assert len(run(engine, protocol, 3)) == 3
    engine, protocol = new_engine(resumed, depth=2)
    results = run(engine, protocol, 16)
    assert [r.resumed for r in results[:3]] == [True] * 3
    assert len(results) == len(expected)
    assert [r.metrics["loss"] for r in results] == [r.metrics["loss"] for r in expected]
    for got, want in zip(
        _final_weights(protocol, results[-1].anchor.model_digest), expected_weights, strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_a_party_goes_on_only_from_weights_it_committed_to(job: Job) -> None:
    engine, protocol = new_engine(job)
    try:
        with pytest.raises(CommitmentUnknown, match=r"^bank never committed to weights 0000"):
            protocol.guest.weights_of(bytes(32))
        with pytest.raises(HeteroLRError, match="not its shape"):
            protocol.host.role.restore({"weights": np.zeros(HOST_FEATURES + 1)})
    finally:
        close(engine, protocol)
