"""Training and scoring the SME-credit job: its hetero-lr/1 rounds on the round engine, and the
quality of the model it ends with next to two baselines computed in the same run.

The bank, the platform and the institute each get their own store, journal and view of the
chain; the epochs run as rounds, anchored one by one (or pipelined), until the arbiter's
convergence rule or the round limit ends the job. The federated model is then scored on the
held-out businesses as it would be used: the platform hands the bank its partial scores of those
rows, and the bank adds its own (FATE's hetero-LR prediction); the weights themselves never leave
their owners. The baselines train in the clear with the same hyperparameters on the same rows:
the bank's features alone, and a centralized model on the joined features (what the parties
would have had by pooling their data, which they may not do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consortium.chain.base import Chain
from consortium.crypto.eip712 import Domain
from consortium.fl.block_lr import LOGISTIC
from consortium.fl.metrics import roc_auc
from consortium.fl.vertical.hetero_lr import set_up as set_up_roles
from consortium.ledger.client import Ledger
from consortium.orchestration.anchorer import ChainAnchorer
from consortium.orchestration.engine import RoundEngine, RoundResult
from consortium.protocol.vertical.party import VerticalParty
from consortium.protocol.vertical.round import HeteroLRRound
from consortium.scenarios.sme_baselines import baseline_run
from consortium.scenarios.sme_credit import SmeRun, VerticalJob, roles_for


@dataclass(frozen=True)
class Quality:
    """Held-out AUC of the federated model and of the baselines trained in the same run."""

    federated: float
    bank_only: float
    centralized: float
    evaluated: int  # held-out businesses scored

    @property
    def lift(self) -> float:
        """What the platform's data adds to the bank's own model."""
        return self.federated - self.bank_only

    @property
    def gap(self) -> float:
        """How far the federated model is from pooling the data in the clear."""
        return self.federated - self.centralized

    def to_json(self) -> dict[str, float | int]:
        return {
            "federatedAuc": self.federated,
            "bankOnlyAuc": self.bank_only,
            "centralizedAuc": self.centralized,
            "lift": self.lift,
            "gapToCentralized": self.gap,
            "evaluated": self.evaluated,
        }


def engine_for(
    chain: Chain, run: SmeRun, job: VerticalJob, *, depth: int = 1
) -> tuple[RoundEngine, HeteroLRRound]:
    """The job's round engine: the institute's arbiter and anchorer, the two data parties."""
    roles = set_up_roles(job.guest_train, job.host_train, job.terms, keys=job.keys)
    parties = [
        VerticalParty(
            party.name,
            party.account,
            role,
            party.store,
            party.journal(),
            Ledger(chain, run.deployment, party.account),  # reads the chain as itself
        )
        for party, role in ((run.bank, roles.guest), (run.platform, roles.host))
    ]
    ledger = Ledger(chain, run.deployment, run.institute.account)
    domain = Domain(chain.chain_id, run.deployment.ledger)
    protocol = HeteroLRRound(run.institute.store, parties[0], parties[1], roles.arbiter, domain)
    engine = RoundEngine(
        protocol, ChainAnchorer(ledger, run.job_id), run.institute.journal(), depth=depth
    )
    return engine, protocol


def run_rounds(
    chain: Chain,
    run: SmeRun,
    on_round: Callable[[RoundResult], None],
    *,
    depth: int = 1,
) -> tuple[list[RoundResult], Quality]:
    """Runs (or finishes) the job's rounds, then scores its model; every party's journal is
    closed, and its writer's lock given up, however the rounds end."""
    job = roles_for(run)
    engine, protocol = engine_for(chain, run, job, depth=depth)
    try:
        results = engine.run(run.settings.max_rounds, on_round)
    finally:
        engine.journal.close()
        for party in protocol.parties.values():
            party.journal.close()
    head = results[-1].anchor.model_digest
    return results, quality(job, protocol, head)


def quality(job: VerticalJob, protocol: HeteroLRRound, model_digest: bytes) -> Quality:
    """The held-out AUC of the model ``model_digest`` names, each party opening its own
    commitment and scoring its own columns, beside the two baselines."""
    model = protocol.store.get_json(model_digest)
    guest, host = protocol.guest, protocol.host
    guest_weights = guest.weights_of(bytes.fromhex(model["weights"][guest.address]))
    host_weights = host.weights_of(bytes.fromhex(model["weights"][host.address]))
    # The platform's partial scores of the held-out rows, as it hands them to the bank.
    host_scores = job.host_evaluation.X @ host_weights["weights"]
    scores = (
        job.guest_evaluation.X @ guest_weights["weights"]
        + float(guest_weights["bias"])
        + host_scores
    )
    train = [job.guest_train.X, job.host_train.X]
    evaluation = [job.guest_evaluation.X, job.host_evaluation.X]
    labels = (job.guest_train.labels, job.guest_evaluation.labels)
    config = job.terms.config
    return Quality(
        federated=roc_auc(labels[1], scores),
        bank_only=baseline_run(train[:1], evaluation[:1], labels, LOGISTIC, config).auc,
        centralized=baseline_run(train, evaluation, labels, LOGISTIC, config).auc,
        evaluated=job.guest_evaluation.num_rows,
    )
