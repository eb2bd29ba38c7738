"""``consortium audit``: verify a job from its audit bundle and the chain, as a regulator would.

``consortium audit BUNDLE`` (short for ``consortium audit verify BUNDLE``) runs every check of
:mod:`consortium.audit` and prints a table of checks per round and a verdict; it exits 0 when
everything holds, 1 when anything does not (or could not be checked), and 2 when the bundle
cannot be read at all (or the ``--report`` file cannot be written: refused before the
audit). Each round is printed as its results arrive (``--json``: one document, written a
result at a time), so that the command's memory, like the library's, does not grow with the
number of rounds. An error that stops the audit midway (the chain gone, say) ends the output
with a verdict of status "incomplete" that names the error (``--json``: a whole document
still), then exits with the error's own exit code and one-line message. ``--report FILE``
also writes the audit as a self-contained HTML page (:mod:`consortium.audit.report`) without
changing the verdict or the exit code. ``--disclosure FILE``, once per data party of a
hetero-lr/1 job, adds the ``consented-subjects`` check; without any, the output says that check
was not made. ``consortium audit model FILE_OR_DIGEST BUNDLE`` says whether a model is one that
a verified round produced, and which round.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from consortium.audit import (
    CHECK_NAMES,
    AuditBundle,
    CheckResult,
    Verdict,
    locate_model,
    model_digest_from,
    open_bundle,
    open_chain,
    verify_bundle,
)
from consortium.audit.disclosures import not_checked
from consortium.audit.report import AuditReport, check_report_path, write_report
from consortium.chain.base import Chain
from consortium.cli.context import CliContext, pass_context
from consortium.cli.output import WIDTH_WHEN_PIPED, emit_json
from consortium.cli.params import json_option
from consortium.errors import ConsortiumError
from consortium.ledger.values import address
from consortium.protocol.vertical.disclosure import read_disclosure

_CHAIN_HELP = (
    "JSON-RPC URL of the chain the job ran on [default: network.url of the configuration]."
)
_REPORT_HELP = (
    "Also write a self-contained HTML report to FILE: the checks per round, plots of the "
    "training metrics, gas and participants per round, and a timeline of membership and "
    "consent events beside the rounds. It does not change the verdict or the exit code."
)
_DISCLOSURE_HELP = (
    "What a data party of a hetero-lr/1 job discloses, as 'consortium disclose' writes it: its "
    "subject disclosure (with both parties' the consented-subjects check shows that every "
    "business the job trained on consented on both sides), or its weights of a round (the "
    "disclosed-weights check shows they are the ones the round's model commits to). Repeat it "
    "for each file."
)
_LEDGER_HELP = (
    "TrainingLedger address the auditor trusts; the manifest's must be the same "
    "[default: the manifest's, vouched for by the code and job checks]."
)


class _VerifyByDefault(click.Group):
    """A group whose first argument, unless it names a subcommand, is ``verify``'s: so that
    ``consortium audit BUNDLE`` works beside ``consortium audit model ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["verify", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_VerifyByDefault)
def audit() -> None:
    """Verify a training job from its audit bundle and the chain.

    `consortium audit BUNDLE` is short for `consortium audit verify BUNDLE`.
    """


def _chain(obj: CliContext, url: str | None) -> Chain:
    """The endpoint to audit against; the configuration is read only when no URL is given."""
    return open_chain(url or obj.config.network.url)


def _ledger(value: str | None) -> str | None:
    return None if value is None else address(value)


