"""A data party of the SME-credit job discloses, for an auditor, the weights it trained: the
opening (salt and weights) of its commitment in the job's head model
(:mod:`consortium.protocol.vertical.weights_disclosure`), so that the auditor can check that
they are the ones the anchored model commits to.

The head is read from the chain, its model object from the coordinator's store, the opening
from the party's own journal and store. The file is written in the party's directory, readable
by the party only, until it hands it over: the weights are its part of the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from consortium.chain.base import Chain
from consortium.crypto.digests import from_hex32
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.ledger.client import Ledger
from consortium.protocol.vertical.party import commitment_opening
from consortium.protocol.vertical.weights_disclosure import WeightsDisclosure
from consortium.scenarios.parties import PRIVATE_FILE
from consortium.scenarios.sme_credit import SmeRun
from consortium.store.artifacts import ArtifactError

WEIGHTS_FILE = "weights-disclosure-job-{job}-round-{round}.json"


def weights_disclosure_of(chain: Chain, run: SmeRun, party: str) -> WeightsDisclosure:
    """The opening of data party ``party``'s (``bank`` or ``platform``) commitment in the head
    model of the run's job."""
    _, owner = run.data_party(party, "disclose")
    job = Ledger(chain, run.deployment).jobs.get(run.job_id)
    if job.last_round == 0:
        raise UsageError(f"job {run.job_id} has no anchored round: no trained weights to disclose")
    try:
        model = run.institute.store.get_json(job.head_model_digest)
    except ArtifactError as exc:
        raise UsageError(f"job {run.job_id}'s head model: {exc}") from None
    named = model.get("weights") if isinstance(model, dict) else None
    commitment = named.get(owner.account.address) if isinstance(named, dict) else None
    if not isinstance(commitment, str):
        raise UsageError(f"job {run.job_id}'s head model names no weights of the {party}")
    salt, weights = commitment_opening(
        owner.name,
        owner.store,
        owner.journal_reader(),
        from_hex32(commitment, what="the head model's commitment"),
    )
    return WeightsDisclosure(run.job_id, job.last_round, owner.account.address, salt, weights)


def disclose_weights(chain: Chain, run: SmeRun, party: str) -> Path:
    """Writes ``party``'s weights disclosure of the job's head in its directory; returns it."""
    disclosure = weights_disclosure_of(chain, run, party)
    _, owner = run.data_party(party, "disclose")
    path = owner.directory / WEIGHTS_FILE.format(job=disclosure.job_id, round=disclosure.round)
    write_text_atomically(path, json.dumps(disclosure.to_json()), mode=PRIVATE_FILE)
    return path
