"""What the ECDH private set intersection costs each party, against the X25519 floor.

The figures of the vertical SME-credit issue's PSI part:

- **Ids per second per core per party** at 100,000 and 1,000,000 ids per side with half of
  each side in the intersection: both parties run in this process, one step after the other
  (``PsiParty`` set-up with ``blind_own``, ``blind_theirs``, ``finish``), and each party's
  steps are timed apart. Per core means per CPU-second: the CPU time of this process and of
  the worker processes it reaped during the step (``getrusage``), so that other work on a
  shared machine does not count against the figure; the wall time is shown beside it.
  Target: at least 10,000 ids/s per core per party.
- **The floor**, measured right before each size and in CPU time too: the raw rate of the same
  X25519 call the blinding makes (``exchange(from_public_bytes(u))`` in a comprehension over
  random points). Each party does two per id, so half that rate is the most any
  implementation over ``cryptography`` can reach; the ratio says how much of it the protocol
  keeps.
- **Memory** at the largest size: the peak resident set's growth over the run (both parties
  and their messages; the id lists are made before), from ``getrusage``'s lifetime peak, which
  this largest run sets.
- With ``--workers N`` (default 2; 1 skips it), the 100,000-id run again with each party's
  blinding spread over N processes: the wall time falls, the CPU time (pickling, start-up of
  the workers) grows.

Run from the repository root::

    .venv/bin/python scripts/bench/psi.py [--max-ids 100000] [--workers 1] [--json]
"""

from __future__ import annotations

import gc
import json
import os
import resource
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF
from typing import Any, TypeVar

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from outcome import Target, finish, load_json, print_verdicts, progress_log, run_line, targets_json
from rich.console import Console
from rich.table import Table

from consortium.errors import ConsortiumError
from consortium.fl.vertical.psi import PsiOutcome, PsiParty

SIZES = (100_000, 1_000_000)
FLOOR_EXCHANGES = 20_000
RATE_TARGET = 10_000
CONTEXT = "bench job / ecdh-psi"
REFERENCE = (
    "Reference: SecretFlow's C++ ECDH-PSI over Curve25519, 10 million ids per side in 114 s on "
    "8 cores (~11,000 ids/s per core)"
)
STEPS = ("own", "theirs", "finish")

