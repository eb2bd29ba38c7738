"""The coordinator of a horizontal job: FedAvg rounds on the round engine, anchored on chain.

This is the composition DESIGN.md's steps 1-6 describe for the AML scenario: the
:class:`~consortium.protocol.fedavg.round.FedAvgRound` protocol over a transport to the
participants, the :class:`~consortium.orchestration.anchorer.ChainAnchorer` of the job, and
the :class:`~consortium.orchestration.engine.RoundEngine` that runs, journals and resumes
them (write-ahead: nothing is anchored before the artifacts it commits to are durable and the
intent to anchor them is journaled).
"""

from __future__ import annotations

from consortium.crypto.eip712 import Domain
from consortium.fl.data import LabeledTable
from consortium.ledger.client import Ledger
from consortium.orchestration.anchorer import ChainAnchorer
from consortium.orchestration.engine import RoundEngine
from consortium.protocol.fedavg.round import FedAvgRound, Transport
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal


class Coordinator(RoundEngine):
    """Runs the FedAvg rounds of job ``job_id`` as its coordinator, anchoring each on chain."""

    def __init__(
        self,
        ledger: Ledger,
        job_id: int,
        store: ArtifactStore,
        journal: Journal,
        transport: Transport,
        validation: LabeledTable,
        *,
        depth: int = 1,
    ) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self.store = store
        self.domain = Domain(ledger.chain.chain_id, ledger.deployment.ledger)
        self.fedavg = FedAvgRound(store, transport, validation, self.domain)
        super().__init__(self.fedavg, ChainAnchorer(ledger, job_id), journal, depth=depth)

    @property
    def transport(self) -> Transport:
        return self.fedavg.transport
