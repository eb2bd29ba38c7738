"""What the round engine's anchoring costs a job on a node, pipelined and not.

The figures of the round-engine issue, each against a baseline measured in the same run:

- **Slow blocks** (anvil mining a block every 2 s, 4 banks x 20 rounds, local epochs chosen so
  that a ledger-off round takes about 1 s): wall time unpipelined and pipelined (the default
  depth, 3 and the largest) against the same rounds with the ledger off (the engine over its
  ``NullAnchorer``), measured right before and right after each anchored run, so that the
  machine's load drifting between runs skews no ratio. Target: pipelined at most 1.10. An
  anchor waits up to a block time to be mined, so a round of ``t`` seconds needs about
  ``1 + block time / t`` rounds in flight to never wait for one (3 here).
- **Rounds per minute** at 2 s blocks and the toy workload (1 local epoch): ledger off,
  unpipelined, pipelined at the default depth and at the largest.
- **Instant mining**, toy workload: what anchoring adds per round on anvil and on the embedded
  chain, next to the floor: the very JSON-RPC requests the anvil run made during its rounds,
  sent again raw on one keep-alive connection (a resent transaction is answered without being
  executed again, so the floor is, if anything, low). Target on anvil: at most 3x the floor.
  The extra time is the difference of two runs of about 100 ms rounds whose noise is as large
  as the difference, so the anvil figure is the median of :data:`REPEATS` pairs, each a
  ledger-off run and the anchored run right after it, pipelined and unpipelined pairs taking
  turns; the target takes the better depth, as the slow-block one does (at instant mining a
  pipeline has nothing to overlap, and its threads only contend with training for the GIL).
- **Flat in rounds**: the mean wall time of rounds 6..15 against rounds N-9..N of a long job
  on anvil (default N = 1,000). Target: at most 1.10.
- **Flat in participants**: the coordinator's own work per round (its chain reads before the
  round, signing, sending and awaiting the anchor, building the receipts' proofs) at 100
  participants against 4, unpipelined on instant mining so that these phases run alone; the
  median over the rounds after the first (the first one's anchor runs the contract's full
  membership and consent check, which costs gas per participant once per change of standing),
  the two jobs taking turns a few rounds at a time, since the anchor's wait on the node varies
  with the machine's load by more than the two sizes differ.
  The participants' own receipt checks are shown next to it: in a deployment each runs on its
  participant's machine; here they share this process. Target: at most 1.5.

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
from outcome import Target, finish, print_verdicts, progress_log, run_line, targets_json
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
PARTICIPANTS_TARGET = 1.5
FEW, MANY = 4, 100
PARTICIPANT_ROUNDS = 13  # the first (the full check) and 12 timed, in alternating chunks
PARTICIPANT_CHUNK = 3
COORDINATOR_PHASES = ("preflight", "anchor", "proofs")
DEPTH = DEFAULT_DEPTH
REPEATS = 3
INSTANT_ROUNDS = 40
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


def _median_round(run: Any) -> float:
    return statistics.median(r["round"] for r in run.rounds)


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


def _coordinator_ms(rows: list[dict[str, float]]) -> float:
    """The median over ``rows`` of the coordinator's own phases, in ms."""
    return statistics.median(sum(r.get(p, 0.0) for p in COORDINATOR_PHASES) for r in rows) * 1000


def _median_ms(rows: list[dict[str, float]], phase: str) -> float:
    return statistics.median(r.get(phase, 0.0) for r in rows) * 1000


def _alternating(chain: Chain, by_size: dict[int, aml.AmlRun]) -> dict[int, list[dict[str, float]]]:
    """The rounds after the first of each job, run unpipelined a few at a time, the jobs taking
    turns, so that a change in the machine's load between them skews neither."""
    rows: dict[int, list[dict[str, float]]] = {size: [] for size in by_size}
    for upto in range(1 + PARTICIPANT_CHUNK, PARTICIPANT_ROUNDS + 1, PARTICIPANT_CHUNK):
        for size, run in by_size.items():
            chunk = replace(run, settings=replace(run.settings, rounds=upto))
            measured = bench.measure_anchored(chain, chunk, f"{size} participants", 1)
            rows[size] += [r for r in measured.rounds if "anchor" in r]  # not the resumed
    return {size: timed[1:] for size, timed in rows.items()}  # round 1: the full check


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
class Paired:
    """An anchored run and the ledger-off runs measured right next to it."""

    anchored: Any  # Run
    baselines: list[Any]  # Run

    @property
    def baseline_seconds(self) -> float:
        return statistics.fmean(run.seconds for run in self.baselines)

    @property
    def ratio(self) -> float:
        return float(self.anchored.seconds / self.baseline_seconds)

    @property
    def extra_ms(self) -> float:
        """What anchoring adds to the median round: medians, since a burst of the machine's
        other load lengthens a few rounds of either run by more than anchoring adds."""
        base = statistics.fmean(_median_round(run) for run in self.baselines)
        return (_median_round(self.anchored) - base) * 1000


