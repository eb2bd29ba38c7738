"""What auditing a job costs: throughput over large models, and 1,000 rounds on anvil.

Why this benchmark exists: the auditor re-derives everything from bytes (every object's
SHA-256, every signature, FedAvg over every update) and reads the chain for every round. The
issue fixes what must be shown:

- **Audit throughput over a bundle with large models**, in MB/s of the bundle's objects,
  against plain SHA-256 of the same files measured in the same run. Hashing every file once
  is the least any verification of the bundle must do, so the ratio says how much the audit
  adds to it (reading, parsing, signature recovery, FedAvg and the aggregate's digest, the
  chain). Target: at least 0.5.
- **The time to audit 1,000 rounds x 10 participants on anvil**, and the audit's memory at
  100 and at 1,000 rounds of the same job shape: the audit streams, so its memory must be
  flat in the number of rounds. Target: the 1,000-round audit's peak resident memory at most
  ``MEMORY_TARGET`` times the 100-round audit's. Each of these two audits runs in a fresh
  spawned process whose peak is reset (``/proc/self/clear_refs``) once its imports are done
  and its chain connected, so the peak is the audit's own plus that fixed base (about 95 MB
  of interpreter and libraries); the growth above the base is shown beside it. The audit
  keeps only the bundle's header (``open_bundle`` reads ``manifest.json``) and reads
  ``rounds.jsonl`` a line at a time, so nothing it holds grows with the rounds: the table
  shows the size of ``rounds.jsonl`` beside the growth, so that anything growing with the
  rounds stands out against it.

Both parts audit against an anvil node started in a temporary directory on a free port: an
auditor always audits against a node (``open_chain`` refuses the embedded chain, which lives
in one process), and the embedded chain's EVM in Python would make the chain, not the
audit's own work, the measure.

Throughput: both passes run on a warm page cache (one untimed hashing pass first), alternate,
and the best of ``--repeat`` each is reported. The audit pass is everything ``consortium
audit`` does but print: ``open_bundle`` and every result of ``verify_bundle``. The SHA-256
pass is ``hashlib.file_digest`` over every file under ``bundle/objects``. When the target is
missed (or with ``--profile``) the audit runs again under cProfile and its time is split into
its parts.

How the bundles are built, with the project's own pieces: ``aml.set_up`` founds the
consortium (the institute coordinates; the banks are members with datasets, consented to the
lead bank's purpose); the institute creates a job whose initial model is a logistic
regression of ``--weights`` float64 weights (8 bytes each) plus a bias. Each round, every
bank's update is the round's base model plus a small random step, stored with ``put_model``,
with its metrics object and its EIP-712 signed update record (``sign_update_record``); the
coordinator aggregates with ``fedavg``, stores the model, the records and the round metrics,
journals its intent, anchors with ``Ledger.jobs.anchor`` and journals the anchor. The bundle
is then written by ``export_bundle`` from the coordinator's store and journal, as ``consortium
export`` does. This differs from a real job only where the audit cannot see it: the updates
are not trained on data, the round metrics carry no validation scores, and no receipts are
delivered.

The script exits with status 1 when a target is missed. Run it from the repository root::

    .venv/bin/python scripts/bench/audit.py [--rounds 1000] [--profile] [--json]

``--rounds 0`` skips the many-rounds part. ``--workdir /dev/shm`` builds the jobs on a
memory file system, which halves the time spent building them (every stored object is
fsynced) and changes nothing measured: both parts read bundles that sit in the page cache.
"""

from __future__ import annotations

import concurrent.futures
import cProfile
import gc
import hashlib
import json
import multiprocessing
import os
import pstats
import re
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from outcome import Target, finish, progress_log
from profile_parts import ProfileLine, cumulative
from rich.console import Console
from rich.table import Table

from consortium.audit import Verdict, open_bundle, open_chain, verify_bundle
from consortium.chain.anvil import AnvilNode
from consortium.chain.backend import connect
from consortium.chain.base import Chain
from consortium.crypto.digests import hex32
from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import (
    SignedUpdateRecord,
    UpdateRecord,
    sign_update_record,
    sort_records,
)
from consortium.errors import ConsortiumError
from consortium.fl.aggregation import fedavg
from consortium.fl.model import Model, init_model
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import participant_mask
from consortium.orchestration.bundle import export_bundle
from consortium.protocol.messages import anchor_to_json
from consortium.scenarios import aml
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.store.models import put_model

