"""What the round engine's anchoring costs a job on a node, pipelined and not.

The figures of the round-engine issue, each against a baseline measured in the same run:

- **Slow blocks** (anvil mining a block every 2 s, 4 banks x 20 rounds, local epochs chosen so
  that a ledger-off round takes about 1 s): wall time unpipelined and pipelined (the default
  depth and the largest) against the same rounds with the ledger off (the engine over its
  ``NullAnchorer``). Target: pipelined at most 1.10.
- **Rounds per minute** at 2 s blocks and the toy workload (1 local epoch): ledger off,
  unpipelined, pipelined at the default depth and at the largest.
- **Instant mining**, toy workload: what anchoring adds per round on anvil and on the embedded
  chain, next to the floor: the very JSON-RPC requests the anvil run made during its rounds,
  sent again raw on one keep-alive connection (a resent transaction is answered without being
  executed again, so the floor is, if anything, low). Target on anvil: at most 3x the floor.
- **Flat in rounds**: the mean wall time of rounds 6..15 against rounds N-9..N of a long job
  on anvil (default N = 1,000). Target: at most 1.10.

The scenarios are set up on instant mining (a set-up sends dozens of transactions); the slow
block time is switched on afterwards with anvil's ``evm_setIntervalMining``, a development
node's facility the benchmark uses and the project's code never does. Run from the repository
root::

    .venv/bin/python scripts/bench/rounds.py [--long-rounds 1000] [--json]
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import requests
from outcome import Target, finish, progress_log
from rich.console import Console
from rich.table import Table

from consortium.chain.anvil import AnvilNode
from consortium.chain.backend import EMBEDDED, connect
from consortium.chain.base import Chain
from consortium.errors import ConsortiumError
from consortium.orchestration.engine import DEFAULT_DEPTH, MAX_DEPTH
from consortium.scenarios import aml

BANKS, ROUNDS, SEED = 4, 20, 7
SLOW_BLOCK_SECONDS = 2
ROUND_SECONDS = 1.0  # the ledger-off round the slow-block figure is measured at
PIPELINED_TARGET = 1.10
FLOOR_TARGET = 3.0
FLAT_TARGET = 1.10
DEPTH = DEFAULT_DEPTH
ANCHORING = Path(__file__).with_name("anchoring.py")


def _load_anchoring() -> ModuleType:
    """``scripts/bench/anchoring.py`` as a module: its set-up, timed runs and baseline."""
    spec = importlib.util.spec_from_file_location("bench_anchoring", ANCHORING)
    if spec is None or spec.loader is None:
        raise ConsortiumError(f"cannot load {ANCHORING}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_anchoring()


# ---------------------------------------------------------------------------- measuring


class RequestLog:
    """The JSON-RPC request bodies sent to one URL while recording, and their count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[bytes] = []
        self.recording = False

    @contextmanager
    def installed(self) -> Iterator[RequestLog]:
        original = requests.Session.post

        def post(session: requests.Session, url: str, *args: Any, **kwargs: Any) -> Any:
            if self.recording and url == self.url:
                body = kwargs.get("data")
                if isinstance(body, bytes | str):
                    self.bodies.append(body.encode() if isinstance(body, str) else body)
            return original(session, url, *args, **kwargs)

        requests.Session.post = post  # type: ignore[method-assign]
        try:
            yield self
        finally:
            requests.Session.post = original  # type: ignore[method-assign]

    def replay(self) -> float:
        """Seconds to send every recorded body again, raw, on one keep-alive connection."""
        with requests.Session() as session:
            headers = {"Content-Type": "application/json"}
            start = time.perf_counter()
            for body in self.bodies:
                session.post(self.url, data=body, headers=headers, timeout=30).raise_for_status()
            return time.perf_counter() - start


def _per_round(run: Any) -> float:
    return statistics.fmean(r["round"] for r in run.rounds)


def _window(run: Any, first: int, last: int) -> float:
    """Mean wall time of rounds ``first``..``last`` (1-based, inclusive)."""
    return statistics.fmean(r["round"] for r in run.rounds[first - 1 : last])


def _rpc(url: str, method: str, *params: Any) -> Any:
    reply = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=10
    ).json()
    if "error" in reply:
        raise ConsortiumError(f"{method}: {reply['error']}")
    return reply["result"]


def calibrate_epochs(job: Any, directory: Path, log: Callable[[str], None]) -> tuple[int, float]:
    """The local epochs at which a ledger-off round takes about :data:`ROUND_SECONDS`, from two
    short ledger-off runs at 2 and 12 epochs (a round's time is linear in its epochs; the
    median round of each run, since the first ones warm up), at most 1,000."""
    times = {}
    for epochs in (2, 12):
        settings = replace(job.settings, rounds=4, epochs=epochs)
        run = bench.measure_baseline(replace(job, settings=settings), directory / f"cal-{epochs}")
        times[epochs] = statistics.median(r["round"] for r in run.rounds)
    per_epoch = max((times[12] - times[2]) / 10, 1e-3)
    fixed = max(times[2] - 2 * per_epoch, 0.0)
    epochs = min(1_000, max(1, math.ceil((ROUND_SECONDS - fixed) / per_epoch)))
    log(f"calibration: {times[2]:.3f} s at 2 epochs, {times[12]:.3f} s at 12: using {epochs}")
    return epochs, fixed + per_epoch * epochs