@dataclass
class Results:
    epochs: int
    slow: dict[str, Paired]  # 2 s blocks, ~1 s rounds
    toy_slow: dict[str, Any]  # label -> Run, 2 s blocks, toy rounds
    instant: dict[str, list[Paired]]  # chain -> its pairs, instant mining, toy rounds
    floor_seconds: float
    floor_requests: int
    long_rounds: int
    long: Any
    participants: dict[int, list[dict[str, float]]]  # participants -> timed rounds
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    notes: list[str] = field(default_factory=list)

    def ratio(self, runs: dict[str, Any], label: str) -> float:
        return float(runs[label].seconds / runs["ledger off"].seconds)

    def extra_ms(self, chain: str) -> float:
        """The median over the chain's pairs of what anchoring adds per round."""
        return statistics.median(pair.extra_ms for pair in self.instant[chain])

    def floor_ms(self) -> float:
        return self.floor_seconds / INSTANT_ROUNDS * 1000

    def flatness(self) -> float:
        n = self.long_rounds
        return _window(self.long, n - 9, n) / _window(self.long, 6, 15)

    def participants_ratio(self) -> float:
        return _coordinator_ms(self.participants[MANY]) / _coordinator_ms(self.participants[FEW])

    def targets(self) -> list[Target]:
        pipelined = min(
            pair.ratio for label, pair in self.slow.items() if label.startswith("pipelined")
        )
        extra = min(self.extra_ms(chain) for chain in self.instant if chain.startswith("anvil"))
        return [
            Target(
                f"pipelined wall time at {SLOW_BLOCK_SECONDS} s blocks, ~{ROUND_SECONDS:g} s "
                f"rounds <= {PIPELINED_TARGET} x ledger off (the best depth)",
                f"{pipelined:.2f}",
                pipelined <= PIPELINED_TARGET,
            ),
            Target(
                f"extra ms per round on anvil (instant mining, the better depth) <= "
                f"{FLOOR_TARGET:g} x the raw floor",
                f"{extra:.1f} ms vs floor {self.floor_ms():.1f} ms "
                f"({extra / self.floor_ms():.2f}x)"
                + (" (below zero: the machine's load swamped the difference)" if extra < 0 else ""),
                0 <= extra <= FLOOR_TARGET * self.floor_ms(),
            ),
            Target(
                f"coordinator's own time per round at {MANY} participants <= "
                f"{PARTICIPANTS_TARGET} x at {FEW}",
                f"{self.participants_ratio():.2f}",
                self.participants_ratio() <= PARTICIPANTS_TARGET,
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


def _paired(
    chain: Chain, run: aml.AmlRun, job: Any, directory: Path, label: str, depth: int, *,
    after: bool = True,
) -> Paired:  # fmt: skip
    """``run`` anchored at ``depth``, between two ledger-off runs of the same rounds (or after
    one, when ``after`` is false)."""
    slug = label.replace(" ", "-").replace(",", "")
    before = bench.measure_baseline(job, directory / f"off-before-{slug}")
    anchored = bench.measure_anchored(chain, run, label, depth)
    baselines = [before]
    if after:
        baselines.append(bench.measure_baseline(job, directory / f"off-after-{slug}"))
    return Paired(anchored, baselines)


SLOW_DEPTHS = (
    ("unpipelined", 1),
    ("pipelined", DEPTH),
    ("pipelined, depth 3", 3),
    (f"pipelined, depth {MAX_DEPTH}", MAX_DEPTH),
)


def run_benchmark(long_rounds: int, log: Callable[[str], None]) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-rounds-") as tmp:
        directory = Path(tmp)
        toy = aml.AmlSettings(BANKS, ROUNDS, SEED, 1)
        instant_toy = replace(toy, rounds=INSTANT_ROUNDS)

        log("embedded: the toy job, anchored and ledger off")
        embedded = connect(EMBEDDED)
        run = bench.set_up(embedded, directory / "embedded", instant_toy)
        instant_job = bench.BaselineJob.of(embedded, run)
        bench.measure_baseline(
            replace(instant_job, settings=replace(toy, rounds=1)), directory / "warm"
        )
        instant = {
            "embedded, pipelined": [
                _paired(embedded, run, instant_job, directory, "embedded", DEPTH, after=False)
            ]
        }
        job = replace(instant_job, settings=toy)
        epochs, _ = calibrate_epochs(job, directory, log)
        heavy_job = replace(job, settings=replace(toy, epochs=epochs))
        toy_slow = {"ledger off": bench.measure_baseline(job, directory / "off-toy")}

        node = AnvilNode(directory / "node", port=bench._free_port(), balance_ether=10**9)
        node.start()
        try:
            chain = connect(node.url, poll_latency=bench.POLL_LATENCY)
            log("anvil: setting the scenarios up (instant mining)")
            heavy_runs = _scenarios(
                chain, directory / "heavy", heavy_job.settings, [lb for lb, _ in SLOW_DEPTHS]
            )
            toys = _scenarios(
                chain, directory / "toy", toy,
                ["toy unpipelined", "toy pipelined", f"toy depth {MAX_DEPTH}"],
            )  # fmt: skip
            instants = [
                bench.set_up(chain, directory / f"instant-{i}", instant_toy)
                for i in range(2 * REPEATS)
            ]
            long_run = bench.set_up(
                chain, directory / "long", replace(toy, banks=2, rounds=long_rounds)
            )
            log(f"anvil: setting up jobs of {FEW} and {MANY} participants")
            sized = {
                size: replace(toy, banks=size, rounds=PARTICIPANT_ROUNDS) for size in (FEW, MANY)
            }
            by_size = {
                size: bench.set_up(chain, directory / f"p{size}", settings)
                for size, settings in sized.items()
            }
            log(f"anvil: the toy job on instant mining, {REPEATS} times at each depth, recorded")
            with RequestLog(node.url).installed() as requests_log:
                for index, instant_run in enumerate(instants):
                    requests_log.recording = index == 0
                    depth, kind = (DEPTH, "pipelined") if index % 2 == 0 else (1, "unpipelined")
                    pair = _paired(
                        chain, instant_run, instant_job, directory, f"anvil {index}", depth,
                        after=False,
                    )  # fmt: skip
                    instant.setdefault(f"anvil, {kind}", []).append(pair)
                requests_log.recording = False
            floor = requests_log.replay()
            log(f"anvil: a job of {long_rounds:,} rounds (2 banks, toy workload)")
            long = bench.measure_anchored(chain, long_run, "long", DEPTH)
            log(f"anvil: {PARTICIPANT_ROUNDS} rounds at {FEW} and at {MANY} participants")
            participants = _alternating(chain, by_size)
            _rpc(node.url, "evm_setIntervalMining", SLOW_BLOCK_SECONDS)
            slow = {}
            for label, depth in SLOW_DEPTHS:
                log(f"anvil, {SLOW_BLOCK_SECONDS} s blocks: {epochs}-epoch rounds, {label}")
                slow[label] = _paired(chain, heavy_runs[label], heavy_job, directory, label, depth)
            for label, key, depth in (
                ("unpipelined", "toy unpipelined", 1),
                ("pipelined", "toy pipelined", DEPTH),
                (f"pipelined, depth {MAX_DEPTH}", f"toy depth {MAX_DEPTH}", MAX_DEPTH),
            ):
                log(f"anvil, {SLOW_BLOCK_SECONDS} s blocks: toy rounds, {label}")
                toy_slow[label] = bench.measure_anchored(chain, toys[key], label, depth)
            chain.close()
        finally:
            node.stop()
    results = Results(
        epochs, slow, toy_slow, instant, floor, len(requests_log.bodies), long_rounds, long,
        participants,
    )  # fmt: skip
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def print_tables(results: Results) -> None:
    console = Console(width=max(Console().width, 120))
    table = Table(
        title=f"{SLOW_BLOCK_SECONDS} s blocks: {BANKS} banks x {ROUNDS} rounds, {results.epochs} "
        "local epochs (a ledger-off round of about 1 s), anvil; each anchored run against the "
        "mean of the ledger-off runs right before and after it"
    )
    for column in (
        "run", "wall s", "ledger off s", "vs ledger off", "s / round", "rounds / min", "target"
    ):  # fmt: skip
        table.add_column(column, justify="right" if column != "run" else "left")
    for label, pair in results.slow.items():
        target = f"<= {PIPELINED_TARGET}" if label.startswith("pipelined") else "-"
        per_round = _per_round(pair.anchored)
        table.add_row(
            label, f"{pair.anchored.seconds:.1f}",
            " / ".join(f"{run.seconds:.1f}" for run in pair.baselines), f"{pair.ratio:.2f}x",
            f"{per_round:.2f}", f"{60 / per_round:.1f}", target,
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
    table = Table(
        title=f"Instant mining, toy workload ({INSTANT_ROUNDS} rounds): what anchoring adds to "
        "the median round; each anchored run right after a ledger-off run"
    )
    for column in (
        "chain", "ledger off, median ms", "anchored, median ms", "extra ms",
        "raw floor ms / round", "median extra vs floor",
    ):  # fmt: skip
        table.add_column(column, justify="right" if column != "chain" else "left")
    floor = results.floor_ms()
    for chain, pairs in results.instant.items():
        on_anvil = chain.startswith("anvil")
        table.add_row(
            chain,
            " / ".join(f"{_median_round(p.baselines[0]) * 1000:.1f}" for p in pairs),
            " / ".join(f"{_median_round(p.anchored) * 1000:.1f}" for p in pairs),
            " / ".join(f"{p.extra_ms:.1f}" for p in pairs),
            f"{floor:.1f}" if on_anvil else "-",
            f"{results.extra_ms(chain) / floor:.2f}x" if on_anvil else "-",
        )
    console.print(table)
    n = results.long_rounds
    console.print(
        f"Flat in rounds (anvil, 2 banks, pipelined): rounds 6-15 "
        f"{_window(results.long, 6, 15) * 1000:.1f} ms, rounds {n - 9:,}-{n:,} "
        f"{_window(results.long, n - 9, n) * 1000:.1f} ms ({results.flatness():.2f}x)"
    )
    table = Table(
        title=f"Flat in participants (anvil, instant mining, unpipelined): medians over rounds "
        f"2-{PARTICIPANT_ROUNDS}, run {PARTICIPANT_CHUNK} at a time with the jobs taking turns, "
        "ms per round"
    )
    for column in (
        "participants", "coordinator: reads, anchor, proofs", "of which anchor",
        "participants' receipt checks", "round wall", "vs " + str(FEW),
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for size, rows in results.participants.items():
        table.add_row(
            str(size), f"{_coordinator_ms(rows):.1f}", f"{_median_ms(rows, 'anchor'):.1f}",
            f"{_median_ms(rows, 'receipts'):.1f}", f"{_median_ms(rows, 'round'):.0f}",
            f"{_coordinator_ms(rows) / _coordinator_ms(results.participants[FEW]):.2f}x",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"raw floor: the first anvil run's {results.floor_requests:,} requests of its "
        f"{INSTANT_ROUNDS} rounds (the participants' reads included) sent again raw on one "
        "keep-alive connection"
    )
    print_verdicts(console, results.targets())
    console.print(run_line(results.seconds, results.load))


def print_json(results: Results) -> None:
    click.echo(
        json.dumps(
            {
                "epochs": results.epochs,
                "slowBlocks": {
                    label: {
                        "seconds": pair.anchored.seconds,
                        "ledgerOffSeconds": [run.seconds for run in pair.baselines],
                        "ratio": pair.ratio,
                    }
                    for label, pair in results.slow.items()
                },
                "toySlowBlocks": {k: v.seconds for k, v in results.toy_slow.items()},
                "instantExtraMsPerRound": {
                    chain: [pair.extra_ms for pair in pairs]
                    for chain, pairs in results.instant.items()
                },
                "floorMsPerRound": results.floor_ms(),
                "flatness": results.flatness(),
                "coordinatorMsPerRound": {
                    str(size): _coordinator_ms(rows) for size, rows in results.participants.items()
                },
                "targets": targets_json(results.targets()),
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