THROUGHPUT_TARGET = 0.5
MEMORY_TARGET = 1.10
MEMORY_POINT = 100  # rounds of the smaller audit, whose peak memory the full one is held to
POLL_LATENCY = 0.005
SMALL_WEIGHTS = 8  # the AML model's features
PROGRESS_EVERY = 100
MB = 1e6


class BenchmarkError(ConsortiumError):
    """A run did not do what the figures assume (e.g. an audit that does not pass)."""


Log = Callable[[str], None]


# ---------------------------------------------------------------------------- building jobs


@dataclass
class Consortium:
    """A founded consortium on one chain: the AML scenario's parties and datasets."""

    chain: Chain
    run: aml.AmlRun
    datasets: tuple[int, ...]

    @classmethod
    def found(cls, chain: Chain, directory: Path, participants: int, seed: int) -> Consortium:
        settings = aml.AmlSettings(banks=participants, rounds=1, seed=seed)
        run = aml.set_up(chain, directory, settings, report=lambda _: None)
        job = Ledger(chain, run.deployment).jobs.get(run.job_id)
        return cls(chain, run, tuple(job.dataset_ids))


@dataclass(frozen=True)
class BuiltJob:
    """A job anchored round by round, and its exported bundle."""

    job_id: int
    rounds: int
    participants: int
    weights: int
    bundle: Path
    seconds: float  # building and anchoring the rounds
    export_seconds: float


def build_job(
    consortium: Consortium,
    directory: Path,
    *,
    rounds: int,
    weights: int,
    seed: int,
    log: Log,
    label: str,
) -> BuiltJob:
    """A new job of ``rounds`` anchored rounds, every bank in every round, exported to
    ``directory/bundle``; the coordinator's store and journal are ``directory/coordinator``."""
    run = consortium.run
    chain = consortium.chain
    ledger = Ledger(chain, run.deployment, run.institute.account)
    store = ArtifactStore(directory / "coordinator" / "store")
    journal_path = directory / "coordinator" / "journal.jsonl"
    journal = Journal(journal_path)
    base = init_model(weights, seed)
    base_digest = put_model(store, base)
    spec = store.put_json(
        {
            "model": "logistic-regression",
            "weights": weights,
            "aggregation": "fedavg-by-examples, participant address ascending, float64",
            "training": "synthetic steps for scripts/bench/audit.py",
        }
    )
    job_id = ledger.jobs.create(
        purpose=aml.PURPOSE,
        model_spec_digest=spec,
        initial_model_digest=base_digest,
        consumer=run.banks[0].account.address,
        participants=[bank.account.address for bank in run.banks],
        dataset_ids=list(consortium.datasets),
    )
    domain = Domain(chain.chain_id, run.deployment.ledger)
    rng = np.random.Generator(np.random.PCG64(seed))
    start = time.perf_counter()
    for round_number in range(1, rounds + 1):
        base_digest, base = _anchor_round(
            ledger, job_id, round_number, base_digest, base, consortium, domain, store, journal,
            rng,
        )  # fmt: skip
        if round_number % PROGRESS_EVERY == 0 and round_number < rounds:
            log(f"{label}: anchored {round_number:,}/{rounds:,} rounds")
    seconds = time.perf_counter() - start
    journal.close()
    start = time.perf_counter()
    bundle = export_bundle(
        Ledger(chain, run.deployment), job_id, store, Journal(journal_path), directory
    )
    return BuiltJob(
        job_id, rounds, len(run.banks), weights, bundle, seconds, time.perf_counter() - start
    )


