"""A data party of the SME-credit job discloses, for an auditor, the businesses it trained on:
each one's place in its consent tree and its PSI key for the job
(:mod:`consortium.protocol.vertical.disclosure`), so that the auditor can check that every
business of the intersection consented on both sides.

Everything comes from the party's own records in the run's directory: its rows of the
intersection (its alignment record), the subjects version the job's model spec names for its
dataset, its consent tree of that version rebuilt from its subject secret over the businesses
that consented then (from the seed and its withdrawal record: a later withdrawal leaves an
earlier job's disclosure as it was), and the PSI key the set-up kept. The file is written in
the party's directory, readable by the party only, until it hands it over: it names businesses
and holds their salts, which would let its reader test guessed ids against the dataset's
subjects root.
"""

from __future__ import annotations

import json
from pathlib import Path

from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.protocol.vertical.disclosure import PartyDisclosure
from consortium.scenarios.parties import PRIVATE_FILE
from consortium.scenarios.party_secrets import read_psi_key, read_subject_secret
from consortium.scenarios.sme_credit import Alignment, SmeRun
from consortium.scenarios.sme_inputs import (
    Withdrawals,
    consent_tree,
    consenting_rows,
    read_inputs,
)
from consortium.store.artifacts import ArtifactError

DISCLOSURE_FILE = "subject-disclosure-job-{job}.json"


def disclosure_of(run: SmeRun, party: str) -> PartyDisclosure:
    """The disclosure of data party ``party`` (``bank`` or ``platform``) for the run's job."""
    which, owner = run.data_party(party, "disclose")
    dataset = run.datasets[which]
    data, _ = read_inputs(run.settings.businesses, run.settings.seed, run.files)
    table = (data.bank, data.platform)[which]
    alignment = Alignment.load(
        owner.store, run.alignments[which], table.num_rows, f"{owner.name}'s alignment"
    )
    try:
        version = run.institute.store.get_json(run.model_spec)["subjects"][str(dataset)]
    except ArtifactError as exc:
        raise UsageError(f"the job's model spec: {exc}") from None
    except (KeyError, TypeError):
        raise UsageError(f"the job's model spec names no subjects version of {dataset}") from None
    if type(version) is not int:
        raise UsageError(f"the job's model spec names subjects version {version!r} of {dataset}")
    withdrawn = Withdrawals.read(owner.directory, dataset).through(version)
    settings = run.settings
    consenting = consenting_rows(table, settings.consent_share, settings.seed, withdrawn)
    tree = consent_tree(table, consenting, read_subject_secret(owner))
    return PartyDisclosure(
        run.job_id,
        dataset,
        version,
        tuple(tree.disclose(table.ids[row]) for row in alignment.rows),
        read_psi_key(owner),
    )


def disclose(run: SmeRun, party: str) -> Path:
    """Writes the disclosure of ``party`` for the run's job in its directory; returns its path."""
    disclosure = disclosure_of(run, party)
    _, owner = run.data_party(party, "disclose")
    path = owner.directory / DISCLOSURE_FILE.format(job=run.job_id)
    write_text_atomically(path, json.dumps(disclosure.to_json()), mode=PRIVATE_FILE)
    return path
