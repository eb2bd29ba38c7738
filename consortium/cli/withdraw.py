"""``consortium withdraw``: businesses withdraw their consent from a data party of a ``simulate
sme-credit`` run (:mod:`consortium.scenarios.sme_withdrawal`); a later job on the same datasets
(``simulate sme-credit --after``) leaves them out, and the run's own job keeps the subjects
version it used."""

from __future__ import annotations

from pathlib import Path

import click

from consortium.chain.backend import EMBEDDED, connect
from consortium.cli.output import emit_json
from consortium.cli.params import json_option
from consortium.cli.predict import chain_option, data_party_option, out_option
from consortium.errors import UsageError
from consortium.scenarios import sme_credit, sme_use, sme_withdrawal


@click.command("withdraw")
@out_option
@chain_option
@data_party_option("The data party the businesses withdraw their consent from.")
@click.option(
    "--business",
    "businesses",
    multiple=True,
    required=True,
    help="A business that withdraws, e.g. SME-000123; repeat for several.",
)
@json_option
def withdraw_command(
    out: Path, chain_url: str, party: str, businesses: tuple[str, ...], as_json: bool
) -> None:
    """Withdraw businesses' consent: the party records the withdrawal in its directory, then
    publishes its dataset's consent tree without them as a new subjects version. Running it
    again sends nothing once that version is on chain, and finishes it if it is not."""
    if chain_url == EMBEDDED:
        raise UsageError(
            "withdraw needs the node the run used (--chain URL), not the embedded chain"
        )
    chain = connect(chain_url)
    sent: list[str] = []
    try:
        run = sme_use.load_run(chain, out)
        version = sme_withdrawal.withdraw(chain, run, party, businesses, sent=sent.append)
    finally:
        chain.close()
    dataset = run.datasets[sme_credit.DATA_PARTIES.index(party)]
    if as_json:
        emit_json(
            {"party": party, "dataset": dataset, "subjectsVersion": version, "transactions": sent}
        )
        return
    click.echo(f"the {party}'s dataset {dataset} is at subjects version {version}")
    click.echo(
        "\n".join(f"published in transaction {tx}" for tx in sent)
        or "already on chain: nothing sent"
    )