def _anchor_round(
    ledger: Ledger,
    job_id: int,
    round_number: int,
    base_digest: bytes,
    base: Model,
    consortium: Consortium,
    domain: Domain,
    store: ArtifactStore,
    journal: Journal,
    rng: np.random.Generator,
) -> tuple[bytes, Model]:
    """One round as the coordinator runs it, minus training; returns the new global model."""
    signed: list[SignedUpdateRecord] = []
    updates: dict[str, Model] = {}
    for bank in consortium.run.banks:
        update = {name: t + 0.01 * rng.standard_normal(t.shape) for name, t in base.items()}
        examples = int(rng.integers(100, 1_000))
        metrics = store.put_json({"numExamples": examples, "trainLogLoss": 0.5})
        account = bank.account
        record = UpdateRecord(
            job_id, round_number, account.address, put_model(store, update), base_digest,
            examples, metrics,
        )  # fmt: skip
        signed.append(sign_update_record(account, domain, record))
        updates[account.address] = update
    ordered = sort_records(signed)
    model = fedavg(
        [(r.record.participant, updates[r.record.participant], r.record.num_examples)
         for r in ordered]
    )  # fmt: skip
    model_digest = put_model(store, model)
    records = [store.put_json(r.to_json()) for r in ordered]
    tree = MerkleTree(store.get(d) for d in records)
    accepted = [r.record.participant for r in ordered]
    metrics_digest = store.put_json(
        {
            "round": round_number,
            "validation": {},
            "accepted": accepted,
            "examples": sum(r.record.num_examples for r in ordered),
            "refused": {},
        }
    )
    journal.append(
        "intent", round=round_number, root=hex32(tree.root), count=tree.size,
        model=hex32(model_digest), metrics=hex32(metrics_digest),
        records=[hex32(d) for d in records], participants=accepted, refused={},
    )  # fmt: skip
    job = ledger.jobs.get(job_id)
    anchor, receipt = ledger.jobs.anchor(
        job_id, round_number, tree.root, participant_mask(job.participants, accepted),
        model_digest, metrics_digest,
    )  # fmt: skip
    journal.append(
        "anchored", round=round_number, anchor=anchor_to_json(anchor),
        txHash=receipt["transactionHash"].to_0x_hex(), gasUsed=receipt["gasUsed"],
    )  # fmt: skip
    return model_digest, model


# ---------------------------------------------------------------------------- throughput


def object_files(bundle: Path) -> list[Path]:
    return sorted(p for p in (bundle / "objects").rglob("*") if p.is_file())


def sha256_pass(files: list[Path]) -> float:
    """Seconds to SHA-256 every file, as ``sha256sum`` would: the floor of any verification."""
    start = time.perf_counter()
    for path in files:
        with path.open("rb") as handle:
            hashlib.file_digest(handle, "sha256")
    return time.perf_counter() - start


def audit_pass(bundle: Path, chain: Chain) -> tuple[float, Verdict]:
    """Seconds for the whole audit (open, every check), and its verdict."""
    start = time.perf_counter()
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        for result in verify_bundle(opened, chain):
            verdict.add(result)
    return time.perf_counter() - start, verdict


@dataclass(frozen=True)
class Part:
    """A part of the audit's work in the profile: functions, each optionally only as called
    from one caller (``(file suffix, function name)``; builtins have file ``~``)."""

    what: str
    functions: tuple[tuple[tuple[str, str], tuple[str, str] | None], ...]


VERIFIED = ("store/artifacts.py", "_verified")
AGGREGATION = ("audit/checks.py", "check_aggregation")
PARTS = (
    Part(
        "objects: read (ArtifactStore.get into bytes, get_view into numpy)",
        (
            (("pathlib.py", "read_bytes"), VERIFIED),
            (("store/artifacts.py", "_read_private"), None),
        ),
    ),
    Part(
        "objects: SHA-256 (ArtifactStore.get, get_view)",
        ((("~", "<built-in method _hashlib.openssl_sha256>"), VERIFIED),),
    ),
    Part(
        "tensors: parse_tensor_blob (header only; arrays are views)",
        ((("store/models.py", "parse_tensor_blob"), None),),
    ),
    Part(
        "signatures: EIP-712 recovery (check_signature)",
        ((("audit/checks.py", "check_signature"), None),),
    ),
    Part("FedAvg re-run (fedavg)", ((("fl/aggregation.py", "fedavg"), AGGREGATION),)),
    Part(
        "aggregate's digest (model_digest: SHA-256 of each tensor's buffer)",
        ((("crypto/digests.py", "model_digest"), AGGREGATION),),
    ),
    Part(
        "chain: membership and consent as of each anchoring block",
        ((("audit/verifier.py", "_standing_checks"), None),),
    ),
    Part(
        "chain: anchor commitment and transaction",
        (
            (("audit/checks.py", "check_anchored"), None),
            (("audit/checks.py", "check_transaction"), None),
        ),
    ),
    Part(
        "chain: set-up (ledger links, contract code, job)",
        (
            (("audit/chainview.py", "__init__"), None),
            (("audit/checks.py", "check_deployment"), None),
            (("audit/chainview.py", "code"), None),
            (("audit/checks.py", "check_code"), None),
            (("audit/chainview.py", "job"), None),
        ),
    ),
)


