"""A business withdraws its consent from a data party of the SME-credit scenario: the party
publishes its dataset's consent tree without it as a new subjects version, so that later jobs
leave it out while every earlier job keeps the version it used.

The party records the withdrawal in its own directory (:class:`~consortium.scenarios.
sme_inputs.Withdrawals`: which ids, at which version) before it sends the transaction, so that
the tree of every version can be rebuilt from the seed and that record, and a run cut short
between the two is finished by running it again: the recorded version is published then. A
withdrawal already on chain sends nothing. The dataset's owner is the only one who changes its
subjects root, so the version a withdrawal gets is known before it is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from consortium.chain.base import Chain
from consortium.errors import UsageError
from consortium.fl.party_table import PartyTable
from consortium.ledger.client import Ledger
from consortium.scenarios.parties import Party
from consortium.scenarios.party_secrets import read_subject_secret
from consortium.scenarios.sme_credit import SmeRun, SmeSettings
from consortium.scenarios.sme_inputs import (
    Withdrawals,
    consent_tree,
    consenting_rows,
    read_inputs,
)


def withdraw(
    chain: Chain,
    run: SmeRun,
    party: str,
    business_ids: Sequence[str],
    *,
    sent: Callable[[str], None] = lambda _: None,
) -> int:
    """Withdraws the consent of ``business_ids`` from ``party``'s dataset (``bank`` or
    ``platform``); returns the subjects version now in force, and calls ``sent`` with the hash
    of each transaction it sends. Running it again after it completed sends nothing; after it
    was cut short, it publishes what it recorded.

    Raises:
        UsageError: for another party, no ids, or an id the party does not hold, that did not
            consent, or that already withdrew (except all of one recorded withdrawal: a rerun).
    """
    which, owner = run.data_party(party, "hold consents")
    ids = tuple(sorted(set(business_ids)))
    if not ids:
        raise UsageError("name at least one business that withdraws its consent")
    dataset = run.datasets[which]
    ledger = Ledger(chain, run.deployment, owner.account)
    record = Withdrawals.read(owner.directory, dataset)
    on_chain = ledger.consents.dataset(dataset).subjects_version
    if not on_chain <= record.latest <= on_chain + 1:
        raise UsageError(
            f"dataset {dataset} is at subjects version {on_chain} on chain, but the {party}'s "
            f"withdrawal record in {owner.directory} ends at version {record.latest}: withdraw "
            "through the run that recorded the last version"
        )
    data, _ = read_inputs(run.settings.businesses, run.settings.seed, run.files)
    side = _Side(owner, (data.bank, data.platform)[which], run.settings, ledger)
    if record.latest > on_chain:  # recorded, and cut short before its transaction
        side.publish(record, sent)
    if ids not in (recorded for _, recorded in record.versions):
        record = side.record(record, ids)
        side.publish(record, sent)
    return record.latest


@dataclass(frozen=True)
class _Side:
    """The withdrawing party, its table, the run's settings and its ledger."""

    owner: Party
    table: PartyTable
    settings: SmeSettings
    ledger: Ledger

    def record(self, record: Withdrawals, ids: tuple[str, ...]) -> Withdrawals:
        """The record with the withdrawal of ``ids`` at its next version, written to the
        owner's directory; refused unless each id is a business of the owner's that consents
        now."""
        name, table = self.owner.name, self.table
        consented = {table.ids[i] for i in self._consenting(frozenset()).tolist()}
        withdrawn = record.through(record.latest)
        for business in ids:
            if business in withdrawn:
                version = next(v for v, recorded in record.versions if business in recorded)
                raise UsageError(
                    f"business {business!r} already withdrew from the {name} (subjects version "
                    f"{version})"
                )
            if business not in consented:
                held = business in set(table.ids)
                raise UsageError(
                    f"business {business!r} never consented to the {name}"
                    if held
                    else f"the {name} holds no business {business!r}"
                )
        record = record.then(ids)
        record.write(self.owner.directory)
        return record

    def publish(self, record: Withdrawals, sent: Callable[[str], None]) -> None:
        """Publishes the root of the owner's consent tree at the record's last version, and
        reports the transaction's hash."""
        version = record.latest
        rows = self._consenting(record.through(version))
        root = consent_tree(self.table, rows, read_subject_secret(self.owner)).root
        ledger = self.ledger
        first = ledger.chain.w3.eth.block_number + 1
        published = ledger.consents.update_subjects(record.dataset, root)
        if published != version:
            raise UsageError(
                f"dataset {record.dataset}'s new root is subjects version {published}, not the "
                f"{version} the {self.owner.name} recorded: another run changed it meanwhile"
            )
        events = ledger.consent_registry.events.SubjectsRootUpdated().get_logs(
            from_block=first, argument_filters={"datasetId": record.dataset}
        )
        (event,) = (e for e in events if e["args"]["version"] == version)
        sent(event["transactionHash"].to_0x_hex())

    def _consenting(self, withdrawn: frozenset[str]) -> NDArray[np.intp]:
        settings = self.settings
        return consenting_rows(self.table, settings.consent_share, settings.seed, withdrawn)