@audit.command("verify", short_help="Run every check of a job's bundle against the chain.")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--chain", "chain_url", metavar="URL", help=_CHAIN_HELP)
@click.option("--ledger", "ledger", metavar="ADDRESS", help=_LEDGER_HELP)
@click.option(
    "--disclosure",
    "disclosure_paths",
    metavar="FILE",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help=_DISCLOSURE_HELP,
)
@click.option(
    "--report",
    "report_path",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help=_REPORT_HELP,
)
@json_option
@pass_context
@click.pass_context
def verify(
    ctx: click.Context,
    obj: CliContext,
    bundle: Path,
    chain_url: str | None,
    ledger: str | None,
    disclosure_paths: tuple[Path, ...],
    report_path: Path | None,
    as_json: bool,
) -> None:
    """Run every check of the job in BUNDLE (a directory or .tar.gz) against the chain."""
    pinned = _ledger(ledger)
    disclosures = [read_disclosure(path) for path in disclosure_paths]
    if report_path is not None:
        check_report_path(report_path)  # a report that cannot be written fails before the audit
    verdict = Verdict()
    page: str | None = None
    with open_bundle(bundle) as opened:
        unchecked = not_checked(opened.protocol, disclosures)
        chain = _chain(obj, chain_url)
        try:
            report = None if report_path is None else AuditReport(opened, ledger=pinned)
            audit_results = verify_bundle(opened, chain, ledger=pinned, disclosures=disclosures)
            results = _counted(audit_results, verdict, report)
            trusted = pinned or opened.deployment.ledger
            if as_json:
                heading: dict[str, Any] = {
                    "bundle": str(bundle),
                    "jobId": opened.job.id,
                    "chainId": opened.chain_id,
                    "ledger": trusted,
                }
                if disclosure_paths:
                    heading["disclosures"] = [str(path) for path in disclosure_paths]
                if unchecked:
                    heading["notChecked"] = unchecked
                _print_json(heading, _stopping(results, verdict, _close_json), verdict)
            else:
                title = f"audit of job {opened.job.id} on chain {opened.chain_id}, ledger {trusted}"
                printing = _stopping(results, verdict, lambda v: click.echo(v.describe()))
                _print_table(title, printing, _widths(opened))
                for check, reason in unchecked.items():
                    click.echo(f"{check}: {reason}")
                click.echo(verdict.describe())
            if report is not None:
                page = _render(report, chain)
        finally:
            chain.close()
    if report_path is not None and page is not None:
        try:
            write_report(report_path, page)
        except OSError as exc:
            # The verdict stands whatever happens to the report: say so, keep its exit code.
            click.echo(f"error: cannot write the report to {report_path}: {exc}", err=True)
    ctx.exit(verdict.exit_code)


def _counted(
    results: Iterable[CheckResult], verdict: Verdict, report: AuditReport | None
) -> Iterator[CheckResult]:
    """``results`` as they come, each counted into ``verdict`` (and ``report``) on its way to
    the output, so that nothing needs them all at once."""
    for result in results:
        verdict.add(result)
        if report is not None:
            report.add(result)
        yield result


def _stopping(
    results: Iterable[CheckResult], verdict: Verdict, conclude: Callable[[Verdict], None]
) -> Iterator[CheckResult]:
    """``results``; if an error ends them early (the chain gone, say), ``verdict`` is stopped
    with its reason and handed to ``conclude`` before the error goes on to its one-line
    message and exit code: the output printed so far still ends with a verdict, and the JSON
    document stays whole."""
    try:
        yield from results
    except ConsortiumError as exc:
        verdict.stop(str(exc))
        conclude(verdict)
        raise


def _render(report: AuditReport, chain: Chain) -> str | None:
    """The report's page, rendered while the bundle and the chain are still open (it reads
    both); None, with a one-line error, if it cannot be made. Deliberately broad: whatever
    goes wrong in a plot or a log scan, the verdict already reached must still be printed
    and must still decide the exit code."""
    try:
        return report.render(chain)
    except Exception as exc:
        click.echo(f"error: the report could not be generated: {exc}", err=True)
        return None


@audit.command("model", short_help="Tell which verified round produced a model.")
@click.argument("model", metavar="FILE_OR_DIGEST")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--chain", "chain_url", metavar="URL", help=_CHAIN_HELP)
@click.option("--ledger", "ledger", metavar="ADDRESS", help=_LEDGER_HELP)
@json_option
@pass_context
@click.pass_context
def model_command(
    ctx: click.Context,
    obj: CliContext,
    model: str,
    bundle: Path,
    chain_url: str | None,
    ledger: str | None,
    as_json: bool,
) -> None:
    """Tell whether a model (its digest, its manifest file or an .npz of its tensors) is one
    that a verified round of the job in BUNDLE produced, and which round."""
    digest = model_digest_from(model)
    pinned = _ledger(ledger)
    with open_bundle(bundle) as opened:
        chain = _chain(obj, chain_url)
        try:
            provenance, problems = locate_model(opened, chain, digest, ledger=pinned)
        finally:
            chain.close()
    if as_json:
        emit_json({**provenance.to_json(), "problems": [p.to_json() for p in problems]})
    else:
        click.echo(provenance.message)
        if provenance.round is not None and not provenance.verified:
            for problem in problems[:10]:
                click.echo(f"  {problem.status}: {problem.name}: {problem.message}")
            if len(problems) > 10:
                click.echo(f"  ... and {len(problems) - 10} more")
    ctx.exit(0 if provenance.verified else 1)


# ------------------------------------------------------------------------------ the JSON