def profile_audit(bundle: Path, chain: Chain) -> tuple[list[ProfileLine], float]:
    """The audit under cProfile, its time split into :data:`PARTS` and the rest."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        audit_pass(bundle, chain)
    finally:
        profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    lines = []
    for part in PARTS:
        calls, seconds = 0, 0.0
        for callee, caller in part.functions:
            more_calls, more_seconds = cumulative(stats, callee, caller)
            calls, seconds = calls + more_calls, seconds + more_seconds
        lines.append(ProfileLine(part.what, calls, seconds))
    rest = total - sum(line.seconds for line in lines)
    lines.append(ProfileLine("everything else (rounds.jsonl, records, checks, results)", 0, rest))
    return lines, total


@dataclass
class Throughput:
    job: BuiltJob
    files: int
    bytes: int
    sha256: list[float]
    audit: list[float]
    checks: int
    profile: list[ProfileLine] = field(default_factory=list)
    profiled_seconds: float = 0.0

    @property
    def sha256_mb_s(self) -> float:
        return self.bytes / MB / min(self.sha256)

    @property
    def audit_mb_s(self) -> float:
        return self.bytes / MB / min(self.audit)

    @property
    def ratio(self) -> float:
        return self.audit_mb_s / self.sha256_mb_s


def measure_throughput(
    consortium: Consortium,
    directory: Path,
    rounds: int,
    weights: int,
    repeat: int,
    seed: int,
    profile: bool | None,
    log: Log,
) -> Throughput:
    participants = len(consortium.run.banks)
    log(
        f"large models: {rounds} rounds x {participants} updates of {weights:,} float64 "
        f"weights ({weights * 8 / MB:,.1f} MB each), anchored and exported"
    )
    job = build_job(
        consortium, directory, rounds=rounds, weights=weights, seed=seed, log=log,
        label="large models",
    )  # fmt: skip
    files = object_files(job.bundle)
    size = sum(p.stat().st_size for p in files)
    log(f"large models: timing the audit and sha256 over {size / MB:,.0f} MB, best of {repeat}")
    sha256_pass(files)  # warms the page cache for both
    sha, audits, checks = [], [], 0
    for _ in range(repeat):
        sha.append(sha256_pass(files))
        seconds, verdict = audit_pass(job.bundle, consortium.chain)
        if not verdict.ok:
            raise BenchmarkError(f"the large-model bundle does not pass: {verdict.describe()}")
        audits.append(seconds)
        checks = verdict.passed
    result = Throughput(job, len(files), size, sha, audits, checks)
    if profile or (profile is None and result.ratio < THROUGHPUT_TARGET):
        log("large models: profiling the audit (cProfile)")
        result.profile, result.profiled_seconds = profile_audit(job.bundle, consortium.chain)
    return result


# ---------------------------------------------------------------------------- many rounds


@dataclass(frozen=True)
class ChildAudit:
    """One audit run in a fresh process."""

    rounds: int
    seconds: float
    open_seconds: float  # reading the header
    checks: int
    ok: bool
    verdict: str
    rss_before_mb: float  # imports done, chain connected, bundle not yet opened
    peak_rss_mb: float  # the highest resident set from then to the end of the audit
    rounds_mb: float  # rounds.jsonl on disk, which the audit reads a line at a time


def audit_in_fresh_process(bundle: str, url: str, label: str, progress: bool) -> ChildAudit:
    """Runs in a spawned process: audits ``bundle`` against ``url``.

    The project's errors do not all survive pickling back to the parent (ChainRevert's
    constructor takes more than its message), so any of them comes back as a BenchmarkError
    with the same message.
    """
    try:
        return _audit_here(bundle, url, label, progress)
    except ConsortiumError as exc:
        raise BenchmarkError(f"the audit of {bundle} stopped: {exc}") from None


def _audit_here(bundle: str, url: str, label: str, progress: bool) -> ChildAudit:
    path = Path(bundle)
    chain = open_chain(url)
    gc.collect()
    rss_before = _reset_peak_rss()
    verdict = Verdict()
    start = time.perf_counter()
    last = 0
    with open_bundle(path) as opened:
        opened_at = time.perf_counter()
        for result in verify_bundle(opened, chain):
            verdict.add(result)
            if progress and result.round and result.round != last:
                last = result.round
                if last % PROGRESS_EVERY == 0:
                    elapsed = time.perf_counter() - start
                    print(f"... {label}: {last:,} rounds in {elapsed:.1f} s", file=sys.stderr)
        rounds = len(opened)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    chain.close()
    return ChildAudit(
        rounds=rounds,
        seconds=seconds,
        open_seconds=opened_at - start,
        checks=verdict.passed + verdict.failed + verdict.unverifiable,
        ok=verdict.ok,
        verdict=verdict.describe(),
        rss_before_mb=rss_before,
        peak_rss_mb=peak,
        rounds_mb=(path / "rounds.jsonl").stat().st_size / MB,
    )


_STATUS = Path("/proc/self/status")


def _status_mb(field_name: str) -> float | None:
    try:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 / MB if match else None


def _reset_peak_rss() -> float:
    """Resets the peak resident set to the current one (Linux) and returns it, in MB; where
    that is impossible, the peak so far stands in for both."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _peak_rss_mb()
    current = _status_mb("VmRSS")
    return current if current is not None else _peak_rss_mb()


