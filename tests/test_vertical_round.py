"""The hetero-lr/1 round on the round engine: epochs anchored on chain, each party's record
signed over its transcript and weight commitment, receipts checked, the convergence rule
ending the job, and a fresh set of parties resuming from the anchored model."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from consortium.chain.embedded import EmbeddedChain
from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.fl.block_lr import DescentConfig
from consortium.fl.party_table import PartyTable
from consortium.fl.vertical.hetero_lr import set_up as set_up_roles
from consortium.fl.vertical.paillier import generate_keypair
from consortium.fl.vertical.terms import HeteroLRError, Terms
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.roles import Role
from consortium.orchestration.anchorer import ChainAnchorer
from consortium.orchestration.engine import RoundEngine, RoundResult
from consortium.protocol.vertical.party import CommitmentUnknown, VerticalParty
from consortium.protocol.vertical.round import PROTOCOL_ID, HeteroLRRound, joint_model
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal, JournalReader

ROWS, GUEST_FEATURES, HOST_FEATURES = 256, 3, 4
PURPOSE = "sme-credit-scoring"


def _tables(seed: int) -> tuple[PartyTable, PartyTable]:
    rng = np.random.default_rng(seed)
    xg, xh = rng.normal(size=(ROWS, GUEST_FEATURES)), rng.normal(size=(ROWS, HOST_FEATURES))
    logit = xg @ [0.8, -0.5, 0.3] + xh @ [1.0, 0.0, -0.7, 0.4] - 0.5
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    ids = tuple(f"SME-{i:06}" for i in range(ROWS))
    guest = PartyTable("bank", ids, tuple(f"g{i}" for i in range(GUEST_FEATURES)), xg, y)
    host = PartyTable("platform", ids, tuple(f"h{i}" for i in range(HOST_FEATURES)), xh)
    return guest, host


@dataclass
class Job:
    chain: EmbeddedChain
    deployment: Deployment
    job_id: int
    directory: Path
    institute: LocalAccount
    bank: LocalAccount
    platform: LocalAccount
    terms: Terms


KEYS = generate_keypair(512)
TERMS = Terms(
    ROWS, GUEST_FEATURES, HOST_FEATURES,
    DescentConfig(learning_rate=0.3, batch_size=128, l2=0.01, max_epochs=16, tolerance=3e-3),
    key_bits=512,
)  # fmt: skip


def _job(directory: Path) -> Job:
    """A fresh chain with the consortium, the two datasets, the consent and the job; the data
    parties commit to their initial weights before it is created, as the scenario's do."""
    chain = EmbeddedChain()
    institute, bank, platform = (Account.create() for _ in range(3))
    for account in (institute, bank, platform):
        chain.fund(account.address, 10**20)
    deployment = deploy(
        chain, institute,
        [
            Founder(institute.address, "Research Institute", Role.COORDINATOR | Role.AUDITOR),
            Founder(bank.address, "Bank", Role.PROVIDER | Role.CONSUMER),
            Founder(platform.address, "Logistics Platform", Role.PROVIDER),
        ],
        quorum_bps=5000, proposal_lifetime=86_400,
    )  # fmt: skip
    ledgers = {a.address: Ledger(chain, deployment, a) for a in (institute, bank, platform)}
    own = ledgers[bank.address].consents.register("bank-loans", b"\x01" * 32, b"\x02" * 32)
    theirs = ledgers[platform.address].consents.register("shipments", b"\x03" * 32, b"\x04" * 32)
    now = ledgers[institute.address].now()
    ledgers[platform.address].consents.grant(theirs, bank.address, PURPOSE, now, now + 10**6)
    job = Job(chain, deployment, 0, directory, institute, bank, platform, TERMS)
    engine, protocol = _engine(job)
    commitments = {party.address: party.commit(0) for party in protocol.parties.values()}
    _close(engine, protocol)
    initial = protocol.store.put_json(joint_model(0, commitments, None))
    spec = protocol.store.put_json({"protocol": PROTOCOL_ID, "rows": ROWS})
    job.job_id = ledgers[institute.address].jobs.create(
        purpose=PURPOSE, model_spec_digest=spec, initial_model_digest=initial,
        consumer=bank.address, participants=[bank.address, platform.address],
        dataset_ids=[own, theirs],
    )  # fmt: skip
    return job


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return _job(tmp_path)


def _engine(job: Job, depth: int = 1) -> tuple[RoundEngine, HeteroLRRound]:
    """The job's coordinator and both data parties, fresh (as after a restart), each with its
    own store and journal under the job's directory."""
    guest_table, host_table = _tables(5)
    roles = set_up_roles(guest_table, host_table, job.terms, keys=KEYS, rng=random.Random(1))
    directory = job.directory
    parties = [
        VerticalParty(
            name,
            account,
            role,
            ArtifactStore(directory / name / "store"),
            Journal(directory / name / "journal.jsonl"),
            Ledger(job.chain, job.deployment, account),
        )
        for account, name, role in [
            (job.bank, "bank", roles.guest),
            (job.platform, "platform", roles.host),
        ]
    ]
    domain = Domain(job.chain.chain_id, job.deployment.ledger)
    store = ArtifactStore(directory / "institute" / "store")
    protocol = HeteroLRRound(store, parties[0], parties[1], roles.arbiter, domain)
    ledger = Ledger(job.chain, job.deployment, job.institute)
    engine = RoundEngine(
        protocol, ChainAnchorer(ledger, job.job_id),
        Journal(directory / "institute" / "journal.jsonl"), depth=depth,
    )  # fmt: skip
    return engine, protocol


def _close(engine: RoundEngine, protocol: HeteroLRRound) -> None:
    engine.journal.close()
    for party in protocol.parties.values():
        party.journal.close()


def _run(engine: RoundEngine, protocol: HeteroLRRound, rounds: int) -> list[RoundResult]:
    try:
        return engine.run(rounds)
    finally:
        _close(engine, protocol)


def test_epochs_are_anchored_until_the_rule_ends_the_job(job: Job, tmp_path: Path) -> None:
    engine, protocol = _engine(job, depth=2)
    results = _run(engine, protocol, job.terms.config.max_epochs)
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
    engine, protocol = _engine(job)
    results = _run(engine, protocol, 2)
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
    engine, protocol = _engine(_job(tmp_path / "straight"), depth=2)
    expected = _run(engine, protocol, 16)
    expected_weights = _final_weights(protocol, expected[-1].anchor.model_digest)

    resumed = _job(tmp_path / "resumed")
    engine, protocol = _engine(resumed, depth=2)
    assert len(_run(engine, protocol, 3)) == 3
    engine, protocol = _engine(resumed, depth=2)
    results = _run(engine, protocol, 16)
    assert [r.resumed for r in results[:3]] == [True] * 3
    assert len(results) == len(expected)
    assert [r.metrics["loss"] for r in results] == [r.metrics["loss"] for r in expected]
    for got, want in zip(
        _final_weights(protocol, results[-1].anchor.model_digest), expected_weights, strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_a_party_goes_on_only_from_weights_it_committed_to(job: Job) -> None:
    engine, protocol = _engine(job)
    try:
        with pytest.raises(CommitmentUnknown, match=r"^bank never committed to weights 0000"):
            protocol.guest.weights_of(bytes(32))
        with pytest.raises(HeteroLRError, match="not its shape"):
            protocol.host.role.restore({"weights": np.zeros(HOST_FEATURES + 1)})
    finally:
        _close(engine, protocol)
