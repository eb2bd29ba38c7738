"""``consortium disclose``: a data party of a ``simulate sme-credit`` run writes its subject
disclosure for the run's job (:mod:`consortium.scenarios.sme_disclosure`), or with ``--weights``
its weights of the job's head model (:mod:`consortium.scenarios.sme_weights`), which it hands to
an auditor for ``consortium audit BUNDLE --disclosure FILE``."""

from __future__ import annotations

from pathlib import Path

import click

from consortium.chain.backend import EMBEDDED, connect
from consortium.cli.output import emit_json
from consortium.cli.params import json_option
from consortium.cli.predict import chain_option, data_party_option, out_option
from consortium.errors import UsageError
from consortium.scenarios import sme_disclosure, sme_use, sme_weights


@click.command("disclose")
@out_option
@chain_option
@data_party_option("The data party that discloses.")
@click.option(
    "--weights",
    is_flag=True,
    help="Disclose the party's weights of the job's head model and their salt instead, which "
    "open its commitment in that model.",
)
@json_option
def disclose_command(out: Path, chain_url: str, party: str, weights: bool, as_json: bool) -> None:
    """Write a data party's disclosure of the businesses its job trained on: each one's place
    in its consent tree, and its PSI key for the job; or, with --weights, of the weights it
    trained. The file, in the party's directory and readable by it only, names businesses (or
    holds the party's part of the model): hand it to the auditor only."""
    if chain_url == EMBEDDED:
        raise UsageError(
            "disclose needs the node the run used (--chain URL), not the embedded chain"
        )
    chain = connect(chain_url)
    try:
        run = sme_use.load_run(chain, out)
        if weights:
            path = sme_weights.disclose_weights(chain, run, party)
        else:
            path = sme_disclosure.disclose(run, party)
    finally:
        chain.close()
    if as_json:
        emit_json({"party": party, "weights": weights, "disclosure": str(path)})
        return
    what = "weights disclosure" if weights else "disclosure"
    click.echo(f"the {party}'s {what}: {path}")
