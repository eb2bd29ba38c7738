"""What anchoring every round on the chain costs a federated-learning job, in time and gas.

Why this benchmark exists: the ledger must not make training noticeably slower. The issue fixes
the figures this script prints, each against a baseline measured in the same run:

- **Anchoring overhead**: the wall time of an anchored run divided by the wall time of the same
  run with the ledger switched off, same seed, one run each. Target: at most 1.10 on the
  embedded chain with 4 banks x 20 rounds; measured (without a target) on anvil too.
- **Round latency split**: mean and p95 (nearest rank) over the rounds of each phase that
  ``RoundResult.timings`` records (train, verify, aggregate, anchor, receipts), plus "other"
  (the rest of a round's wall time: progress read, preflight, journal) and the round's wall
  time.
- **Gas per anchored round** at 2, 10 and 100 participants: at most 80,000 each, and flat in the
  number of participants (fast-path spread at most 1 % of the largest). Measured with the
  functions of ``scripts/bench/gas.py`` (imported, not copied) on a fresh embedded chain; the
  gas of the AML runs' own anchors (4 banks) is shown beside them.

The anchored run is the AML scenario: ``aml.set_up`` (not timed), then the two steps of
``aml.run_rounds`` (wiring the coordinator and participants with ``aml.coordinator_for``, then
``Coordinator.run``), both timed. On anvil the node is started in a temporary directory on a
free port and reached through ``connect(url, poll_latency=0.005)``.

The ledger-off baseline runs the very same round engine and FedAvg protocol with no chain at
all: the engine's ``NullAnchorer`` stands where the ``ChainAnchorer`` stands in the anchored
run. It runs with the embedded run's bank keys and EIP-712 domain, so it signs byte-identical
records and must produce the very roots, models and metrics the embedded run anchored; the
script checks this round by round and refuses to report otherwise.

It *includes*, timed from the same start point as the anchored run:

- wiring: generating each bank's data and the validation set, creating the participants (the
  project's ``Participant``, with its own store and journal) and the ``LocalTransport``;
- train: every ``RoundOpen`` and ``UpdateSubmission`` crossing the ``LocalTransport`` as JSON,
  local training, the participant storing its update and signing its record (EIP-712), and its
  "sent" journal entry;
- verify: ``check_submission``, which reads no chain (membership and consent come from the
  round's ``Standing``, here everything in order): signature, sender, job participant list,
  round, base model, update bytes, digests, shape and numExamples; the update objects stored
  in the coordinator's store;
- aggregate: FedAvg in address order, storing the model, the records and the metrics, the
  RFC 6962 tree over the records, the validation metrics;
- receipts: rebuilding the tree from the stored records, an inclusion proof per participant,
  each ``RoundReceipt`` crossing as JSON, and the participant checking its own stored record's
  inclusion against the root in the receipt (``verify_inclusion``);
- the coordinator's journal entries a ledger-off coordinator also needs to resume a job
  ("opened", "intent" with the same fields, "delivered"), each fsynced.

It *excludes* everything that touches a chain: the job's terms and dataset owners (read once
per coordinator), the ``jobProgress`` read at the start of each round (and, when the job's last
full check no longer holds, the membership and consent reads), signing, sending and awaiting
the anchor transaction (gas estimate, nonce, fees, receipt), decoding its event and reading its
block, the participants' reads of the anchored commitment (``Participant.check_receipt``), and
the anchor-only journal entries ("signed", "anchored"). Its receipts carry a ``RoundAnchor``
filled from local values (block 0, time 0) only as the message's container.

Wall times suffer when other processes compete for the CPU: the overhead table also gives this
process's CPU time per run (a node's own work excluded) and the output the load average at the
start and the end. It also gives what anchoring adds per round in absolute terms, and how long a
ledger-off round would have to be for that to stay within the target. On the embedded chain it
also times the anchored run's calls into eth-tester's py-evm backend (executing calls, estimates
and transactions, mining, reading state, blocks and receipts): that work stays whatever the code
above the EVM does, so the ratio it alone implies is a floor for rounds of this size.

When the embedded target is missed (or with ``--profile``), both runs are repeated under
cProfile on a fresh chain and the anchored run's extra time is attributed to its chain
touchpoints; cProfile inflates absolute times, so read the shares, not the seconds.

The script exits with status 1 when a target is missed. Run it from the repository root::

    .venv/bin/python scripts/bench/anchoring.py [--no-anvil] [--profile] [--json]
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib.util
import json
import math
import os
import pstats
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import click
from outcome import Target, finish, progress_log
from profile_parts import Key, ProfileLine, cumulative
from rich.console import Console
from rich.table import Table

from consortium.chain.anvil import AnvilNode
from consortium.chain.backend import EMBEDDED, connect
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.cli.params import epochs_option
from consortium.crypto.digests import hex32
from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import verify_inclusion
from consortium.errors import ConsortiumError
from consortium.fl.model import init_model
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Job, RoundAnchor
from consortium.orchestration.anchorer import NullAnchorer
from consortium.orchestration.engine import RoundEngine, RoundResult
from consortium.orchestration.transport import LocalTransport
from consortium.protocol.fedavg.participant import Participant
from consortium.protocol.fedavg.round import FedAvgRound
from consortium.protocol.messages import (
    RoundReceipt,
)
from consortium.scenarios import aml
from consortium.scenarios.aml_data import FEATURE_NAMES, generate_banks, generate_validation
from consortium.scenarios.parties import Party
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.store.models import put_model

OVERHEAD_TARGET = 1.10
FLAT_TOLERANCE = 0.01  # fast-path anchor gas may vary by 1 % of the largest across sizes
PHASES = ("preflight", "train", "verify", "aggregate", "anchor", "proofs", "receipts")
POLL_LATENCY = 0.005
GAS_BENCH = Path(__file__).with_name("gas.py")

Commitment = tuple[str, int, str, str]  # merkle root, participant count, model, metrics


class BenchmarkError(ConsortiumError):
    """The runs did not do what the comparison assumes, so its figures would be meaningless."""


# ---------------------------------------------------------------------------- measurements


@dataclass
class Run:
    """One timed run of the job: anchored on a chain, or the ledger-off baseline."""

    label: str
    chain: str
    seconds: float  # wall time: wiring + every round
    wiring: float
    rounds: list[dict[str, float]]  # per round: the phases, "other" and "round" (its wall time)
    commitments: list[Commitment]
    gas: list[int] = field(default_factory=list)
    cpu: float = 0.0  # this process's CPU time over the same span (a node's own work excluded)
    evm: float | None = None  # wall time inside the embedded chain's py-evm backend

    def stat(self, phase: str) -> tuple[float, float] | None:
        """Mean and p95 (nearest rank) of ``phase`` over the rounds, in seconds."""
        values = sorted(r[phase] for r in self.rounds if phase in r)
        if not values:
            return None
        return statistics.fmean(values), values[math.ceil(0.95 * len(values)) - 1]


def _round_rows(
    timings: Sequence[dict[str, float]], marks: Sequence[float], start: float
) -> list[dict[str, float]]:
    rows = []
    for timing, previous, mark in zip(timings, [start, *marks[:-1]], marks, strict=True):
        wall = mark - previous
        rows.append({**timing, "other": wall - sum(timing.values()), "round": wall})
    return rows


def set_up(chain: Chain, out: Path, settings: aml.AmlSettings) -> aml.AmlRun:
    """The AML scenario's setup: deployment, votes, datasets, consents, job (never timed)."""
    return aml.set_up(chain, out, settings, report=lambda _: None)


