"""``consortium predict``: the bank uses the SME-credit model of a ``simulate sme-credit`` run,
scoring an applicant (``score``) or listing the suitable businesses it shares with the platform
(``referral``); each use is anchored on the run's node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from consortium.chain.backend import EMBEDDED, connect
from consortium.chain.base import Chain
from consortium.cli.output import emit_json
from consortium.cli.params import json_option
from consortium.errors import UsageError
from consortium.ledger.jobs import ModelUse
from consortium.scenarios import sme_use
from consortium.scenarios.sme_credit import DATA_PARTIES

F = TypeVar("F", bound=Callable[..., Any])

out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The --out directory of a 'simulate sme-credit' run.",
)
chain_option = click.option(
    "--chain",
    "chain_url",
    required=True,
    help="The JSON-RPC URL of the node the run used.",
)


def data_party_option(help_text: str) -> Callable[[F], F]:
    """``--party``: the bank or the platform of the run, the one that ``help_text`` says."""
    return click.option("--party", type=click.Choice(DATA_PARTIES), required=True, help=help_text)


@click.group()
def predict() -> None:
    """Use the SME-credit model of a simulation; every use is anchored on chain."""


@predict.command("score")
@out_option
@chain_option
@click.option("--business", required=True, help="The applicant's id, e.g. SME-000123.")
@json_option
def score_command(out: Path, chain_url: str, business: str, as_json: bool) -> None:
    """The default probability of one applicant, the bank and the platform each scoring
    their own columns."""
    chain = _node(chain_url)
    scoring = sme_use.score(chain, sme_use.load_run(chain, out), business)
    use = scoring.recorded.use
    if as_json:
        emit_json(
            {
                "business": business,
                "defaultProbability": scoring.default_probability,
                "use": _use_json(use),
                "disclosure": scoring.recorded.disclosure_digest.hex(),
            }
        )
        return
    click.echo(
        f"{business}: default probability {scoring.default_probability:.4f}; {_anchored(use)}"
    )


@predict.command("referral")
@out_option
@chain_option
@click.option(
    "--max-default-rate",
    type=click.FloatRange(0, 1, min_open=True),
    default=sme_use.DEFAULT_MAX_DEFAULT_RATE,
    show_default=True,
    help="List the businesses whose default probability is below this.",
)
@json_option
def referral_command(out: Path, chain_url: str, max_default_rate: float, as_json: bool) -> None:
    """The bank's list of suitable businesses among those both parties share and hold
    consent for, written to a CSV file in the bank's directory."""
    chain = _node(chain_url)
    referral = sme_use.refer(chain, sme_use.load_run(chain, out), max_default_rate=max_default_rate)
    if as_json:
        emit_json(referral_json(referral))
        return
    click.echo(referral_line(referral))


def referral_json(referral: sme_use.Referral, *, kept: bool = True) -> dict[str, object]:
    """The referral for machines; ``list`` is None when the file is not ``kept`` (a run's
    temporary directory)."""
    return {
        "scored": referral.scored,
        "suitable": len(referral.suitable),
        "maxDefaultRate": referral.max_default_rate,
        "list": str(referral.path) if kept else None,
        "use": _use_json(referral.recorded.use),
        "disclosure": referral.recorded.disclosure_digest.hex(),
    }


def referral_line(referral: sme_use.Referral, *, kept: bool = True) -> str:
    """One line for people: how many were scored and listed, where the list is (or that it is
    not ``kept``: a run without --out), the use."""
    where = f"listed in {referral.path}" if kept else "listed (pass --out to keep the list)"
    return (
        f"referral: {referral.scored:,} shared consented businesses scored, "
        f"{len(referral.suitable):,} below a default rate of {referral.max_default_rate:g} "
        f"{where}; {_anchored(referral.recorded.use)}"
    )


def _node(url: str) -> Chain:
    if url == EMBEDDED:
        raise UsageError(
            "predict needs the node the run used (--chain URL): the embedded chain lived and "
            "died with the run's process"
        )
    return connect(url)


def _anchored(use: ModelUse) -> str:
    return (
        f"use {use.use_index} of job {use.job_id} anchored in transaction {use.transaction}, "
        f"block {use.block_number}"
    )


def _use_json(use: ModelUse) -> dict[str, object]:
    return {
        "jobId": use.job_id,
        "index": use.use_index,
        "kind": use.kind,
        "model": use.model_digest.hex(),
        "caller": use.caller,
        "queryCommitment": use.query_commitment.hex(),
        "resultCommitment": use.result_commitment.hex(),
        "subjects": use.subjects,
        "transaction": use.transaction,
        "block": use.block_number,
    }
