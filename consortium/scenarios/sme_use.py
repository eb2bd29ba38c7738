"""Using the SME-credit model once trained: the bank scores an applicant, or draws up its list of
suitable businesses among those it shares with the platform; each use is anchored on chain.

The bank (the guest) and the platform (the host) each build their side from their own records in
the run's directory: the party's table, standardized as its job tables were
(:func:`~consortium.scenarios.sme_credit.training_standardizer`); its rows of the job's
intersection, from its alignment record (the businesses both shared and consented to when the
job was set up: no fresh PSI); and its consent tree, rebuilt from its subject secret over the
businesses that consented, which must still be its dataset's current subjects root. They talk
only in the protocol's bytes (:mod:`consortium.protocol.vertical.scoring`). The bank records each
use with ``recordModelUse`` (``score`` with one subject, ``referral`` with the number scored),
keeps its disclosure in its store and journal, and writes a referral's list to a CSV file in its
own directory: ids and default probabilities, the bank's list and nobody else's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from consortium.chain.base import Chain
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.fl.party_table import PartyTable
from consortium.ledger.client import Ledger
from consortium.protocol.vertical.scoring import Recorded, ScoringGuest, ScoringHost, ScoringSide
from consortium.scenarios.parties import Party
from consortium.scenarios.party_secrets import read_subject_secret
from consortium.scenarios.sme_credit import (
    SCENARIO_FILE,
    Alignment,
    SmeRun,
    load,
    training_standardizer,
)
from consortium.scenarios.sme_inputs import (
    Withdrawals,
    consent_tree,
    consenting_rows,
    read_inputs,
)
from consortium.store.journal import Journal

DEFAULT_MAX_DEFAULT_RATE = 0.10
"""The synthetic portfolio defaults at about 8%: a business the model puts below 10% is among
the better risks, where a model this regularised puts few below 5%."""
REFERRALS_DIR = "referrals"
CSV_HEADER = "id,default_probability"


@dataclass(frozen=True)
class Scoring:
    """One applicant scored and the use recorded."""

    business: str
    default_probability: float
    recorded: Recorded


@dataclass(frozen=True)
class Referral:
    """The bank's list of suitable businesses (lowest default probability first), how many
    were scored, where the list is, and the use recorded."""

    scored: int
    suitable: tuple[tuple[str, float], ...]
    max_default_rate: float
    path: Path
    recorded: Recorded


def load_run(chain: Chain, out: Path) -> SmeRun:
    """The SME-credit run recorded in ``out``, checked by
    :func:`~consortium.scenarios.sme_credit.load`."""
    if not (out / SCENARIO_FILE).is_file():
        raise UsageError(f"no SME-credit run in {out}: it holds no {SCENARIO_FILE}")
    return load(chain, out)


def score(chain: Chain, run: SmeRun, business: str) -> Scoring:
    """Scores the applicant ``business`` with the job's head model and records the use."""
    with _parties(chain, run) as (guest, host):
        probability, disclosure = guest.score(business, host.answer_score)
        return Scoring(business, probability, guest.record(disclosure, subjects=1))


def refer(
    chain: Chain, run: SmeRun, *, max_default_rate: float = DEFAULT_MAX_DEFAULT_RATE
) -> Referral:
    """Scores every business both parties share and hold consent for, records the use, and
    writes the list of those below ``max_default_rate`` to a CSV file in the bank's directory."""
    if not (math.isfinite(max_default_rate) and 0 < max_default_rate <= 1):
        raise UsageError(f"the maximum default rate must be in (0, 1], not {max_default_rate}")
    with _parties(chain, run) as (guest, host):
        suitable, scored, disclosure = guest.refer(max_default_rate, host.answer_referral)
        if scored == 0:
            raise UsageError("the bank and the platform share no consented business to score")
        recorded = guest.record(disclosure, subjects=scored)
    use = recorded.use
    path = run.bank.directory / REFERRALS_DIR / f"job-{use.job_id}-use-{use.use_index}.csv"
    path.parent.mkdir(exist_ok=True)
    lines = [CSV_HEADER, *(f"{business},{p!r}" for business, p in suitable)]
    write_text_atomically(path, "\n".join(lines) + "\n")
    return Referral(scored, tuple(suitable), max_default_rate, path, recorded)


@contextmanager
def _parties(chain: Chain, run: SmeRun) -> Iterator[tuple[ScoringGuest, ScoringHost]]:
    """The bank's and the platform's sides; the bank's journal is open as its one writer (it
    journals each use) until the context ends, the platform's is only read."""
    data, _ = read_inputs(run.settings.businesses, run.settings.seed, run.files)
    journal = run.bank.journal()
    try:
        bank = _side(run, run.bank, data.bank, 0, journal)
        platform = _side(run, run.platform, data.platform, 1, run.platform.journal_reader())
        signer = Ledger(chain, run.deployment, run.bank.account)
        guest = ScoringGuest(bank, signer, run.job_id, run.institute.store)
        yield guest, ScoringHost(platform, Ledger(chain, run.deployment), run.job_id)
    finally:
        journal.close()


def _side(
    run: SmeRun, party: Party, table: PartyTable, which: int, journal: Journal
) -> ScoringSide:
    """A data party's side (``which``: 0 the bank, 1 the platform): its table standardized as
    in the job, its rows of the intersection and its consent tree as it stands now, rebuilt
    from its subject secret over the businesses that consented less every withdrawal it
    recorded."""
    alignment = Alignment.load(
        party.store, run.alignments[which], table.num_rows, f"{party.name}'s alignment"
    )
    record = Withdrawals.read(party.directory, run.datasets[which])
    settings = run.settings
    withdrawn = record.through(record.latest)
    consenting = consenting_rows(table, settings.consent_share, settings.seed, withdrawn)
    tree = consent_tree(table, consenting, read_subject_secret(party))
    return ScoringSide(
        party.name,
        party.account.address,
        run.datasets[which],
        training_standardizer(table, alignment).apply(table),
        alignment.rows,
        tree,
        party.store,
        journal,
    )