def measure_anchored(chain: Chain, run: aml.AmlRun, label: str, depth: int = 1) -> Run:
    """Times ``aml.run_rounds``'s two steps: wiring the parties, then every round, ``depth``
    rounds in flight at most."""
    results: list[RoundResult] = []
    marks: list[float] = []

    def on_round(result: RoundResult) -> None:
        marks.append(time.perf_counter())
        results.append(result)

    with evm_time(chain) as evm:
        start = time.perf_counter()
        cpu = time.process_time()
        coordinator = aml.coordinator_for(chain, run, depth=depth)
        wired = time.perf_counter()
        coordinator.run(run.settings.rounds, on_round)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return Run(
        label=label,
        chain=chain.description,
        seconds=seconds,
        wiring=wired - start,
        rounds=_round_rows([r.timings for r in results], marks, wired),
        commitments=[_commitment(r.anchor) for r in results],
        gas=[r.gas_used for r in results],
        cpu=cpu,
        evm=evm[0] if isinstance(chain, EmbeddedChain) else None,
    )


@contextlib.contextmanager
def evm_time(chain: Chain) -> Iterator[list[float]]:
    """Adds up the wall time spent inside the embedded chain's py-evm backend.

    That is everything below eth-tester's backend interface: executing calls, estimates and
    transactions, mining, reading blocks and receipts. No code above the EVM (web3, eth-tester's
    normalisation, the project) can make it cheaper, so it bounds how low the embedded
    overhead can go for a given round. Only the outermost backend call is timed, since backend
    methods call one another. A node chain yields zero: its EVM runs in another process.
    """
    spent = [0.0]
    if not isinstance(chain, EmbeddedChain):
        yield spent
        return
    backend = chain.tester.backend
    depth = 0

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth -= 1
                if depth == 0:
                    spent[0] += time.perf_counter() - start

        return call

    names = [
        name
        for name in dir(type(backend))
        if not name.startswith("_") and callable(getattr(type(backend), name))
    ]
    for name in names:
        setattr(backend, name, timed(getattr(backend, name)))
    try:
        yield spent
    finally:
        for name in names:
            delattr(backend, name)