@dataclass
class Results:
    epochs: int
    slow: dict[str, Any]  # label -> Run, 2 s blocks, ~1 s rounds
    toy_slow: dict[str, Any]  # label -> Run, 2 s blocks, toy rounds
    instant: dict[str, Any]  # label -> Run, instant mining, toy rounds
    floor_seconds: float
    floor_requests: int
    long_rounds: int
    long: Any
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    notes: list[str] = field(default_factory=list)

    def ratio(self, runs: dict[str, Any], label: str) -> float:
        return float(runs[label].seconds / runs["ledger off"].seconds)

    def extra_ms(self, label: str) -> float:
        """What anchoring adds per round to the ledger-off run measured right before it."""
        base = _per_round(self.instant[f"ledger off, before {label}"])
        return (_per_round(self.instant[label]) - base) * 1000

    def floor_ms(self) -> float:
        return self.floor_seconds / ROUNDS * 1000

    def flatness(self) -> float:
        n = self.long_rounds
        return _window(self.long, n - 9, n) / _window(self.long, 6, 15)

    def targets(self) -> list[Target]:
        pipelined = min(
            self.ratio(self.slow, label) for label in self.slow if label.startswith("pipelined")
        )
        extra = self.extra_ms("anvil")
        return [
            Target(
                f"pipelined wall time at {SLOW_BLOCK_SECONDS} s blocks, ~{ROUND_SECONDS:g} s "
                f"rounds <= {PIPELINED_TARGET} x ledger off (the better depth)",
                f"{pipelined:.2f}",
                pipelined <= PIPELINED_TARGET,
            ),
            Target(
                f"extra ms per round on anvil (instant mining) <= {FLOOR_TARGET:g} x the raw floor",
                f"{extra:.1f} ms vs floor {self.floor_ms():.1f} ms "
                f"({extra / self.floor_ms():.2f}x)",
                extra <= FLOOR_TARGET * self.floor_ms(),
            ),
            Target(
                f"time per round at round {self.long_rounds:,} <= {FLAT_TARGET} x round 10",
                f"{self.flatness():.2f}",
                self.flatness() <= FLAT_TARGET,
            ),
        ]


def _scenarios(
    chain: Chain, directory: Path, settings: aml.AmlSettings, labels: list[str]
) -> dict[str, aml.AmlRun]:
    return {
        label: bench.set_up(chain, directory / label.replace(" ", "-"), settings)
        for label in labels
    }


def _anchored(chain: Chain, run: aml.AmlRun, label: str, depth: int) -> Any:
    return bench.measure_anchored(chain, run, label, depth)


