"""What one epoch of the encrypted hetero LR (``hetero-lr/1``) costs per core, against the
plaintext Taylor epoch.

The figures of the vertical SME-credit issue's training part, all in one run:

- **Sample-features per core-second** of one encrypted epoch: rows x (guest + host features)
  over the CPU seconds of this process, in which the guest, the host and the arbiter run one
  after the other (``run_epoch``, every message through its bytes), with 2048-bit keys by
  default. Target: at least 7,600, FATE's figure below.
- **The plaintext baseline**, measured in the same run: block_lr's Taylor descent over the
  same rows, batches and order (``fit`` for one epoch), the best of three.
- **Breakdown by step**, CPU seconds from each role's own timings: the host's encryption of
  its quarter-scores, the guest's re-randomized residuals and its encrypted loss, each party's
  multi-exponentiation ``X^T [[d]]``, masking and packing, the arbiter's decryptions, the
  parties' unmasking and steps; what is left is the messages' bytes (writing, reading and
  checking every ciphertext) and the driver.

The data are the synthetic SME tables (``generate_sme``, every business on both sides),
each party's columns standardized on its own (``Standardizer``), aligned by id; the largest
standardized magnitude is shown next to the bound the masks are sized for. Key generation and
set-up (the key announcement, each party's encryption table) are timed apart, outside the
epoch. The encrypted epoch's weights must match the plaintext epoch's within 1e-6, or nothing
is reported. Run from the repository root::

    .venv/bin/python scripts/bench/vertical.py [--rows 2000] [--json]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import numpy as np
from outcome import Target, finish, load_json, print_verdicts, progress_log, run_line, targets_json
from rich.console import Console
from rich.table import Table

from consortium.errors import ConsortiumError
from consortium.fl.block_lr import TAYLOR, DescentConfig, fit
from consortium.fl.party_table import PartyTable, shared_positions
from consortium.fl.standardize import Standardizer
from consortium.fl.vertical.hetero_lr import Parties, run_epoch, set_up
from consortium.fl.vertical.paillier import generate_keypair, slots
from consortium.fl.vertical.terms import FEATURE_EXPONENT, Terms
from consortium.scenarios.sme_data import generate_sme

ROWS, GUEST_FEATURES, HOST_FEATURES = 20_000, 20, 40
BITS = 2048
# block_lr's default of 512 leaves 20,000 rows a last batch of 32, fewer rows than the host's
# 40 features: the host could solve that batch's residuals, and Terms refuses it.
BATCH_SIZE = 500
RATE_TARGET = 7_600
TOLERANCE = 1e-6
PLAINTEXT_REPEATS = 3
REFERENCE = (
    "Reference: FATE 2.x coordinated LR, 100k x (30 + 300) features in 2 min 16 s per epoch with "
    "1024-bit keys and 16 cores per party: about 7,600 sample-features per core-second"
)
STEPS = (
    ("host", "encrypt scores"),
    ("guest", "residuals"),
    ("guest", "loss"),
    ("guest", "multi-exponentiation"),
    ("host", "multi-exponentiation"),
    ("guest", "mask and pack"),
    ("host", "mask and pack"),
    ("arbiter", "decrypt"),
    ("guest", "unmask and step"),
    ("host", "unmask and step"),
)
REST = ("all", "messages and the rest")

_T = TypeVar("_T")


def cpu_timed(call: Callable[[], _T]) -> tuple[_T, float, float]:
    """``call()``, its CPU seconds (this process) and its wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    return result, time.process_time() - cpu, time.perf_counter() - wall


@dataclass
class Results:
    rows: int
    bits: int
    terms: Terms
    largest_feature: float
    keygen_cpu: float
    setup_cpu: float
    epoch_cpu: float
    epoch_wall: float
    plaintext_cpu: float
    steps: dict[tuple[str, str], float]
    weight_error: float
    loss: float
    slots: int
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def sample_features(self) -> int:
        return self.rows * (self.terms.guest_features + self.terms.host_features)

    @property
    def rate(self) -> float:
        return self.sample_features / self.epoch_cpu

    @property
    def plaintext_rate(self) -> float:
        return self.sample_features / self.plaintext_cpu

    def targets(self) -> list[Target]:
        return [
            Target(
                f"sample-features per core-second at {self.bits} bits >= {RATE_TARGET:,}",
                f"{self.rate:,.0f}",
                self.rate >= RATE_TARGET,
            )
        ]


