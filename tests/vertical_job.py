"""A small hetero-lr/1 job on an embedded chain, for the tests of the vertical round and its
audit: the consortium, both datasets and the consent, the job, and its coordinator and data
parties on the round engine (512-bit keys, 256 rows, a few seconds to convergence)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount

from consortium.chain.embedded import EmbeddedChain
from consortium.crypto.eip712 import Domain
from consortium.fl.block_lr import DescentConfig
from consortium.fl.party_table import PartyTable
from consortium.fl.vertical.hetero_lr import set_up as set_up_roles
from consortium.fl.vertical.paillier import generate_keypair
from consortium.fl.vertical.terms import Terms
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.roles import Role
from consortium.orchestration.anchorer import ChainAnchorer
from consortium.orchestration.engine import RoundEngine, RoundResult
from consortium.protocol.base import RoundProtocol
from consortium.protocol.vertical.party import VerticalParty
from consortium.protocol.vertical.round import PROTOCOL_ID, HeteroLRRound, joint_model
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal

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


def new_job(directory: Path) -> Job:
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
    engine, protocol = new_engine(job)
    commitments = {party.address: party.commit(0) for party in protocol.parties.values()}
    close(engine, protocol)
    initial = protocol.store.put_json(joint_model(0, commitments, None))
    spec = protocol.store.put_json({"protocol": PROTOCOL_ID, "rows": ROWS})
    job.job_id = ledgers[institute.address].jobs.create(
        purpose=PURPOSE, model_spec_digest=spec, initial_model_digest=initial,
        consumer=bank.address, participants=[bank.address, platform.address],
        dataset_ids=[own, theirs],
    )  # fmt: skip
    return job


def new_engine(
    job: Job, depth: int = 1, wrap: Callable[[HeteroLRRound], RoundProtocol] | None = None
) -> tuple[RoundEngine, HeteroLRRound]:
    """The job's coordinator and both data parties, fresh (as after a restart), each with its
    own store and journal under the job's directory. ``wrap``, if given, makes what the engine
    runs in place of the honest round out of it (a dishonest coordinator, say)."""
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
    honest = HeteroLRRound(store, parties[0], parties[1], roles.arbiter, domain)
    ledger = Ledger(job.chain, job.deployment, job.institute)
    engine = RoundEngine(
        honest if wrap is None else wrap(honest), ChainAnchorer(ledger, job.job_id),
        Journal(directory / "institute" / "journal.jsonl"), depth=depth,
    )  # fmt: skip
    return engine, honest


def close(engine: RoundEngine, protocol: HeteroLRRound) -> None:
    engine.journal.close()
    for party in protocol.parties.values():
        party.journal.close()


def run(engine: RoundEngine, protocol: HeteroLRRound, rounds: int) -> list[RoundResult]:
    try:
        return engine.run(rounds)
    finally:
        close(engine, protocol)