def run_benchmark(long_rounds: int, log: Callable[[str], None]) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-rounds-") as tmp:
        directory = Path(tmp)
        toy = aml.AmlSettings(BANKS, ROUNDS, SEED, 1)

        log("embedded: the toy job, anchored and ledger off")
        embedded = connect(EMBEDDED)
        run = bench.set_up(embedded, directory / "embedded", toy)
        job = bench.BaselineJob.of(embedded, run)
        bench.measure_baseline(replace(job, settings=replace(toy, rounds=1)), directory / "warm")
        # Each anchored run is compared with a ledger-off run made just before it, so that a
        # change in the machine's load between the two figures skews neither.
        instant = {"ledger off, before embedded": bench.measure_baseline(job, directory / "off")}
        instant["embedded"] = _anchored(embedded, run, "embedded", DEPTH)
        epochs, _ = calibrate_epochs(job, directory, log)
        heavy = replace(toy, epochs=epochs)
        slow = {
            "ledger off": bench.measure_baseline(
                replace(job, settings=heavy), directory / "off-heavy"
            )
        }
        toy_slow = {"ledger off": instant["ledger off, before embedded"]}

        node = AnvilNode(directory / "node", port=bench._free_port(), balance_ether=10**9)
        node.start()
        try:
            chain = connect(node.url, poll_latency=bench.POLL_LATENCY)
            log("anvil: setting the scenarios up (instant mining)")
            runs = _scenarios(
                chain, directory / "heavy", heavy, ["unpipelined", "pipelined", "deep"]
            )
            toys = _scenarios(
                chain, directory / "toy", toy,
                ["instant", "toy unpipelined", "toy pipelined", "toy deep"],
            )  # fmt: skip
            long_run = bench.set_up(
                chain, directory / "long", replace(toy, banks=2, rounds=long_rounds)
            )
            log("anvil: the toy job on instant mining, its requests recorded")
            instant["ledger off, before anvil"] = bench.measure_baseline(
                job, directory / "off-anvil"
            )
            with RequestLog(node.url).installed() as requests_log:
                requests_log.recording = True
                instant["anvil"] = _anchored(chain, toys["instant"], "anvil", DEPTH)
                requests_log.recording = False
            floor = requests_log.replay()
            log(f"anvil: a job of {long_rounds:,} rounds (2 banks, toy workload)")
            long = _anchored(chain, long_run, "long", DEPTH)
            _rpc(node.url, "evm_setIntervalMining", SLOW_BLOCK_SECONDS)
            for label, key, depth in (
                ("unpipelined", "unpipelined", 1),
                ("pipelined", "pipelined", DEPTH),
                (f"pipelined, depth {MAX_DEPTH}", "deep", MAX_DEPTH),
            ):
                log(f"anvil, {SLOW_BLOCK_SECONDS} s blocks: {epochs}-epoch rounds, {label}")
                slow[label] = _anchored(chain, runs[key], label, depth)
            for label, key, depth in (
                ("unpipelined", "toy unpipelined", 1),
                ("pipelined", "toy pipelined", DEPTH),
                (f"pipelined, depth {MAX_DEPTH}", "toy deep", MAX_DEPTH),
            ):
                log(f"anvil, {SLOW_BLOCK_SECONDS} s blocks: toy rounds, {label}")
                toy_slow[label] = _anchored(chain, toys[key], label, depth)
            chain.close()
        finally:
            node.stop()
    results = Results(
        epochs, slow, toy_slow, instant, floor, len(requests_log.bodies), long_rounds, long
    )
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def print_tables(results: Results) -> None:
    console = Console(width=max(Console().width, 120))
    table = Table(
        title=f"{SLOW_BLOCK_SECONDS} s blocks: {BANKS} banks x {ROUNDS} rounds, {results.epochs} "
        "local epochs (a ledger-off round of about 1 s), anvil"
    )
    for column in ("run", "wall s", "vs ledger off", "s / round", "rounds / min", "target"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for label, run in results.slow.items():
        target = f"<= {PIPELINED_TARGET}" if label.startswith("pipelined") else "-"
        table.add_row(
            label, f"{run.seconds:.1f}", f"{results.ratio(results.slow, label):.2f}x",
            f"{_per_round(run):.2f}", f"{60 / _per_round(run):.1f}", target,
        )  # fmt: skip
    console.print(table)
    table = Table(title=f"{SLOW_BLOCK_SECONDS} s blocks, toy workload (1 local epoch)")
    for column in ("run", "wall s", "vs ledger off", "rounds / min"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for label, run in results.toy_slow.items():
        table.add_row(
            label, f"{run.seconds:.1f}", f"{results.ratio(results.toy_slow, label):.2f}x",
            f"{60 / _per_round(run):.1f}",
        )  # fmt: skip
    console.print(table)
    table = Table(title="Instant mining, toy workload: what anchoring adds per round (pipelined)")
    for column in ("run", "ms / round", "extra ms / round", "raw floor ms / round", "vs floor"):
        table.add_column(column, justify="right" if column != "run" else "left")
    floor = results.floor_ms()
    for label, run in results.instant.items():
        extra = "-" if label.startswith("ledger off") else f"{results.extra_ms(label):.1f}"
        table.add_row(
            label, f"{_per_round(run) * 1000:.1f}", extra,
            f"{floor:.1f}" if label == "anvil" else "-",
            f"{results.extra_ms(label) / floor:.2f}x" if label == "anvil" else "-",
        )  # fmt: skip
    console.print(table)
    n = results.long_rounds
    console.print(
        f"Flat in rounds (anvil, 2 banks, pipelined): rounds 6-15 "
        f"{_window(results.long, 6, 15) * 1000:.1f} ms, rounds {n - 9:,}-{n:,} "
        f"{_window(results.long, n - 9, n) * 1000:.1f} ms ({results.flatness():.2f}x)"
    )
    console.print(
        f"raw floor: the anvil run's {results.floor_requests:,} requests of its {ROUNDS} rounds "
        "(the participants' reads included) sent again raw on one keep-alive connection"
    )
    for target in results.targets():
        console.print(target.verdict_line())
    console.print(
        f"measured in {results.seconds:.0f} s; 1-minute load average {results.load[0]:.1f} at the "
        f"start, {results.load[1]:.1f} at the end, on {os.cpu_count()} CPUs"
    )


def print_json(results: Results) -> None:
    click.echo(
        json.dumps(
            {
                "epochs": results.epochs,
                "slowBlocks": {k: v.seconds for k, v in results.slow.items()},
                "toySlowBlocks": {k: v.seconds for k, v in results.toy_slow.items()},
                "instantMsPerRound": {k: _per_round(v) * 1000 for k, v in results.instant.items()},
                "floorMsPerRound": results.floor_ms(),
                "flatness": results.flatness(),
                "targets": [
                    {"description": t.description, "measured": t.measured, "met": t.met}
                    for t in results.targets()
                ],
            },
            indent=2,
        )
    )


@click.command()
@click.option("--long-rounds", type=click.IntRange(20), default=1_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(long_rounds: int, as_json: bool) -> None:
    """Measure the round engine's anchoring on anvil, pipelined and not, against ledger off."""
    log = progress_log(quiet=as_json)
    finish(lambda: run_benchmark(long_rounds, log), as_json, print_json, print_tables)


if __name__ == "__main__":
    main()