def _commitment(anchor: RoundAnchor) -> Commitment:
    return (
        hex32(anchor.merkle_root),
        anchor.participant_count,
        hex32(anchor.model_digest),
        hex32(anchor.metrics_digest),
    )


@dataclass(frozen=True)
class BaselineJob:
    """What the baseline needs of the anchored run to redo exactly its work off chain: the job
    as created (read before anything is anchored), its domain and its banks' keys."""

    settings: aml.AmlSettings
    domain: Domain
    job: Job
    banks: list[Party]

    @classmethod
    def of(cls, chain: Chain, run: aml.AmlRun) -> BaselineJob:
        return cls(
            run.settings,
            Domain(chain.chain_id, run.deployment.ledger),
            Ledger(chain, run.deployment).jobs.get(run.job_id),
            run.banks,
        )


class _OffChainTransport(LocalTransport):
    """The project's LocalTransport, except that a participant checks its receipt's proof
    against the root in the receipt instead of against the commitment it reads on chain."""

    def deliver(self, participant: str, receipt: RoundReceipt) -> None:
        received = RoundReceipt.from_json(json.loads(json.dumps(receipt.to_json())))
        member = self.participants[participant]
        if received.refusal is not None:
            return
        anchor = received.anchor
        sent = member.journal.last("sent", jobId=anchor.job_id, round=anchor.round)
        if sent is None or received.leaf_index is None:
            raise BenchmarkError(f"{member.name}: a receipt for an update it did not send")
        leaf = member.store.get(bytes.fromhex(sent["record"]))
        verify_inclusion(
            leaf, received.leaf_index, anchor.participant_count, received.proof,
            anchor.merkle_root,
        )  # fmt: skip


