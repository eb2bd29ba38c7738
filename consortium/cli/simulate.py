"""``consortium simulate``: whole scenarios in one process, on the embedded chain or a node."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import Progress

from consortium.audit import Verdict, open_bundle, verify_bundle
from consortium.chain.backend import connect
from consortium.chain.base import Chain
from consortium.cli.output import emit_json, emit_table
from consortium.cli.params import epochs_option, json_option
from consortium.cli.predict import referral_json, referral_line
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.lockfile import ExclusiveLock, LockHeld
from consortium.orchestration.engine import DEFAULT_DEPTH, MAX_DEPTH, RoundResult
from consortium.orchestration.export import export_job
from consortium.protocol.messages import anchor_to_json
from consortium.protocol.vertical.disclosure import Disclosure
from consortium.scenarios import aml, sme_credit, sme_training, sme_use
from consortium.scenarios.governance import Step, run_governance
from consortium.scenarios.sme_disclosure import disclosure_of
from consortium.scenarios.sme_inputs import PartyFile
from consortium.scenarios.sme_weights import weights_disclosure_of

V = TypeVar("V")
SCRATCH_PREFIX = "consortium-aml-"
SCRATCH_OWNER = "owner"  # the lock a run holds on its temporary directory: <dir>/owner.lock
SCRATCH_GRACE = 86_400.0  # seconds after which an empty directory without a lock is stale

chain_option = click.option(
    "--chain",
    "chain_url",
    default="embedded",
    show_default=True,
    help="'embedded' (in-process) or the JSON-RPC URL of a local dev node.",
)


def pipeline_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--pipeline-depth N`` and ``--no-pipeline``, as every training scenario takes them."""
    depth = click.option(
        "--pipeline-depth",
        "depth",
        type=click.IntRange(1, MAX_DEPTH),
        default=DEFAULT_DEPTH,
        show_default=True,
        help="Rounds in flight at most: round r+1 trains while round r's anchor confirms.",
    )
    off = click.option(
        "--no-pipeline", is_flag=True, help="One round at a time (--pipeline-depth 1)."
    )
    return depth(off(command))


@click.group()
def simulate() -> None:
    """Run a whole consortium scenario in one process."""


@simulate.command("governance")
@chain_option
@json_option
def governance(chain_url: str, as_json: bool) -> None:
    """Found a consortium, vote members in and out, grant, relay and revoke consents."""
    console = Console(stderr=True, quiet=as_json)
    with console.status("founding the consortium") as status:

        def report(step: Step) -> None:
            status.update(f"{step.actor}: {step.action}")

        result = run_governance(connect(chain_url), report=report)
    if as_json:
        emit_json(
            {
                "deployment": result.deployment.to_json(),
                "steps": [s.__dict__ for s in result.steps],
                "ok": True,
            }
        )
        return
    emit_table(
        "governance walkthrough", ("actor", "action", "outcome"),
        [(s.actor, s.action, s.outcome) for s in result.steps],
    )  # fmt: skip
    click.echo(f"walkthrough passed: {len(result.steps)} steps verified against the chain")


@simulate.command("aml")
@chain_option
@click.option("--banks", type=click.IntRange(2, 50), default=4, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=7,
    show_default=True,
    help="Seeds every random choice: the data, the initial model, training and the parties' "
    "keys, which are therefore predictable (local development chains only).",
)
@epochs_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep every party's store and journal, and the job's bundle, here [default: a "
    "temporary directory, removed afterwards].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Finish the interrupted run recorded in --out; a larger --rounds continues it to that "
    "many rounds, and every other setting must be as before.",
)
@click.option(
    "--set-up-only",
    is_flag=True,
    help="Found the consortium and create the job in --out on the node, and train nothing: the "
    "rounds then run elsewhere (the Flower app, each bank in its own process) or with --resume.",
)
@pipeline_options
@json_option
def aml_command(
    chain_url: str, banks: int, rounds: int, seed: int, epochs: int, out: Path | None,
    resume: bool, set_up_only: bool, depth: int, no_pipeline: bool, as_json: bool,
) -> None:  # fmt: skip
    """Banks train a shared AML risk model; every round is anchored and checked."""
    if resume and out is None:
        raise UsageError("--resume needs the --out directory of the interrupted run")
    if set_up_only and (out is None or resume or chain_url == "embedded"):
        raise UsageError("--set-up-only needs a new --out and the node to run on (--chain URL)")
    if resume and chain_url == "embedded":
        raise UsageError(
            "--resume needs the node the run used (--chain URL): the embedded chain lived "
            "and died with the interrupted process"
        )
    console = Console(stderr=True, quiet=as_json)
    chain = connect(chain_url)
    with _work_directory(out) as directory:
        with console.status("setting up the consortium") as status:
            if resume:
                given = dict(banks=banks, rounds=rounds, seed=seed, epochs=epochs)
                run = aml.resume(chain, directory, _given_options(given))
            else:
                settings = aml.AmlSettings(banks, rounds, seed, epochs)
                run = aml.set_up(chain, directory, settings, report=status.update)
        if set_up_only:
            if as_json:
                emit_json({"jobId": run.job_id, "banks": [b.name for b in run.banks]})
            else:
                banks_list = ", ".join(b.name for b in run.banks)
                click.echo(f"AML job {run.job_id} set up in {directory}: banks {banks_list}")
            return
        results = _run_with_progress(console, chain, run, 1 if no_pipeline else depth)

        def tables() -> None:
            emit_table(
                f"AML job {run.job_id}: {len(run.banks)} banks, chain {chain.chain_id}",
                ("round", "loss", "AUC", "participants", "root", "gas", "tx"),
                [_round_row(r) for r in results],
            )

        _export_audit_and_report(chain, run, directory, out, results, as_json, {}, tables)