def _print_json(heading: dict[str, Any], results: Iterable[CheckResult], verdict: Verdict) -> None:
    """The document ``emit_json`` would print for ``heading`` plus ``results`` and
    ``verdict``, written a result at a time: a list of every result would grow with the
    rounds. ``verdict`` counts the results as they pass, so it comes last, once they are
    all out."""
    opening = json.dumps(heading, indent=2).removesuffix("\n}")
    click.echo(opening + ',\n  "results": [', nl=False)
    separator = "\n"
    for result in results:
        click.echo(separator + "    " + _nested_json(result.to_json(), 2), nl=False)
        separator = ",\n"
    _close_json(verdict)


def _close_json(verdict: Verdict) -> None:
    """The end of the document ``_print_json`` writes: the results' list closed, the verdict."""
    click.echo('\n  ],\n  "verdict": ' + _nested_json(verdict.to_json(), 1) + "\n}")


def _nested_json(value: dict[str, Any], depth: int) -> str:
    """``value`` as indented JSON for a place ``depth`` levels deep in a document."""
    return json.dumps(value, indent=2).replace("\n", "\n" + "  " * depth)


# ------------------------------------------------------------------------------ the table

_COLUMNS = ("round", "check", "result", "detail")
Widths = tuple[int, int, int]
"""The least widths of the round, check and result columns (the detail takes the rest)."""


def _print_table(title: str, results: Iterable[CheckResult], widths: Widths) -> None:
    """One row per check and round (subjects summed up), plus one row per failure, printed
    a round at a time as the results arrive: one table holding every row would grow with the
    rounds. Each round is a table of its own without a heading or outer edges, its columns
    ``widths`` wide, so that together they read as one table under the heading.
    """
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, WIDTH_WHEN_PIPED)
    console.print(Text(title, "table.title"))  # not the heading's: its width would wrap it
    console.print(_table(widths))
    for rows in _rows_by_round(results):
        table = _table(widths, show_header=False)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def _table(widths: Widths, **options: Any) -> Table:
    """An empty table of the audit's columns, the first three at least ``widths`` wide.

    Cells are :class:`Text`, not markup: messages quote lists and reasons in brackets that
    rich would otherwise read as style tags.
    """
    table = Table(box=box.HEAVY_HEAD, show_edge=False, **options)
    for column, minimum in zip(_COLUMNS, (*widths, None), strict=True):
        table.add_column(column, overflow="fold", min_width=minimum)
    return table


def _widths(bundle: AuditBundle) -> Widths:
    """The widths of the round, check and result columns that every round of ``bundle``
    fits, a damaged one aside: its round numbers, the check names, and the counts of the
    check with the most subjects in a round (membership of the job's parties, or consent
    of its datasets)."""
    job = bundle.job
    subjects = max(len(job.participants) + 2, len(job.datasets))
    return (
        max(len("round"), len(str(len(bundle)))),
        max(len(name) for name in CHECK_NAMES),
        len(f"unverifiable {subjects}/{subjects}"),
    )


def _rows_by_round(results: Iterable[CheckResult]) -> Iterator[list[tuple[Text, ...]]]:
    """The rows of each round in turn (results arrive round by round), one per check in the
    order the check first appears in that round, whatever the order of its subjects."""
    for round_number, in_round in groupby(results, key=lambda r: r.round):
        by_check: dict[str, list[CheckResult]] = {}
        for result in in_round:
            by_check.setdefault(result.name, []).append(result)
        where = "job" if round_number is None else str(round_number)
        rows: list[tuple[Text, ...]] = []
        for name, members in by_check.items():
            rows.extend(_check_rows(where, name, members))
        yield rows


def _check_rows(where: str, name: str, members: list[CheckResult]) -> Iterable[tuple[Text, ...]]:
    bad = [r for r in members if not r.ok]
    if not bad:
        detail = _detail(members[0]) if len(members) == 1 else f"{len(members)} subjects"
        summary = Text(f"pass {len(members)}/{len(members)}", "green")
        yield Text(where), Text(name), summary, Text(detail)
        return
    status = "unverifiable" if all(r.unverifiable for r in bad) else "FAIL"
    style = "yellow" if status == "unverifiable" else "bold red"
    summary = Text(f"{status} {len(bad)}/{len(members)}", style)
    yield Text(where), Text(name), summary, Text(_detail(bad[0]))
    for extra in bad[1:]:
        yield Text(""), Text(""), Text(""), Text(_detail(extra))


def _detail(result: CheckResult) -> str:
    """The message without the ``job J, round R`` prefix the row already shows (the
    participant, when there is one, stays)."""
    prefix, _, rest = result.message.partition(": ")
    participant = f"{result.participant}: " if result.participant else ""
    return participant + rest if rest else prefix