def measure_baseline(job: BaselineJob, out: Path) -> Run:
    """The same rounds on the same engine with the ledger switched off: the FedAvg protocol
    and the round engine of the anchored run, over a :class:`NullAnchorer` (see the module
    docstring)."""
    settings = job.settings
    results: list[RoundResult] = []
    marks: list[float] = []

    def on_round(result: RoundResult) -> None:
        marks.append(time.perf_counter())
        results.append(result)

    start = time.perf_counter()
    cpu = time.process_time()
    coordinator = ArtifactStore(out / "coordinator" / "store")
    if put_model(coordinator, init_model(len(FEATURE_NAMES), settings.seed)) != (
        job.job.initial_model_digest
    ):
        raise BenchmarkError("the baseline's initial model is not the job's")
    # Participant takes a Ledger only for the two values of its EIP-712 domain; the stand-in
    # has nothing else, so any chain access would fail loudly.
    signing = cast(
        Ledger,
        SimpleNamespace(
            chain=SimpleNamespace(chain_id=job.domain.chain_id),
            deployment=SimpleNamespace(ledger=job.domain.verifying_contract),
        ),
    )
    plan = settings.plan()
    data = generate_banks(settings.banks, settings.seed)
    participants = {
        bank.account.address: Participant(
            bank.name,
            bank.account,
            bank_data,
            ArtifactStore(out / bank.name / "store"),
            Journal(out / bank.name / "journal.jsonl"),
            signing,
            plan,
        )
        for bank, bank_data in zip(job.banks, data, strict=True)
    }
    protocol = FedAvgRound(
        coordinator, _OffChainTransport(participants), generate_validation(settings.seed),
        job.domain,
    )  # fmt: skip
    journal = Journal(out / "coordinator" / "journal.jsonl")
    engine = RoundEngine(protocol, NullAnchorer(job.job), journal)
    wired = time.perf_counter()
    engine.run(settings.rounds, on_round)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    journal.close()
    for participant in participants.values():
        participant.journal.close()
    return Run(
        label="ledger off (baseline)",
        chain="none",
        seconds=seconds,
        wiring=wired - start,
        rounds=_round_rows([r.timings for r in results], marks, wired),
        commitments=[_commitment(r.anchor) for r in results],
        cpu=cpu,
    )


# ---------------------------------------------------------------------------- anvil and gas


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure_on_anvil(directory: Path, settings: aml.AmlSettings) -> Run:
    node = AnvilNode(directory / "node", port=_free_port())
    node.start()
    try:
        chain = connect(node.url, poll_latency=POLL_LATENCY)
        try:
            run = set_up(chain, directory / "run", settings)
            return measure_anchored(chain, run, "anchored, anvil")
        finally:
            chain.close()
    finally:
        node.stop()