_T = TypeVar("_T")


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pool's workers), user + system."""
    own, children = (resource.getrusage(who) for who in (RUSAGE_SELF, RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class PartyRun:
    """One party's steps at one size: CPU seconds by step, and wall seconds in all."""

    steps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    wall: float = 0.0

    def timed(self, step: str, call: Callable[[], _T]) -> _T:
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = call()
        self.steps[step] += cpu_seconds() - cpu
        self.wall += time.perf_counter() - wall
        return result

    @property
    def cpu(self) -> float:
        return sum(self.steps.values())


@dataclass
class SizeRun:
    """Both parties at ``ids`` per side over ``workers`` processes, and the floor before it."""

    ids: int
    workers: int
    floor_us: float  # one exchange, microseconds
    guest: PartyRun
    host: PartyRun
    intersection: int

    def rate_per_core(self, party: PartyRun) -> float:
        return self.ids / party.cpu

    @property
    def floor_rate(self) -> float:
        """Ids per second per core per party at two bare exchanges per id."""
        return 1e6 / (2 * self.floor_us)

    @property
    def slowest_rate(self) -> float:
        return min(self.rate_per_core(self.guest), self.rate_per_core(self.host))


@dataclass
class Results:
    runs: list[SizeRun]
    memory_ids: int
    memory_growth_mb: float
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    def targets(self) -> list[Target]:
        return [
            Target(
                f"ids/s per core per party at {run.ids:,} ids per side >= {RATE_TARGET:,}",
                f"{run.slowest_rate:,.0f} (the slower party)",
                run.slowest_rate >= RATE_TARGET,
            )
            for run in self.runs
            if run.workers == 1
        ]


# ---------------------------------------------------------------------------- measuring


def floor_microseconds() -> float:
    """Microseconds per ``exchange(from_public_bytes(u))`` over random u, as the blinding
    makes them (a random u is a point of small order with negligible probability)."""
    exchange = X25519PrivateKey.generate().exchange
    load = X25519PublicKey.from_public_bytes
    points = [secrets.token_bytes(32) for _ in range(FLOOR_EXCHANGES)]
    start = cpu_seconds()
    _ = [exchange(load(point)) for point in points]
    return (cpu_seconds() - start) / FLOOR_EXCHANGES * 1e6


def id_lists(n: int) -> tuple[list[str], list[str]]:
    """Guest and host business ids, ``n`` each, the host's second half in the guest's set."""
    return [f"biz-{i:09d}" for i in range(n)], [f"biz-{i:09d}" for i in range(n // 2, n + n // 2)]


def run_size(
    guest_ids: list[str], host_ids: list[str], workers: int, log: Callable[[str], None]
) -> SizeRun:
    """Both parties' steps, each party's timed apart; checks the result."""
    floor = floor_microseconds()
    n = len(guest_ids)
    guest_run, host_run = PartyRun(), PartyRun()
    log(f"{n:,} ids per side, {workers} worker(s): blinding (floor {floor:.1f} us per exchange)")
    guest = guest_run.timed("own", lambda: PsiParty(guest_ids, CONTEXT, workers=workers))
    host = host_run.timed("own", lambda: PsiParty(host_ids, CONTEXT, workers=workers))
    guest_own = guest_run.timed("own", guest.blind_own)
    host_own = host_run.timed("own", host.blind_own)
    guest_double = guest_run.timed("theirs", lambda: guest.blind_theirs(host_own.message))
    host_double = host_run.timed("theirs", lambda: host.blind_theirs(guest_own.message))
    guest_out = guest_run.timed(
        "finish", lambda: guest.finish(guest_own, host_double, guest_double)
    )
    host_out = host_run.timed("finish", lambda: host.finish(host_own, guest_double, host_double))
    check(guest_ids, host_ids, guest_out, host_out, n // 2)
    return SizeRun(n, workers, floor, guest_run, host_run, len(guest_out.positions))


def check(
    guest_ids: list[str], host_ids: list[str], guest: PsiOutcome, host: PsiOutcome, common: int
) -> None:
    """Refuses to report figures of a wrong intersection."""
    aligned = [guest_ids[i] for i in guest.positions]
    if (
        len(aligned) != common
        or aligned != [host_ids[i] for i in host.positions]
        or guest.commitment != host.commitment
        or set(aligned) != set(guest_ids) & set(host_ids)
    ):
        raise ConsortiumError(f"the PSI of {len(guest_ids):,} ids per side is wrong")


def rss_mb() -> float:
    """The current resident set in MB, from /proc/self/statm."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """The process's lifetime peak resident set in MB (ru_maxrss is kB on Linux)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def run_benchmark(max_ids: int, workers: int, log: Callable[[str], None]) -> Results:
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    sizes = [n for n in SIZES if n <= max_ids] or [max_ids]
    runs = [run_size(*id_lists(n), 1, log) for n in sizes[:-1]]
    largest = id_lists(sizes[-1])
    gc.collect()
    before = rss_mb()
    runs.append(run_size(*largest, 1, log))
    growth = peak_rss_mb() - before
    del largest
    if workers > 1:
        runs.append(run_size(*id_lists(sizes[0]), workers, log))
    results = Results(runs, sizes[-1], growth)
    results.seconds = time.perf_counter() - start
    results.load = (load_before, os.getloadavg()[0])
    return results


# ---------------------------------------------------------------------------- output


def print_tables(results: Results) -> None:
    console = Console(width=max(Console().width, 120))
    table = Table(
        title="ECDH-PSI over X25519 (cryptography), both parties in one process, 50% overlap",
        caption=REFERENCE,
    )
    columns = ("ids / side", "workers", "party", *(f"{s} CPU s" for s in STEPS), "CPU s")
    for column in (*columns, "wall s", "ids/s/core", "ids/s wall", "vs floor"):
        table.add_column(column, justify="left" if column == "party" else "right")
    for run in results.runs:
        table.add_row(
            f"{run.ids:,}", str(run.workers), "floor", *["-"] * 5,
            f"{run.floor_rate:,.0f}", "-", "-",
        )  # fmt: skip
        for name, party in (("guest", run.guest), ("host", run.host)):
            rate = run.rate_per_core(party)
            table.add_row(
                "", "", name, *(f"{party.steps[s]:.2f}" for s in STEPS), f"{party.cpu:.1f}",
                f"{party.wall:.1f}", f"{rate:,.0f}", f"{run.ids / party.wall:,.0f}",
                f"{rate / run.floor_rate:.2f}x",
            )  # fmt: skip
    console.print(table)
    console.print(
        "own: the party's set-up (id check), hashing and blinding its ids, sorting them; theirs: "
        "blinding the other's set again; finish: matching and the commitment. ids/s/core: ids "
        "per CPU-second of the party (its workers' included). floor: ids/s/core at 2 bare "
        "X25519 exchanges per id, measured right before each size"
    )
    console.print(
        f"intersection sizes: {', '.join(f'{r.intersection:,}' for r in results.runs)}; "
        f"both sides aligned and committed to the same root in every run"
    )
    console.print(
        f"memory at {results.memory_ids:,} ids per side (both parties): peak resident set grew "
        f"by {results.memory_growth_mb:,.0f} MB "
        f"({results.memory_growth_mb * 2**20 / (2 * results.memory_ids):,.0f} bytes per id)"
    )
    print_verdicts(console, results.targets())
    console.print(run_line(results.seconds, results.load))


def _run_json(run: SizeRun) -> dict[str, Any]:
    return {
        "ids": run.ids,
        "workers": run.workers,
        "floorMicrosecondsPerExchange": run.floor_us,
        "floorIdsPerSecondPerCore": run.floor_rate,
        "intersection": run.intersection,
        **{
            name: {
                "cpuSecondsBySteps": party.steps,
                "wallSeconds": party.wall,
                "idsPerSecondPerCore": run.rate_per_core(party),
            }
            for name, party in (("guest", run.guest), ("host", run.host))
        },
    }


def print_json(results: Results) -> None:
    click.echo(
        json.dumps(
            {
                "runs": [_run_json(run) for run in results.runs],
                "memory": {"ids": results.memory_ids, "peakGrowthMB": results.memory_growth_mb},
                "targets": targets_json(results.targets()),
                "loadAverage": load_json(results.load),
            },
            indent=2,
        )
    )


@click.command()
@click.option(
    "--max-ids",
    type=click.IntRange(1_000),
    default=SIZES[-1],
    show_default=True,
    help="The largest size per side; 100000 skips the million.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Also run the smallest size with each party's blinding over this many processes "
    "(1: do not).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(max_ids: int, workers: int, as_json: bool) -> None:
    """Measure ECDH-PSI ids per second per core per party against the raw X25519 floor."""
    log = progress_log(quiet=as_json)
    finish(lambda: run_benchmark(max_ids, workers, log), as_json, print_json, print_tables)


if __name__ == "__main__":
    main()
