"""The vertical SME-credit issue's figures in one table: the model's quality, the encrypted epoch's
speed, Paillier per core and the PSI per core, each against its target and its reference.

- **Quality**: the scenario end to end on the embedded chain (``sme_credit.set_up``, then
  ``sme_training.run_rounds``: consortium, consents, PSI, every encrypted epoch anchored until the
  convergence rule), its held-out AUC beside the bank-only and the centralized models the run
  trains with the same hyperparameters on the same rows. Twice: on the generator's data
  (``--seed``), and on the generator's tables of another seed (``--csv-seed``) written as the
  bank's and the platform's CSV files and read through set-up's ``files=`` path. Target: the
  federated AUC within 0.005 of the centralized one; the lift over bank-only is shown. The
  federated model is the plaintext Taylor descent's, so a second table sets the Taylor and the
  exact-logistic descents side by side on the job's rows: under the job's stopping rule, at
  equal epochs, at tolerance 0, with a smaller tolerance and a larger learning rate; the
  target's baseline stays the job's centralized model.
- **Epoch speed**: ``vertical.py``'s encrypted epoch (20,000 x (20 + 40), batches of 500) at
  1024 bits, FATE's key size for its ~7,600 sample-features per core-second, and at 2048.
- **Paillier**: ``paillier.py``'s encryptions and decrypted values per core at 2048 bits, ours
  beside phe and rust-paillier. Targets: 1,000 and 200.
- **PSI**: ``psi.py``'s ids per second per core per party at 100,000 and 1,000,000 ids per side.
  Target: 10,000 (SecretFlow: ~11,000).

The other benches' measuring functions are imported, not copied (loaded from their files, as
``rounds.py`` loads ``anchoring.py``). At the default size (about 9,500 training rows), 2048-bit
keys and the default descent, each quality run took 28 epochs of 18 to 22 s, 8 to 10 minutes, and
the whole bench 23 minutes, on 2 CPUs under a load of 2 to 4. ``--key-bits`` and ``--businesses``
make the quality runs smaller (with ``--batch-size`` and ``--learning-rate``, as ``make demo``'s
3,000 businesses take 256 and 0.2, so that a smaller run takes as many steps), and ``--skip``
leaves parts out. Run from the repository root::

    .venv/bin/python scripts/bench/sme.py [--skip csv --skip psi] [--key-bits 1024] [--json]
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from outcome import Target, finish, load_json, print_verdicts, progress_log, run_line, targets_json
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from consortium.chain.backend import EMBEDDED, connect
from consortium.errors import ConsortiumError
from consortium.fl.block_lr import LOGISTIC, TAYLOR, DescentConfig, Objective
from consortium.fl.party_csv import write_party_csv
from consortium.orchestration.engine import DEFAULT_DEPTH, RoundResult
from consortium.scenarios import sme_credit, sme_training
from consortium.scenarios.sme_baselines import BaselineRun, baseline_run
from consortium.scenarios.sme_credit import SmeSettings, VerticalJob
from consortium.scenarios.sme_data import DEFAULT_BUSINESSES, generate_sme
from consortium.scenarios.sme_inputs import PartyFile
from consortium.scenarios.sme_training import Quality

BENCH = Path(__file__).parent


def _load(name: str) -> ModuleType:
    """``scripts/bench/<name>.py`` as a module: its measuring functions and results."""
    path = BENCH / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ConsortiumError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


paillier, psi, vertical = (_load(name) for name in ("paillier", "psi", "vertical"))

PARTS = ("synthetic", "csv", "epoch", "paillier", "psi")
GAP_TARGET = 0.005
SEED, CSV_SEED = 7, 8
EPOCH_BITS = (1024, 2048)  # FATE's figure is at 1024 bits; the keys are 2048
FATE_RATE = "FATE ~7,600 (1024 bits)"
SECRETFLOW_RATE = "SecretFlow ~11,000"
LIBRARIES = ("phe", "rust-paillier")
VERDICTS = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]"}


# ---------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class Comparison:
    """The Taylor descent (what the encrypted protocol computes) and the exact-logistic one on
    the joined features, under one descent configuration."""

    label: str
    taylor: BaselineRun
    exact: BaselineRun

    @property
    def gap(self) -> float:
        return self.taylor.auc - self.exact.auc


@dataclass
class QualityRun:
    """One end-to-end run of the scenario: its quality, rounds and times."""

    source: str
    settings: SmeSettings
    training_rows: int
    quality: Quality
    epochs: int
    converged: bool
    setup_seconds: float
    training_seconds: float
    comparisons: list[Comparison]
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def seconds(self) -> float:
        return self.setup_seconds + self.training_seconds

    def target(self) -> Target:
        gap = self.quality.gap
        return Target(
            f"{self.source}: federated AUC within {GAP_TARGET} of centralized",
            f"{self.quality.federated:.4f} vs {self.quality.centralized:.4f} ({gap:+.4f})",
            abs(gap) <= GAP_TARGET,
        )


def _fitted(job: VerticalJob, objective: Objective, config: DescentConfig) -> BaselineRun:
    """The descent on the job's joined training rows, scored on its held-out rows, as the run's
    centralized baseline is."""
    return baseline_run(
        [job.guest_train.X, job.host_train.X],
        [job.guest_evaluation.X, job.host_evaluation.X],
        (job.guest_train.labels, job.guest_evaluation.labels),
        objective,
        config,
    )


def compare_descents(job: VerticalJob, federated_epochs: int) -> list[Comparison]:
    """The Taylor and the exact descents side by side: under the job's rule, at the epochs each
    ran under it, at tolerance 0 (stopping only when an epoch's loss rises), at a tenth of the
    tolerance and at twice the learning rate, so that a gap is traced to the objective or to
    when each one stopped. A configuration two of these name alike is run once."""
    config = job.terms.config
    exact_epochs = _fitted(job, LOGISTIC, config).epochs
    variants = {config: f"the job's rule (tolerance {config.tolerance:g})"}
    for epochs, whose in ((federated_epochs, "federated"), (exact_epochs, "centralized")):
        label = f"tolerance 0, at most {epochs} epochs (the {whose} model's)"
        variants.setdefault(replace(config, max_epochs=epochs, tolerance=0.0), label)
    variants.setdefault(replace(config, tolerance=0.0), "tolerance 0")
    variants.setdefault(
        replace(config, tolerance=config.tolerance / 10), "a tenth of the tolerance"
    )
    variants.setdefault(
        replace(config, learning_rate=2 * config.learning_rate),
        f"learning rate {2 * config.learning_rate:g}",
    )
    return [
        Comparison(label, _fitted(job, TAYLOR, c), _fitted(job, LOGISTIC, c))
        for c, label in variants.items()
    ]


def csv_files(directory: Path, seed: int, businesses: int) -> tuple[PartyFile, PartyFile]:
    """The generator's tables of ``seed`` written as the bank's and the platform's CSV files."""
    data = generate_sme(seed, businesses=businesses)
    bank, platform = directory / "bank.csv", directory / "platform.csv"
    write_party_csv(data.bank, bank)
    write_party_csv(data.platform, platform)
    return PartyFile(bank, "id", "label"), PartyFile(platform, "id")


def measure_quality(
    source: str, settings: SmeSettings, csv: bool, log: Callable[[str], None]
) -> QualityRun:
    """The scenario set up and trained on a fresh embedded chain, from the generator's data or
    from CSV files of it, in a temporary directory."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-sme-") as scratch:
        directory = Path(scratch)
        files = csv_files(directory, settings.seed, settings.businesses) if csv else None
        chain = connect(EMBEDDED)
        log(f"{source}: setting up ({settings.businesses:,} businesses, {settings.key_bits} bits)")
        start = time.perf_counter()
        run = sme_credit.set_up(chain, directory / "run", settings, log, files=files)
        setup_seconds = time.perf_counter() - start

        def on_round(result: RoundResult) -> None:
            log(f"{source}: epoch {result.round}, loss {result.metrics['loss']:.5f}")

        start = time.perf_counter()
        results, quality = sme_training.run_rounds(chain, run, on_round, depth=DEFAULT_DEPTH)
        training_seconds = time.perf_counter() - start
        job = sme_credit.roles_for(run)
    return QualityRun(
        source=source,
        settings=settings,
        training_rows=job.terms.rows,
        quality=quality,
        epochs=len(results),
        converged=results[-1].final,
        setup_seconds=setup_seconds,
        training_seconds=training_seconds,
        comparisons=compare_descents(job, len(results)),
        load=(load_before, os.getloadavg()[0]),
    )


# ---------------------------------------------------------------------------- the one table


@dataclass
class Results:
    quality: list[QualityRun]
    epochs: list[Any]  # vertical.Results, one per key size
    paillier: Any | None  # paillier.Results
    psi: Any | None  # psi.Results
    skipped: tuple[str, ...]
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    def targets(self) -> list[Target]:
        return [
            *(run.target() for run in self.quality),
            *(t for epoch in self.epochs for t in epoch.targets()),
            *(self.paillier.targets() if self.paillier else []),
            *(self.psi.targets() if self.psi else []),
        ]


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, what it is measured against and its target."""

    part: str
    figure: str
    measured: str
    reference: str
    target: Target | None = None
    load: tuple[float, float] | None = None


@dataclass
class Options:
    settings: SmeSettings
    csv_seed: int
    epoch_rows: int
    psi_max_ids: int
    repeat: int
    skip: tuple[str, ...]


def run_benchmark(options: Options, log: Callable[[str], None]) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    skip = options.skip
    quality = []
    if "synthetic" not in skip:
        quality.append(measure_quality("synthetic", options.settings, False, log))
    if "csv" not in skip:
        settings = replace(options.settings, seed=options.csv_seed)
        quality.append(measure_quality("CSV files", settings, True, log))
    epochs = []
    if "epoch" not in skip:
        for bits in EPOCH_BITS:
            log(f"epoch speed at {bits} bits")
            epochs.append(
                vertical.run_benchmark(
                    options.epoch_rows, bits, vertical.BATCH_SIZE, vertical.FEATURE_EXPONENT, log
                )
            )
    paillier_results = None if "paillier" in skip else paillier.run_benchmark(options.repeat, log)
    psi_results = None if "psi" in skip else psi.run_benchmark(options.psi_max_ids, 1, log)
    results = Results(quality, epochs, paillier_results, psi_results, skip)
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


def quality_rows(run: QualityRun) -> list[Row]:
    q, s = run.quality, run.settings
    where = f"{run.source} (seed {s.seed}), {run.training_rows:,} training rows, {s.key_bits} bits"
    return [
        Row(
            "quality",
            f"held-out AUC, {where}",
            f"{q.federated:.4f} ({run.epochs} epochs)",
            f"centralized {q.centralized:.4f}",
            run.target(),
            run.load,
        ),
        Row("quality", f"lift over bank-only, {run.source}", f"{q.lift:+.4f}",
            f"bank-only {q.bank_only:.4f}"),
    ]  # fmt: skip


def epoch_rows(epoch: Any) -> list[Row]:
    return [
        Row(
            "epoch",
            f"sample-features / core-s, {epoch.rows:,} x ({epoch.terms.guest_features} + "
            f"{epoch.terms.host_features}), {epoch.bits} bits",
            f"{epoch.rate:,.0f}",
            f"{FATE_RATE}; plaintext {epoch.plaintext_rate:,.0f}",
            target,
            epoch.load,
        )
        for target in epoch.targets()
    ]


def paillier_rows(results: Any) -> list[Row]:
    def others(operation: str) -> str:
        return "; ".join(
            f"{library} {escape(results.notes[library])}"
            if library in results.notes
            else f"{library} {results.rate(library, operation):,.0f}"
            for library in LIBRARIES
        )

    encrypt, decrypt = results.targets()
    per = results.packed.per_ciphertext
    return [
        Row("paillier", f"encryptions / s per core, {paillier.BITS} bits",
            f"{results.rate('ours', 'encrypt'):,.0f}", others("encrypt"), encrypt, results.load),
        Row("paillier", f"decrypted values / s per core (ours: {per} a ciphertext)",
            f"{results.rate('ours', 'decrypt values'):,.0f}", others("decrypt values"), decrypt,
            results.load),
    ]  # fmt: skip


def psi_rows(results: Any) -> list[Row]:
    runs = [run for run in results.runs if run.workers == 1]
    return [
        Row(
            "psi",
            f"ids / s per core per party, {run.ids:,} ids a side",
            f"{run.slowest_rate:,.0f}",
            f"{SECRETFLOW_RATE}; X25519 floor {run.floor_rate:,.0f}",
            target,
            results.load,
        )
        for run, target in zip(runs, results.targets(), strict=True)
    ]


def rows_of(results: Results) -> list[Row]:
    return [
        *(row for run in results.quality for row in quality_rows(run)),
        *(row for epoch in results.epochs for row in epoch_rows(epoch)),
        *(paillier_rows(results.paillier) if results.paillier else []),
        *(psi_rows(results.psi) if results.psi else []),
    ]


def print_tables(results: Results) -> None:
    console = Console(width=max(Console().width, 140))
    table = Table(title="Vertical SME credit: the issue's figures, measured in one run")
    for column in ("part", "figure", "measured", "reference", "verdict", "load"):
        table.add_column(column, justify="right" if column in ("measured", "load") else "left")
    for row in rows_of(results):
        verdict = "-" if row.target is None else VERDICTS[row.target.met]
        load = "-" if row.load is None else f"{row.load[0]:.1f} -> {row.load[1]:.1f}"
        table.add_row(row.part, row.figure, row.measured, row.reference, verdict, load)
    console.print(table)
    for run in results.quality:
        _print_comparisons(console, run)
    print_verdicts(console, results.targets())
    if results.skipped:
        console.print(f"skipped: {', '.join(results.skipped)}")
    console.print(run_line(results.seconds, results.load))


def _print_comparisons(console: Console, run: QualityRun) -> None:
    table = Table(
        title=f"{run.source}: the Taylor descent (the federated model, in the clear) against the "
        f"exact logistic one on the joined features, held-out AUC (epochs run); at most "
        f"{run.settings.max_rounds} epochs, learning rate {run.settings.learning_rate:g}, batches "
        f"of {run.settings.batch_size} unless said",
        caption=f"set-up {run.setup_seconds:.0f} s, {run.epochs} encrypted epochs in "
        f"{run.training_seconds:.0f} s ({run.training_seconds / run.epochs:.1f} s each"
        f"{', converged' if run.converged else ', round limit'}); bank-only "
        f"{run.quality.bank_only:.4f}, federated {run.quality.federated:.4f}",
    )
    for column in ("descent", "Taylor", "exact", "Taylor - exact"):
        table.add_column(column, justify="left" if column == "descent" else "right")
    for c in run.comparisons:
        table.add_row(
            c.label, f"{c.taylor.auc:.4f} ({c.taylor.epochs})",
            f"{c.exact.auc:.4f} ({c.exact.epochs})", f"{c.gap:+.4f}",
        )  # fmt: skip
    console.print(table)


def _quality_json(run: QualityRun) -> dict[str, Any]:
    return {
        "source": run.source,
        "settings": run.settings.to_json(),
        "trainingRows": run.training_rows,
        **run.quality.to_json(),
        "epochs": run.epochs,
        "converged": run.converged,
        "setupSeconds": run.setup_seconds,
        "trainingSeconds": run.training_seconds,
        "descents": [
            {
                "descent": c.label,
                "taylor": {"auc": c.taylor.auc, "epochs": c.taylor.epochs},
                "exact": {"auc": c.exact.auc, "epochs": c.exact.epochs},
            }
            for c in run.comparisons
        ],
    }


def print_json(results: Results) -> None:
    click.echo(
        json.dumps(
            {
                "quality": [_quality_json(run) for run in results.quality],
                "rows": [
                    {
                        "part": r.part,
                        "figure": r.figure,
                        "measured": r.measured,
                        "reference": r.reference,
                        "met": None if r.target is None else r.target.met,
                    }
                    for r in rows_of(results)
                ],
                "targets": targets_json(results.targets()),
                "skipped": list(results.skipped),
                "loadAverage": load_json(results.load),
            },
            indent=2,
        )
    )


@click.command()
@click.option(
    "--businesses",
    type=click.IntRange(200),
    default=DEFAULT_BUSINESSES,
    show_default=True,
    help="The bank's businesses in each quality run.",
)
@click.option(
    "--key-bits",
    type=click.Choice(["1024", "2048", "3072"]),
    default="2048",
    show_default=True,
    help="The arbiter's key in the quality runs.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(32),
    default=SmeSettings.batch_size,
    show_default=True,
    help="The quality runs' mini-batches (a smaller run needs smaller ones to take as many steps).",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(0, min_open=True),
    default=SmeSettings.learning_rate,
    show_default=True,
)
@click.option("--seed", type=click.IntRange(0), default=SEED, show_default=True)
@click.option(
    "--csv-seed",
    type=click.IntRange(0),
    default=CSV_SEED,
    show_default=True,
    help="The generator's seed of the tables written as CSV files.",
)
@click.option("--epoch-rows", type=click.IntRange(1), default=vertical.ROWS, show_default=True)
@click.option(
    "--psi-max-ids",
    type=click.IntRange(1_000),
    default=psi.SIZES[-1],
    show_default=True,
    help="The PSI's largest size per side; 100000 skips the million.",
)
@click.option(
    "--repeat", type=click.IntRange(1), default=3, show_default=True, help="Paillier's runs."
)
@click.option("--skip", type=click.Choice(PARTS), multiple=True, help="Leave a part out.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(
    businesses: int, key_bits: str, batch_size: int, learning_rate: float, seed: int,
    csv_seed: int, epoch_rows: int,
    psi_max_ids: int, repeat: int, skip: Sequence[str], as_json: bool,
) -> None:  # fmt: skip
    """Measure the vertical SME-credit issue's figures and print them in one table."""
    log = progress_log(quiet=as_json)

    def measure() -> Results:
        settings = SmeSettings(
            businesses=businesses, seed=seed, key_bits=int(key_bits), batch_size=batch_size,
            learning_rate=learning_rate,
        )  # fmt: skip
        options = Options(settings, csv_seed, epoch_rows, psi_max_ids, repeat, tuple(skip))
        return run_benchmark(options, log)

    finish(measure, as_json, print_json, print_tables)


if __name__ == "__main__":
    main()