def _load_gas_bench() -> ModuleType:
    """``scripts/bench/gas.py`` as a module, to reuse its measurement of anchored rounds."""
    spec = importlib.util.spec_from_file_location("bench_gas", GAS_BENCH)
    if spec is None or spec.loader is None:
        raise BenchmarkError(f"cannot load {GAS_BENCH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class GasRow:
    participants: int
    source: str
    first: int | None
    steady: int | None
    slow: int | None


def measure_gas(runs: Sequence[Run]) -> list[GasRow]:
    """gas.py's anchors at 2, 10 and 100 participants on a fresh embedded chain, and the AML
    runs' own anchors (first round, and the largest of the later ones)."""
    gas = _load_gas_bench()
    chain = connect(EMBEDDED)
    consortium = gas.found_job_consortium(chain)
    _, dataset = gas.measure_consents(chain, consortium)
    anchors = [
        r for r in gas.measure_jobs(chain, consortium, dataset) if r.operation == "anchorRound"
    ]

    def pick(size: int, note: str) -> int | None:
        found = [r.gas for r in anchors if r.participants == size and r.note.startswith(note)]
        return found[0] if found else None

    rows = [
        GasRow(n, "gas.py", pick(n, "first"), pick(n, "steady"), pick(n, "slow")) for n in gas.SIZES
    ]
    for run in runs:
        if run.gas:
            participants = run.commitments[0][1]
            later = max(run.gas[1:], default=None)
            rows.append(GasRow(participants, run.label, run.gas[0], later, None))
    return rows


# ---------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class Touchpoint:
    """Where the anchored run touches the chain: a function, optionally only from one caller."""

    what: str
    callee: tuple[str, str]
    caller: tuple[str, str] | None = None
    minus: tuple[tuple[str, str], tuple[str, str]] | None = None  # (callee, caller) to subtract


ANCHORER = "orchestration/anchorer.py"
ENGINE = "orchestration/engine.py"
SIGN = ("chain/transact.py", "sign")
ESTIMATE = ("web3/contract/contract.py", "estimate_gas")
TOUCHPOINTS = (
    Touchpoint("job terms (Jobs.get, once per coordinator)", ("ledger/jobs.py", "get")),
    Touchpoint("job progress (jobProgress, every round)", ("ledger/jobs.py", "progress")),
    Touchpoint("preflight: membership and consent, when re-checked", (ANCHORER, "preflight")),
    Touchpoint(
        "dataset-owner reads for the checks", (ANCHORER, "dataset_owners"), (ENGINE, "_prepare")
    ),
    Touchpoint("anchor tx: gas estimate", ESTIMATE, SIGN),
    Touchpoint("anchor tx: block limit, nonce, fees, signing", SIGN, minus=(ESTIMATE, SIGN)),
    Touchpoint(
        "anchor tx: send (mined at once)", ("chain/transact.py", "broadcast"), (ANCHORER, "anchor")
    ),
    Touchpoint(
        "anchor tx: wait for receipt", ("chain/transact.py", "confirm"), (ANCHORER, "anchor")
    ),
    Touchpoint("anchor event decode + block read", ("ledger/jobs.py", "anchor_in")),
    Touchpoint(
        "participants' commitment reads",
        ("ledger/jobs.py", "round_commitment"),
        ("protocol/fedavg/participant.py", "check_receipt"),
    ),
    Touchpoint(
        "journal: signed + anchored entries",
        ("store/journal.py", "append"),
        (ANCHORER, "anchor"),
    ),
)


@dataclass(frozen=True)
class Profile:
    anchored_seconds: float
    baseline_seconds: float
    rounds: int
    touchpoints: list[ProfileLine]
    anchored_top: list[ProfileLine]
    baseline_top: list[ProfileLine]


def _profiled(fn: Callable[[], Run]) -> tuple[Run, dict[Key, Any]]:
    profile = cProfile.Profile()
    profile.enable()
    try:
        run = fn()
    finally:
        profile.disable()
    return run, pstats.Stats(profile).stats  # type: ignore[attr-defined]


def _top(stats: dict[Key, Any], count: int, skip: Sequence[str] = ()) -> list[ProfileLine]:
    """The project's functions with the largest cumulative time (the run's drivers skipped)."""
    lines = [
        ProfileLine(f"{key[0].split('/consortium/')[-1]}:{key[2]}", value[1], value[3])
        for key, value in stats.items()
        if "/consortium/" in key[0].replace("\\", "/") and key[2] not in skip
    ]
    return sorted(lines, key=lambda line: -line.seconds)[:count]


def profile_runs(directory: Path, settings: aml.AmlSettings) -> Profile:
    """Both runs again under cProfile, on a fresh embedded chain."""
    chain = connect(EMBEDDED)
    out = directory / "anchored"
    run = set_up(chain, out, settings)
    anchored, anchored_stats = _profiled(
        lambda: _with_wall(lambda: aml.run_rounds(chain, run, lambda _: None))
    )
    job = BaselineJob.of(chain, run)
    baseline, baseline_stats = _profiled(lambda: measure_baseline(job, directory / "baseline"))
    lines = []
    for point in TOUCHPOINTS:
        calls, seconds = cumulative(anchored_stats, point.callee, point.caller)
        if point.minus is not None:
            seconds -= cumulative(anchored_stats, *point.minus)[1]
        lines.append(ProfileLine(point.what, calls, seconds))
    drivers = ("run", "run_round", "run_rounds", "<lambda>", "_with_wall", "measure_baseline")
    return Profile(
        anchored_seconds=anchored.seconds,
        baseline_seconds=baseline.seconds,
        rounds=settings.rounds,
        touchpoints=lines,
        anchored_top=_top(anchored_stats, 14, drivers),
        baseline_top=_top(baseline_stats, 8, drivers),
    )


def _with_wall(fn: Callable[[], object]) -> Run:
    start = time.perf_counter()
    fn()
    return Run("profiled", "", time.perf_counter() - start, 0.0, [], [])


# ---------------------------------------------------------------------------- results


@dataclass
class Results:
    settings: aml.AmlSettings
    baseline: Run
    anchored: list[Run]
    gas: list[GasRow]
    seconds: float
    anvil_note: str | None = None
    profile: Profile | None = None
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end

    def extra_per_round(self, run: Run) -> float:
        """What anchoring adds to each round, in seconds of wall time."""
        return (run.seconds - self.baseline.seconds) / self.settings.rounds

    def evm_floor(self, run: Run) -> float:
        """The ratio the run would have if only its EVM work were added to the baseline."""
        return (self.baseline.seconds + (run.evm or 0.0)) / self.baseline.seconds

    def cpu_ratio(self, run: Run) -> float:
        return run.cpu / self.baseline.cpu

    def ratio(self, run: Run) -> float:
        return run.seconds / self.baseline.seconds

    def targets(self) -> list[Target]:
        embedded = self.anchored[0]
        ratio = self.ratio(embedded)
        s = self.settings
        fast = [g for row in self.gas if row.source == "gas.py" for g in (row.first, row.steady)]
        fast_known = [g for g in fast if g is not None]
        worst = max(fast_known)
        spread = worst - min(fast_known)
        sizes = ", ".join(str(r.participants) for r in self.gas if r.source == "gas.py")
        return [
            Target(
                f"anchoring overhead <= {OVERHEAD_TARGET:.2f} on the embedded chain "
                f"({s.banks} banks x {s.rounds} rounds, {s.epochs} local epoch(s))",
                f"{ratio:.2f}",
                ratio <= OVERHEAD_TARGET,
            ),
            Target(
                f"anchorRound <= 80,000 gas at {sizes} participants",
                f"{worst:,}",
                worst <= 80_000 and len(fast_known) == len(fast),
            ),
            Target(
                f"anchorRound gas flat in participants (spread <= {FLAT_TOLERANCE:.0%})",
                f"spread {spread:,} gas",
                spread <= FLAT_TOLERANCE * worst,
            ),
        ]


def run_benchmark(
    settings: aml.AmlSettings, with_anvil: bool, profile: bool | None, log: Callable[[str], None]
) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-anchoring-") as tmp:
        directory = Path(tmp)
        chain = connect(EMBEDDED)
        log("embedded: setting the scenario up")
        run = set_up(chain, directory / "embedded", settings)
        job = BaselineJob.of(chain, run)
        log("warming the round code up: one untimed ledger-off round")
        measure_baseline(replace(job, settings=replace(settings, rounds=1)), directory / "warm")
        log("embedded: the anchored rounds")
        embedded = measure_anchored(chain, run, "anchored, embedded")
        log("ledger off: the same rounds without a chain")
        baseline = measure_baseline(job, directory / "baseline")
        if baseline.commitments != embedded.commitments:
            raise BenchmarkError(
                "the baseline's roots, models or metrics differ from what the embedded run "
                "anchored: it did not redo the same work"
            )
        anchored = [embedded]
        anvil_note = None
        if with_anvil:
            log("anvil: starting a node, setting the scenario up, running it anchored")
            try:
                anchored.append(measure_on_anvil(directory / "anvil", settings))
            except ConsortiumError as exc:
                anvil_note = f"anvil skipped: {exc}"
        log("gas: gas.py's anchors at 2, 10 and 100 participants")
        gas = measure_gas(anchored)
        results = Results(settings, baseline, anchored, gas, 0.0, anvil_note)
        if profile or (profile is None and not results.targets()[0].met):
            log("profiling both runs again (cProfile, embedded)")
            results.profile = profile_runs(directory / "profile", settings)
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped or under make: rich would assume 80 columns
        console = Console(width=130)
    return console


def print_tables(results: Results) -> None:
    console = _console()
    s = results.settings
    runs = [results.baseline, *results.anchored]

    overhead = Table(
        title=f"Anchoring overhead: {s.banks} banks x {s.rounds} rounds, "
        f"{s.epochs} local epoch(s), seed {s.seed}",
        title_justify="left",
    )
    for column in (
        "run", "wall s", "vs baseline", "target", "ms / round", "extra ms / round", "wiring ms",
        "cpu s", "cpu vs baseline",
    ):  # fmt: skip
        overhead.add_column(column, justify="left" if column == "run" else "right", no_wrap=True)
    for run in runs:
        is_embedded = run is results.anchored[0]
        overhead.add_row(
            run.label,
            f"{run.seconds:.2f}",
            f"{results.ratio(run):.2f}x",
            f"<= {OVERHEAD_TARGET:.2f}" if is_embedded else "-",
            _ms((run.seconds - run.wiring) / s.rounds),
            _ms(results.extra_per_round(run)),
            _ms(run.wiring),
            f"{run.cpu:.2f}",
            f"{results.cpu_ratio(run):.2f}x",
        )

    split = Table(
        title="Round latency split, ms (mean / p95 over the rounds; p95 = nearest rank)",
        title_justify="left",
    )
    split.add_column("phase", no_wrap=True)
    for run in runs:
        split.add_column(f"{run.label}\nmean", justify="right", no_wrap=True)
        split.add_column("p95", justify="right", no_wrap=True)
    for phase in (*PHASES, "other", "round"):
        cells = []
        for run in runs:
            stat = run.stat(phase)
            cells += [_ms(stat[0]), _ms(stat[1])] if stat else ["-", "-"]
        split.add_row(phase, *cells)

    gas = Table(title="Gas per anchored round", title_justify="left")
    for column in ("participants", "measured by", "first round", "steady state", "slow path*"):
        gas.add_column(column, justify="right" if column != "measured by" else "left")
    for row in results.gas:
        gas.add_row(
            str(row.participants), row.source,
            *(f"{g:,}" if g is not None else "-" for g in (row.first, row.steady, row.slow)),
        )  # fmt: skip

    console.print(overhead)
    for run in results.anchored:
        console.print(f"  {run.label}: {run.chain}")
    console.print(split, gas)
    console.print(
        "* slow path: the first anchor after membership or consents changed re-checks every "
        "participant and consent on chain; not held to the target (see scripts/bench/gas.py)."
    )
    if results.anvil_note:
        console.print(results.anvil_note)
    if results.profile:
        _print_profile(console, results.profile)
    for target in results.targets():
        console.print(target.verdict_line())
    for run in results.anchored[1:]:
        console.print(
            f"measured: anchoring overhead on {run.label.split(', ')[-1]}: "
            f"{results.ratio(run):.2f} (no target)"
        )
    for run in results.anchored:
        extra = results.extra_per_round(run)
        console.print(
            f"{run.label}: anchoring adds {extra * 1000:,.0f} ms per round; that is within "
            f"{OVERHEAD_TARGET:.2f} only for rounds whose ledger-off work takes at least "
            f"{extra / (OVERHEAD_TARGET - 1):.1f} s (this run's: "
            f"{results.baseline.seconds / s.rounds:.2f} s)"
        )
        if run.evm is not None:
            console.print(
                f"{run.label}: {run.evm / s.rounds * 1000:,.0f} ms per round is spent in "
                "eth-tester's py-evm backend (executing, mining, reading state, blocks and "
                "receipts); with everything above it free, the ratio could not go below "
                f"{results.evm_floor(run):.2f} for rounds of this size"
            )
    console.print(
        "baseline check: the ledger-off rounds produced the very roots, models and metrics "
        "the embedded run anchored"
    )
    console.print(
        f"measured in {results.seconds:.1f} s; 1-minute load average {results.load[0]:.1f} at "
        f"the start, {results.load[1]:.1f} at the end, on {os.cpu_count()} CPUs (other "
        "processes competing for the CPU inflate wall times; cpu s is this process's own time, "
        "without the anvil node's)"
    )


def _print_profile(console: Console, profile: Profile) -> None:
    extra = profile.anchored_seconds - profile.baseline_seconds
    table = Table(
        title=(
            "Where the anchored run's extra time goes (cProfile, embedded; profiled "
            f"anchored {profile.anchored_seconds:.1f} s vs baseline "
            f"{profile.baseline_seconds:.1f} s, extra {extra:.1f} s)"
        ),
        title_justify="left",
    )
    for column in ("chain touchpoint", "calls", "ms / round", "share of extra"):
        table.add_column(column, justify="left" if column == "chain touchpoint" else "right")
    explained = 0.0
    for line in profile.touchpoints:
        explained += line.seconds
        table.add_row(
            line.what, f"{line.calls:,}", _ms(line.seconds / profile.rounds),
            f"{line.seconds / extra:.0%}" if extra > 0 else "-",
        )  # fmt: skip
    table.add_row(
        "total of the touchpoints", "", _ms(explained / profile.rounds),
        f"{explained / extra:.0%}" if extra > 0 else "-",
    )  # fmt: skip
    console.print(table)
    for title, lines in (
        ("Anchored run: top project functions by cumulative time (profiled)", profile.anchored_top),
        ("Baseline: top project functions by cumulative time (profiled)", profile.baseline_top),
    ):
        top = Table(title=title, title_justify="left")
        for column in ("function", "calls", "cumulative s"):
            top.add_column(column, justify="left" if column == "function" else "right")
        for line in lines:
            top.add_row(line.what, f"{line.calls:,}", f"{line.seconds:.2f}")
        console.print(top)


def print_json(results: Results) -> None:
    def run_json(run: Run) -> dict[str, Any]:
        phases = {}
        for phase in (*PHASES, "other", "round"):
            stat = run.stat(phase)
            if stat:
                phases[phase] = {"mean": stat[0], "p95": stat[1]}
        return {
            "label": run.label,
            "chain": run.chain,
            "seconds": run.seconds,
            "wiring": run.wiring,
            "cpu": run.cpu,
            "ratio": results.ratio(run),
            "cpuRatio": results.cpu_ratio(run),
            "extraPerRound": results.extra_per_round(run),
            "evmSeconds": run.evm,
            "phases": phases,
            "gasPerRound": run.gas,
        }

    document: dict[str, Any] = {
        "settings": results.settings.to_json(),
        "seconds": round(results.seconds, 1),
        "runs": [run_json(r) for r in (results.baseline, *results.anchored)],
        "gas": [asdict(g) for g in results.gas],
        "targets": [asdict(t) for t in results.targets()],
        "anvil": results.anvil_note,
        "loadAverage": {"start": results.load[0], "end": results.load[1], "cpus": os.cpu_count()},
    }
    if results.profile:
        document["profile"] = asdict(results.profile)
    click.echo(json.dumps(document, indent=2))


@click.command()
@click.option("--banks", type=click.IntRange(2, 50), default=4, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=7, show_default=True)
@epochs_option  # the figure is for the scenario's default, 1
@click.option("--anvil/--no-anvil", default=True, show_default=True, help="Also measure on anvil.")
@click.option(
    "--profile/--no-profile",
    default=None,
    help="Profile both runs again under cProfile [default: only when the embedded target fails].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
def main(
    banks: int,
    rounds: int,
    seed: int,
    epochs: int,
    anvil: bool,
    profile: bool | None,
    as_json: bool,
) -> None:
    """Measure what anchoring costs a training job, against the same job with the ledger off."""
    log = progress_log(quiet=as_json)
    settings = aml.AmlSettings(banks, rounds, seed, epochs)
    finish(lambda: run_benchmark(settings, anvil, profile, log), as_json, print_json, print_tables)


if __name__ == "__main__":
    main()
