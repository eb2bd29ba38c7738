"""What every benchmark does with its results: the targets it checks, how it says whether they
held, and how it ends (tables for people or JSON for machines; exit 1 when a target is
missed, one error line and the error's exit code when the run itself failed)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

import click
from rich.console import Console

from consortium.errors import ConsortiumError


@dataclass(frozen=True)
class Target:
    """One of an issue's targets and what the run measured against it."""

    description: str
    measured: str | int  # an int (gas) is printed with thousands separators
    met: bool

    def verdict_line(self) -> str:
        """The PASS or FAIL line, in rich markup."""
        verdict = "[green]PASS[/green]" if self.met else "[red]FAIL[/red]"
        measured = f"{self.measured:,}" if isinstance(self.measured, int) else self.measured
        return f"{verdict} {self.description}: measured {measured}"


def print_verdicts(console: Console, targets: Iterable[Target]) -> None:
    """One PASS or FAIL line per target."""
    for target in targets:
        console.print(target.verdict_line())


def run_line(seconds: float, load: tuple[float, float]) -> str:
    """How long the run took and how loaded the machine was, the last line of every table."""
    return (
        f"measured in {seconds:.0f} s; 1-minute load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end, on {os.cpu_count()} CPUs"
    )


def targets_json(targets: Iterable[Target]) -> list[dict[str, object]]:
    return [{"description": t.description, "measured": t.measured, "met": t.met} for t in targets]


def load_json(load: tuple[float, float]) -> dict[str, object]:
    return {"start": load[0], "end": load[1], "cpus": os.cpu_count()}


class Measured(Protocol):
    def targets(self) -> list[Target]: ...


R = TypeVar("R", bound=Measured)


def progress_log(quiet: bool) -> Callable[[str], None]:
    """Where a benchmark says what it is doing: stderr, or nowhere when printing JSON."""
    return (lambda _: None) if quiet else (lambda text: click.echo(f"... {text}", err=True))


def finish(
    measure: Callable[[], R],
    as_json: bool,
    print_json: Callable[[R], None],
    print_tables: Callable[[R], None],
) -> NoReturn:
    """Runs ``measure``, prints its results, and exits 0 only when every target held."""
    try:
        results = measure()
    except ConsortiumError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    (print_json if as_json else print_tables)(results)
    sys.exit(0 if all(t.met for t in results.targets()) else 1)
