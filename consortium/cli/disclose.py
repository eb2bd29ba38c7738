"""``consortium disclose``: a data party of a ``simulate sme-credit`` run writes its subject
disclosure for the run's job (:mod:`consortium.scenarios.sme_disclosure`), which it hands to an
auditor for ``consortium audit BUNDLE --disclosure FILE``."""

from __future__ import annotations

from pathlib import Path

import click

from consortium.chain.backend import EMBEDDED, connect
from consortium.cli.output import emit_json
from consortium.cli.params import json_option
from consortium.cli.predict import chain_option, out_option
from consortium.errors import UsageError
from consortium.scenarios import sme_disclosure, sme_use


@click.command("disclose")
@out_option
@chain_option
@click.option(
    "--party",
    type=click.Choice(sme_disclosure.DATA_PARTIES),
    required=True,
    help="The data party that discloses.",
)
@json_option
def disclose_command(out: Path, chain_url: str, party: str, as_json: bool) -> None:
    """Write a data party's disclosure of the businesses its job trained on: each one's place
    in its consent tree, and its PSI key for the job. The file, in the party's directory and
    readable by it only, names businesses: hand it to the auditor only."""
    if chain_url == EMBEDDED:
        raise UsageError(
            "disclose needs the node the run used (--chain URL), not the embedded chain"
        )
    chain = connect(chain_url)
    try:
        path = sme_disclosure.disclose(sme_use.load_run(chain, out), party)
    finally:
        chain.close()
    if as_json:
        emit_json({"party": party, "disclosure": str(path)})
        return
    click.echo(f"the {party}'s disclosure: {path}")