def _peak_rss_mb() -> float:
    """The peak resident set since the last reset (VmHWM), or ru_maxrss without /proc."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MB if sys.platform == "darwin" else maxrss * 1024 / MB  # bytes vs kB


def audit_elsewhere(bundle: Path, url: str, label: str, progress: bool) -> ChildAudit:
    """:func:`audit_in_fresh_process` in a new spawned process (nothing inherited)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(audit_in_fresh_process, str(bundle), url, label, progress).result()


@dataclass
class ManyRounds:
    participants: int
    small: BuiltJob
    full: BuiltJob
    small_audit: ChildAudit
    full_audit: ChildAudit

    @property
    def memory_ratio(self) -> float:
        return self.full_audit.peak_rss_mb / self.small_audit.peak_rss_mb


def measure_many_rounds(
    consortium: Consortium, directory: Path, url: str, rounds: int, seed: int, log: Log,
    progress: bool,
) -> ManyRounds:  # fmt: skip
    participants = len(consortium.run.banks)
    jobs = []
    # Two jobs, each with its own coordinator directory: a journal holds one job's rounds.
    for name, count in (("first", min(MEMORY_POINT, rounds)), ("full", rounds)):
        label = f"anvil {count:,}-round job"
        log(f"{label}: anchoring {count:,} rounds x {participants} participants")
        job = build_job(
            consortium, directory / f"job-{name}", rounds=count, weights=SMALL_WEIGHTS,
            seed=seed, log=log, label=label,
        )  # fmt: skip
        jobs.append(job)
    audits = []
    for job in jobs:
        label = f"anvil {job.rounds:,}-round audit"
        log(f"{label}: in a fresh process")
        audit = audit_elsewhere(job.bundle, url, label, progress)
        if not audit.ok:
            raise BenchmarkError(f"the {job.rounds}-round bundle does not pass: {audit.verdict}")
        audits.append(audit)
    return ManyRounds(participants, jobs[0], jobs[1], audits[0], audits[1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def anvil_chain(directory: Path, log: Log) -> Iterator[tuple[Chain, str]]:
    """A fresh anvil node in ``directory`` on a free port, and a connection to it."""
    node = AnvilNode(directory, port=_free_port())
    log(f"anvil: starting a node at {node.url}")
    node.start()
    try:
        chain = connect(node.url, poll_latency=POLL_LATENCY)
        try:
            yield chain, node.url
        finally:
            chain.close()
    finally:
        node.stop()


# ---------------------------------------------------------------------------- results


@dataclass
class Results:
    throughput: Throughput
    many: ManyRounds | None
    chain: str = ""
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    def targets(self) -> list[Target]:
        t = self.throughput
        targets = [
            Target(
                f"audit throughput >= {THROUGHPUT_TARGET} of sha256 over the same files",
                f"{t.ratio:.2f} ({t.audit_mb_s:,.0f} vs {t.sha256_mb_s:,.0f} MB/s)",
                t.ratio >= THROUGHPUT_TARGET,
            )
        ]
        if self.many is not None:
            m = self.many
            targets.append(
                Target(
                    f"audit memory flat in rounds: peak RSS at {m.full.rounds:,} rounds <= "
                    f"{MEMORY_TARGET:.2f}x the peak at {m.small.rounds:,}",
                    f"{m.memory_ratio:.2f}x ({m.full_audit.peak_rss_mb:,.0f} vs "
                    f"{m.small_audit.peak_rss_mb:,.0f} MB)",
                    m.memory_ratio <= MEMORY_TARGET,
                )
            )
        return targets


def run_benchmark(
    participants: int,
    large_rounds: int,
    weights: int,
    rounds: int,
    repeat: int,
    profile: bool | None,
    seed: int,
    workdir: Path | None,
    log: Log,
    progress: bool,
) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-audit-", dir=workdir) as tmp,
        anvil_chain(Path(tmp) / "node", log) as (chain, url),
    ):
        directory = Path(tmp)
        log(f"anvil: founding a consortium of {participants} banks")
        consortium = Consortium.found(chain, directory / "consortium", participants, seed)
        throughput = measure_throughput(
            consortium, directory / "large", large_rounds, weights, repeat, seed, profile, log
        )
        many = None
        if rounds:
            many = measure_many_rounds(consortium, directory, url, rounds, seed, log, progress)
        description = chain.description
    results = Results(throughput, many, description)
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped or under make: rich would assume 80 columns
        console = Console(width=140)  # the many-rounds table takes 138
    return console


def print_tables(results: Results) -> None:
    console = _console()
    t = results.throughput
    job = t.job
    throughput = Table(
        title=(
            f"Audit throughput: {job.rounds} rounds x {job.participants} participants, "
            f"{job.weights:,} float64 weights per model ({job.weights * 8 / MB:,.1f} MB); "
            f"{t.files} objects, {t.bytes / MB:,.0f} MB; best of {len(t.audit)}"
        ),
        title_justify="left",
    )
    for column in ("pass", "best s", "median s", "MB/s", "vs sha256", "target"):
        throughput.add_column(column, justify="left" if column == "pass" else "right")
    throughput.add_row(
        "sha256 of every object file (baseline)", f"{min(t.sha256):.3f}",
        f"{statistics.median(t.sha256):.3f}", f"{t.sha256_mb_s:,.0f}", "1.00x", "-",
    )  # fmt: skip
    throughput.add_row(
        f"audit: open_bundle + verify_bundle ({t.checks:,} checks)",
        f"{min(t.audit):.3f}", f"{statistics.median(t.audit):.3f}", f"{t.audit_mb_s:,.0f}",
        f"{t.ratio:.2f}x", f">= {THROUGHPUT_TARGET:.2f}x",
    )  # fmt: skip
    console.print(throughput)
    console.print(
        f"  building: {job.seconds:.1f} s to anchor the rounds, {job.export_seconds:.1f} s to "
        "export them (export_bundle, with its tar.gz)"
    )
    if t.profile:
        table = Table(
            title=(
                f"Where the audit's time goes (cProfile; profiled {t.profiled_seconds:.2f} s, "
                f"unprofiled best {min(t.audit):.2f} s)"
            ),
            title_justify="left",
        )
        for column in ("part", "calls", "seconds", "share"):
            table.add_column(column, justify="left" if column == "part" else "right")
        for line in t.profile:
            table.add_row(
                line.what, f"{line.calls:,}" if line.calls else "", f"{line.seconds:.3f}",
                f"{line.seconds / t.profiled_seconds:.0%}",
            )  # fmt: skip
        console.print(table)
        console.print(
            "  cProfile slows Python code (the chain client, signature recovery) more than C "
            "code (hashing, copying): their shares are upper bounds."
        )

    if results.many is not None:
        m = results.many
        many = Table(
            title=(
                f"Audit of many rounds on anvil: {m.participants} participants, "
                f"{SMALL_WEIGHTS}-weight models, each audit in a fresh process"
            ),
            title_justify="left",
        )
        for column in (
            "rounds", "audit s", "ms / round", "checks", "RSS before MB", "peak RSS MB",
            "vs first", "growth MB", "rounds.jsonl MB", "anchoring s", "export s",
        ):  # fmt: skip
            many.add_column(column, justify="right")
        for job, audit in ((m.small, m.small_audit), (m.full, m.full_audit)):
            many.add_row(
                f"{job.rounds:,}", f"{audit.seconds:.1f}",
                f"{audit.seconds / job.rounds * 1000:,.1f}", f"{audit.checks:,}",
                f"{audit.rss_before_mb:,.1f}", f"{audit.peak_rss_mb:,.1f}",
                f"{audit.peak_rss_mb / m.small_audit.peak_rss_mb:.2f}x",
                f"{audit.peak_rss_mb - audit.rss_before_mb:,.1f}",
                f"{audit.rounds_mb:.1f}",
                f"{job.seconds:.1f}", f"{job.export_seconds:.1f}",
            )  # fmt: skip
        console.print(many)
        console.print(
            "  RSS before: the audit process with its imports done and its chain connected; "
            "peak RSS: its highest resident set from then to the end of the audit; growth: "
            "the difference; open_bundle reads the header only, and the rounds a line at a time."
        )
    console.print(f"  chain: {results.chain}")
    for target in results.targets():
        console.print(target.verdict_line())
    if results.many is not None:
        m = results.many
        console.print(
            f"measured: auditing {m.full.rounds:,} rounds x {m.participants} participants on "
            f"anvil takes {m.full_audit.seconds:.1f} s (no target)"
        )
    console.print(
        f"measured in {results.seconds:.1f} s; 1-minute load average {results.load[0]:.1f} at "
        f"the start, {results.load[1]:.1f} at the end, on {os.cpu_count()} CPUs (the anvil node "
        "shares them)"
    )


def print_json(results: Results) -> None:
    t = results.throughput
    document: dict[str, Any] = {
        "chain": results.chain,
        "throughput": {
            "rounds": t.job.rounds,
            "participants": t.job.participants,
            "weights": t.job.weights,
            "files": t.files,
            "bytes": t.bytes,
            "sha256Seconds": t.sha256,
            "auditSeconds": t.audit,
            "sha256MBps": t.sha256_mb_s,
            "auditMBps": t.audit_mb_s,
            "ratio": t.ratio,
            "checks": t.checks,
            "buildSeconds": t.job.seconds,
            "exportSeconds": t.job.export_seconds,
            "profile": [asdict(line) for line in t.profile],
            "profiledSeconds": t.profiled_seconds,
        },
        "targets": [asdict(target) for target in results.targets()],
        "seconds": round(results.seconds, 1),
        "loadAverage": {"start": results.load[0], "end": results.load[1], "cpus": os.cpu_count()},
    }
    if results.many is not None:
        m = results.many
        document["manyRounds"] = {
            "participants": m.participants,
            "audits": [
                {
                    **asdict(audit),
                    "anchoringSeconds": job.seconds,
                    "exportSeconds": job.export_seconds,
                }
                for job, audit in ((m.small, m.small_audit), (m.full, m.full_audit))
            ],
            "memoryRatio": m.memory_ratio,
        }
    click.echo(json.dumps(document, indent=2))


@click.command()
@click.option("--participants", type=click.IntRange(2, 50), default=10, show_default=True)
@click.option(
    "--weights",
    type=click.IntRange(1),
    default=1_000_000,
    show_default=True,
    help="float64 weights of the large model (8 bytes each).",
)
@click.option(
    "--large-rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Rounds of the large-model job.",
)
@click.option(
    "--rounds",
    type=click.IntRange(0, 100_000),
    default=1_000,
    show_default=True,
    help="Rounds of the many-rounds job (0: skip that part).",
)
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=7, show_default=True)
@click.option(
    "--profile/--no-profile",
    default=None,
    help="Profile the large-model audit [default: only when the throughput target fails].",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where to build the jobs [default: the system's temporary directory].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
def main(
    participants: int,
    weights: int,
    large_rounds: int,
    rounds: int,
    repeat: int,
    seed: int,
    profile: bool | None,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Measure what auditing a job costs: throughput against sha256, 1,000 rounds on anvil."""
    log = progress_log(quiet=as_json)
    finish(
        lambda: run_benchmark(
            participants, large_rounds, weights, rounds, repeat, profile, seed, workdir, log,
            progress=not as_json,
        ),
        as_json, print_json, print_tables,
    )  # fmt: skip


if __name__ == "__main__":
    main()