# ---------------------------------------------------------------------------- measuring


def sme_tables(rows: int) -> tuple[PartyTable, PartyTable]:
    """The bank's and the platform's standardized tables over ``rows`` shared businesses, in
    the one order both hold them."""
    data = generate_sme(
        0,
        businesses=rows,
        overlap=1.0,
        platform_only=0,
        bank_features=GUEST_FEATURES,
        platform_features=HOST_FEATURES,
    )
    bank_rows, platform_rows = shared_positions(data.bank.ids, data.platform.ids)
    bank, platform = data.bank.aligned(bank_rows), data.platform.aligned(platform_rows)
    return Standardizer.fit(bank.X).apply(bank), Standardizer.fit(platform.X).apply(platform)


def weight_error(parties: Parties, reference: Any) -> float:
    guest, host = parties.guest.weights(), parties.host.weights()
    return max(
        float(np.abs(guest["weights"] - reference.model.weights[0]).max()),
        float(np.abs(host["weights"] - reference.model.weights[1]).max()),
        abs(float(guest["bias"]) - reference.model.bias),
    )


def run_benchmark(
    rows: int, bits: int, batch_size: int, feature_exponent: int, log: Callable[[str], None]
) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    log(f"SME tables: {rows:,} rows x ({GUEST_FEATURES} + {HOST_FEATURES}) features")
    bank, platform = sme_tables(rows)
    config = DescentConfig(batch_size=batch_size, max_epochs=1)
    terms = Terms(
        rows,
        GUEST_FEATURES,
        HOST_FEATURES,
        config,
        key_bits=bits,
        feature_exponent=feature_exponent,
    )
    largest = float(max(np.abs(bank.X).max(), np.abs(platform.X).max()))
    log(f"{bits}-bit key pair")
    keys, keygen_cpu, _ = cpu_timed(lambda: generate_keypair(bits))
    parties, setup_cpu, _ = cpu_timed(lambda: set_up(bank, platform, terms, keys=keys))
    log(f"one encrypted epoch ({len(terms.batches(0))} batches of up to {batch_size} rows)")
    outcome, epoch_cpu, epoch_wall = cpu_timed(
        lambda: run_epoch(parties.guest, parties.host, parties.arbiter, 0)
    )
    log("the plaintext Taylor epoch")
    blocks, labels = [bank.X, platform.X], bank.labels
    plaintext = [
        cpu_timed(lambda: fit(blocks, labels, TAYLOR, config)) for _ in range(PLAINTEXT_REPEATS)
    ]
    reference = plaintext[0][0]
    error = weight_error(parties, reference)
    if error > TOLERANCE or abs(outcome.loss - reference.losses[0]) > TOLERANCE:
        raise ConsortiumError(
            f"the encrypted epoch is off the plaintext one by {error:.2e} in the weights"
        )
    roles = {"guest": parties.guest, "host": parties.host, "arbiter": parties.arbiter}
    steps = {(party, step): roles[party].timings.get(step, 0.0) for party, step in STEPS}
    steps[REST] = epoch_cpu - sum(steps.values())
    results = Results(
        rows=rows,
        bits=bits,
        terms=terms,
        largest_feature=largest,
        keygen_cpu=keygen_cpu,
        setup_cpu=setup_cpu,
        epoch_cpu=epoch_cpu,
        epoch_wall=epoch_wall,
        plaintext_cpu=min(cpu for _, cpu, _ in plaintext),
        steps=steps,
        weight_error=error,
        loss=outcome.loss,
        slots=slots(keys.public_key, terms.slot_bits),
    )
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def print_tables(results: Results) -> None:
    console = Console(width=max(Console().width, 120))
    terms = results.terms
    table = Table(
        title=f"One epoch, {results.rows:,} rows x ({terms.guest_features} + "
        f"{terms.host_features}) features, batches of {terms.config.batch_size}, "
        f"{results.bits}-bit keys, three roles in one process",
        caption=REFERENCE,
    )
    for column in ("run", "CPU s", "wall s", "sample-features / core-s", "vs plaintext"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row(
        "encrypted (hetero-lr/1)", f"{results.epoch_cpu:.1f}", f"{results.epoch_wall:.1f}",
        f"{results.rate:,.0f}", f"{results.plaintext_cpu / results.epoch_cpu:.5f}x",
    )  # fmt: skip
    table.add_row(
        "plaintext Taylor (block_lr)", f"{results.plaintext_cpu:.3f}", "-",
        f"{results.plaintext_rate:,.0f}", "1x",
    )  # fmt: skip
    console.print(table)
    table = Table(title="The encrypted epoch by step (CPU seconds of each role's own timings)")
    for column in ("party", "step", "CPU s", "share", "us / row"):
        table.add_column(column, justify="left" if column in ("party", "step") else "right")
    for (party, step), cpu in results.steps.items():
        table.add_row(
            party, step, f"{cpu:.2f}", f"{cpu / results.epoch_cpu:.1%}",
            f"{cpu / results.rows * 1e6:,.0f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"fixed point: residuals at 16^{terms.score_exponent}, features at "
        f"16^{terms.feature_exponent}; gradient values of {terms.value_bits} bits masked into "
        f"{terms.slot_bits}-bit slots, {results.slots} to a ciphertext"
    )
    console.print(
        f"largest standardized feature {results.largest_feature:.1f} in magnitude, bound "
        f"{terms.feature_bound:g}; weights within {results.weight_error:.1e} of the plaintext "
        f"epoch's, loss {results.loss:.6f}"
    )
    console.print(
        f"outside the epoch: key generation {results.keygen_cpu:.1f} CPU s, set-up (announcement, "
        f"encryption tables) {results.setup_cpu:.2f} CPU s"
    )
    print_verdicts(console, results.targets())
    console.print(run_line(results.seconds, results.load))


def print_json(results: Results) -> None:
    terms = results.terms
    click.echo(
        json.dumps(
            {
                "rows": results.rows,
                "guestFeatures": terms.guest_features,
                "hostFeatures": terms.host_features,
                "batchSize": terms.config.batch_size,
                "keyBits": results.bits,
                "scoreExponent": terms.score_exponent,
                "featureExponent": terms.feature_exponent,
                "slotBits": terms.slot_bits,
                "slotsPerCiphertext": results.slots,
                "epochCpuSeconds": results.epoch_cpu,
                "epochWallSeconds": results.epoch_wall,
                "sampleFeaturesPerCoreSecond": results.rate,
                "plaintextCpuSeconds": results.plaintext_cpu,
                "plaintextSampleFeaturesPerCoreSecond": results.plaintext_rate,
                "cpuSecondsBySteps": [
                    {"party": party, "step": step, "cpuSeconds": cpu}
                    for (party, step), cpu in results.steps.items()
                ],
                "keygenCpuSeconds": results.keygen_cpu,
                "setupCpuSeconds": results.setup_cpu,
                "largestFeature": results.largest_feature,
                "weightError": results.weight_error,
                "targets": targets_json(results.targets()),
                "loadAverage": load_json(results.load),
            },
            indent=2,
        )
    )


@click.command()
@click.option(
    "--rows", type=click.IntRange(1), default=ROWS, show_default=True, help="Rows of the epoch."
)
@click.option(
    "--bits", type=click.IntRange(512), default=BITS, show_default=True, help="Paillier key size."
)
@click.option("--batch-size", type=click.IntRange(1), default=BATCH_SIZE, show_default=True)
@click.option(
    "--feature-exponent",
    type=click.IntRange(-16, -1),
    default=FEATURE_EXPONENT,
    show_default=True,
    help="Fixed-point exponent (base 16) of the features in the multi-exponentiation.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(rows: int, bits: int, batch_size: int, feature_exponent: int, as_json: bool) -> None:
    """Measure one encrypted hetero-LR epoch in sample-features per core-second."""
    log = progress_log(quiet=as_json)
    finish(
        lambda: run_benchmark(rows, bits, batch_size, feature_exponent, log),
        as_json,
        print_json,
        print_tables,
    )


if __name__ == "__main__":
    main()