@simulate.command("sme-credit")
@chain_option
@click.option(
    "--businesses",
    type=click.IntRange(200, 1_000_000),
    default=sme_credit.SmeSettings.businesses,
    show_default=True,
    help="Businesses the bank's synthetic data holds (the platform's overlaps it).",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=7,
    show_default=True,
    help="Seeds the data, the consents, the held-out split and the parties' keys, which are "
    "therefore predictable (local development chains only).",
)
@click.option(
    "--key-bits",
    type=click.Choice(["1024", "2048", "3072"]),
    default="2048",
    show_default=True,
    help="Size of the arbiter's Paillier key.",
)
@click.option(
    "--max-rounds",
    type=click.IntRange(1, 1_000),
    default=sme_credit.SmeSettings.max_rounds,
    show_default=True,
    help="Epochs at most; the convergence rule may end the job earlier.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(32),
    default=sme_credit.SmeSettings.batch_size,
    show_default=True,
    help="Rows per mini-batch (every batch needs more rows than either party has features).",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(0, min_open=True),
    default=sme_credit.SmeSettings.learning_rate,
    show_default=True,
)
@click.option(
    "--bank-csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bank's table (ids, the label, numeric features) instead of the generator's.",
)
@click.option(
    "--platform-csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The platform's table (ids and numeric features).",
)
@click.option("--id-column", default="id", show_default=True, help="The CSV files' id column.")
@click.option(
    "--label-column", default="label", show_default=True, help="The bank's 0/1 label column."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep every party's store and journal, and the job's bundle, here [default: a "
    "temporary directory, removed afterwards].",
)
@click.option("--resume", is_flag=True, help="Finish the interrupted run recorded in --out.")
@click.option(
    "--after",
    type=click.Path(file_okay=False, path_type=Path),
    help="The --out directory of an earlier run on --chain: set up a later job of its "
    "consortium on the same datasets and data (no founding, votes or registrations), whose "
    "PSI leaves out the businesses that withdrew ('consortium withdraw'). Training options "
    "left out are the earlier run's; data options may not differ.",
)
@pipeline_options
@json_option
def sme_credit_command(
    chain_url: str, businesses: int, seed: int, key_bits: str, max_rounds: int,
    batch_size: int, learning_rate: float, bank_csv: Path | None, platform_csv: Path | None,
    id_column: str, label_column: str, out: Path | None, resume: bool, after: Path | None,
    depth: int, no_pipeline: bool, as_json: bool,
) -> None:  # fmt: skip
    """A bank and a logistics platform train a credit model on each other's columns (vertical
    FL: private set intersection, Paillier); every epoch is anchored, the bank draws up its
    referral list as an anchored use of the model, and the job is audited."""
    if (bank_csv is None) != (platform_csv is None):
        raise UsageError("give both --bank-csv and --platform-csv, or neither")
    if resume and (out is None or chain_url == "embedded"):
        raise UsageError("--resume needs the --out directory and the --chain node of the run")
    if after is not None and (resume or chain_url == "embedded"):
        raise UsageError(
            "--after sets up a new job on the node the earlier run used (--chain URL); to "
            "finish an interrupted one, pass --resume alone"
        )
    files = None
    if bank_csv is not None and platform_csv is not None:
        files = (PartyFile(bank_csv, id_column, label_column), PartyFile(platform_csv, id_column))
    console = Console(stderr=True, quiet=as_json)
    chain = connect(chain_url)
    with _work_directory(out) as directory:
        with console.status("setting up the consortium") as status:
            if resume:
                run = sme_credit.load(chain, directory)
            elif after is not None:
                earlier = sme_use.load_run(chain, after)
                given = dict(
                    businesses=businesses, seed=seed, key_bits=int(key_bits),
                    max_rounds=max_rounds, batch_size=batch_size, learning_rate=learning_rate,
                )  # fmt: skip
                settings = _later_settings(earlier, after, _given_options(given), files)
                run = sme_credit.set_up(chain, directory, settings, status.update, after=earlier)
            else:
                settings = sme_credit.SmeSettings(
                    businesses=businesses, seed=seed, key_bits=int(key_bits),
                    max_rounds=max_rounds, batch_size=batch_size, learning_rate=learning_rate,
                )  # fmt: skip
                run = sme_credit.set_up(chain, directory, settings, status.update, files=files)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("training epochs", total=run.settings.max_rounds)

            def advance(result: RoundResult) -> None:
                loss = result.metrics["loss"]
                progress.update(task, advance=1, description=f"epoch {result.round}: {loss:.4f}")

            results, quality = sme_training.run_rounds(
                chain, run, advance, depth=1 if no_pipeline else depth
            )
        referral = sme_use.refer(chain, run)  # a use of the model, before the audit sees the job

        def tables() -> None:
            emit_table(
                f"SME-credit job {run.job_id}: bank and platform, chain {chain.chain_id}",
                ("epoch", "loss", "converged", "root", "gas", "tx"),
                [_epoch_row(r) for r in results],
            )
            emit_table(
                f"held-out AUC on {quality.evaluated:,} businesses (same hyperparameters)",
                ("model", "AUC", "vs federated"),
                [
                    ("federated (bank + platform, encrypted)", f"{quality.federated:.4f}", "-"),
                    ("bank's features only", f"{quality.bank_only:.4f}", f"{-quality.lift:+.4f}"),
                    ("centralized (pooled in the clear)", f"{quality.centralized:.4f}",
                     f"{-quality.gap:+.4f}"),
                ],
            )  # fmt: skip
            click.echo(referral_line(referral, kept=out is not None))

        referred = referral_json(referral, kept=out is not None)
        extra = {"quality": quality.to_json(), "referral": referred}
        # Both data parties disclose their consented businesses and the weights they trained
        # to the run's own auditor.
        parties = (sme_credit.BANK, sme_credit.PLATFORM)
        disclosures: list[Disclosure] = [disclosure_of(run, p) for p in parties]
        disclosures += [weights_disclosure_of(chain, run, p) for p in parties]
        _export_audit_and_report(
            chain, run, directory, out, results, as_json, extra, tables, disclosures
        )


def _export_audit_and_report(
    chain: Chain,
    run: aml.AmlRun | sme_credit.SmeRun,
    directory: Path,
    out: Path | None,
    results: list[RoundResult],
    as_json: bool,
    extra: Mapping[str, object],
    tables: Callable[[], None],
    disclosures: Sequence[Disclosure] = (),
) -> None:
    """How every training scenario ends: its job exported through the one export path, the
    auditor's full verification of the bundle against the chain, and the report (JSON, or the
    scenario's ``tables`` and the verdict); the exit status is the audit's. ``disclosures``
    are what the data parties hand the auditor to check their consents and weights (vertical
    jobs)."""
    ledger = Ledger(chain, run.deployment)
    institute = run.institute
    bundle = export_job(
        ledger, run.job_id, institute.store, institute.journal_reader(), directory
    ).bundle
    verdict = _audit(chain, bundle, disclosures)
    if as_json:
        emit_json(
            {
                "jobId": run.job_id,
                "chainId": chain.chain_id,
                "deployment": run.deployment.to_json(),
                "rounds": [_round_json(r) for r in results],
                **extra,
                "bundle": str(bundle) if out else None,
                "audit": {**verdict.to_json(), "rounds": verdict.rounds},
            }
        )
    else:
        tables()
        where = f"; bundle in {bundle}" if out else ""
        click.echo(f"audit of {verdict.rounds} rounds: {verdict.describe()}{where}")
    click.get_current_context().exit(verdict.exit_code)


def _epoch_row(result: RoundResult) -> tuple[object, ...]:
    return (
        result.round,
        f"{result.metrics['loss']:.5f}",
        "yes" if result.final else "",
        result.anchor.merkle_root.hex()[:16] + "…",
        f"{result.gas_used:,}",
        result.tx_hash[:12] + "…",
    )


def _later_settings(
    earlier: sme_credit.SmeRun,
    where: Path,
    given: Mapping[str, float],
    files: tuple[PartyFile, PartyFile] | None,
) -> sme_credit.SmeSettings:
    """A later job's settings: the earlier run's, with the training options the command line
    gave; refused if it gave data other than the earlier run's."""
    differ = [
        f"--{name}"
        for name in ("businesses", "seed")
        if name in given and given[name] != getattr(earlier.settings, name)
    ]
    if files is not None:
        recorded = earlier.files or ()
        if [(f.path.resolve(), f.id_column, f.label_column) for f in files] != [
            (f.path, f.id_column, f.label_column) for f in recorded
        ]:
            differ.append("--bank-csv/--platform-csv")
    if differ:
        raise UsageError(
            f"--after runs on the data of the run in {where}: {', '.join(differ)} differ from it"
        )
    training = ("key_bits", "max_rounds", "batch_size", "learning_rate")
    return replace(earlier.settings, **{n: given[n] for n in training if n in given})


def _given_options(values: dict[str, V]) -> dict[str, V]:
    """Those of ``values`` that the command line (or the environment) set: on a resume an
    option left out means "as before", not its default."""
    context = click.get_current_context()
    return {
        name: value
        for name, value in values.items()
        if context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    }


@contextmanager
def _work_directory(out: Path | None) -> Iterator[Path]:
    """``--out``, created if need be; without it, a temporary directory removed afterwards.

    A temporary directory is held under a lock for as long as this process runs, so that a
    later run can tell one that a killed run left (its lock free) from one in use, and
    remove it.
    """
    if out is not None:
        yield _created(out)
        return
    _remove_abandoned_scratch()
    with (
        tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as scratch,
        ExclusiveLock(Path(scratch) / SCRATCH_OWNER, f"directory {scratch}"),
    ):
        yield Path(scratch)


def _created(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use --out {out}: {exc.strerror or exc}") from None
    return out


def _remove_abandoned_scratch() -> None:
    """Removes the temporary directories of runs that were killed (SIGKILL, a power cut)
    before they could remove their own: those whose owner lock nobody holds, and empty ones
    older than :data:`SCRATCH_GRACE` seconds (left by runs from before the lock, or killed
    before they took it). Everything not this user's is left alone."""
    for directory in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if (directory / f"{SCRATCH_OWNER}.lock").is_file():
                _remove_unless_held(directory)
            elif time.time() - info.st_mtime > SCRATCH_GRACE:
                directory.rmdir()  # only if empty: a directory with content is not ours to judge
        except OSError:
            continue  # not empty, or removed meanwhile by another run


def _remove_unless_held(directory: Path) -> None:
    try:
        with ExclusiveLock(directory / SCRATCH_OWNER, f"directory {directory}"):
            shutil.rmtree(directory, ignore_errors=True)
    except LockHeld:
        pass  # a live run's


def _audit(chain: Chain, bundle: Path, disclosures: Sequence[Disclosure] = ()) -> Verdict:
    """The auditor's full verification of the exported bundle against the chain, run while
    the chain (the embedded one lives only as long as this process) is still there."""
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        for result in verify_bundle(opened, chain, disclosures=disclosures):
            verdict.add(result)
    return verdict


def _run_with_progress(
    console: Console, chain: Chain, run: aml.AmlRun, depth: int
) -> list[RoundResult]:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training rounds", total=run.settings.rounds)

        def advance(result: RoundResult) -> None:
            auc = result.metrics["validation"]["roc_auc"]
            progress.update(task, advance=1, description=f"round {result.round}: AUC {auc:.3f}")

        return aml.run_rounds(chain, run, advance, depth=depth)


def _round_json(result: RoundResult) -> dict[str, object]:
    return {
        "round": result.round,
        "anchor": anchor_to_json(result.anchor),
        "transaction": result.tx_hash,
        "gasUsed": result.gas_used,
        "metrics": result.metrics,
        "refused": result.refused,
        "timings": result.timings,
        "resumed": result.resumed,
    }


def _round_row(result: RoundResult) -> tuple[object, ...]:
    validation = result.metrics["validation"]
    auc = validation["roc_auc"]
    return (
        result.round,
        f"{validation['log_loss']:.4f}",
        "-" if auc is None else f"{auc:.4f}",
        f"{result.anchor.participant_count}"
        + (f" ({len(result.refused)} refused)" if result.refused else ""),
        result.anchor.merkle_root.hex()[:16] + "…",
        f"{result.gas_used:,}",
        result.tx_hash[:12] + "…",
    )
