"""``consortium audit BUNDLE --report audit.html``: the audit as one self-contained HTML page.

The page is for a regulator's file: it must open anywhere, years later, offline, and must not
be a way for the audited party to attack its reader. So it is one file with inline CSS and
the plots embedded as PNG data URIs, a Content-Security-Policy that forbids scripts and any
fetch, and every string that comes from the bundle or the chain (messages quote both)
HTML-escaped: a bundle is evidence handed over by the party being audited.

The report is built beside the audit, not by re-running it: :meth:`AuditReport.add` sees each
streamed :class:`CheckResult` and keeps small per-round tallies (and a capped number of
failure messages), so memory grows with the rounds only by those records. What the checks
do not produce (training metrics, gas, the event timeline) is read afterwards, one round at
a time, from the bundle's verified objects and from the chain (see
:mod:`consortium.audit.timeline`). None of it feeds the verdict: the report describes the
audit, it never changes it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consortium.audit.bundle import AuditBundle, RoundLine, parse_json
from consortium.audit.chainview import ChainView
from consortium.audit.results import FAIL, PASS, UNVERIFIABLE, CheckResult, Tally, Verdict
from consortium.audit.timeline import (
    CHAIN_ERRORS,
    LOG_CHUNK,
    AnchorGas,
    ChainEvent,
    TimelineReader,
    anchor_gas,
    deployed_at,
    first_line,
)
from consortium.chain.base import Chain
from consortium.errors import ConsortiumError, UsageError
from consortium.files import write_text_atomically
from consortium.ledger.values import address

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PROBLEMS_PER_ROUND = 20
"""Failure messages kept per round; the rest are counted (``--json`` lists them all). A
bundle damaged everywhere must not make the report, or its memory, explode."""

_STATUS_COLOURS = {PASS: "#2e7d32", FAIL: "#c62828", UNVERIFIABLE: "#f9a825"}
_EMPTY_CELL = '<td class="na"></td>'
_KIND_ROWS = {"membership": 2, "consent": 1, "job": 0}


# ------------------------------------------------------------------------------ collecting


@dataclass
class CheckTally(Tally):
    """How one check fared for the subjects of one round (or of the job)."""

    @property
    def status(self) -> str:
        """A failure outranks an undecided subject, which outranks passes."""
        if self.failed:
            return FAIL
        return UNVERIFIABLE if self.unverifiable else PASS


@dataclass
class ScopeChecks:
    """The checks of one round (``round`` None: of the job as a whole), as the table needs
    them: a tally per check in order of first appearance and the first failure messages."""

    round: int | None
    tallies: dict[str, CheckTally] = field(default_factory=dict)
    problems: list[CheckResult] = field(default_factory=list)
    omitted: int = 0

    def add(self, result: CheckResult) -> None:
        self.tallies.setdefault(result.name, CheckTally()).count(result)
        if not result.ok:
            if len(self.problems) < MAX_PROBLEMS_PER_ROUND:
                self.problems.append(result)
            else:
                self.omitted += 1

    @property
    def status(self) -> str:
        statuses = {t.status for t in self.tallies.values()}
        if FAIL in statuses:
            return FAIL
        return UNVERIFIABLE if UNVERIFIABLE in statuses else PASS


@dataclass(frozen=True)
class RoundFacts:
    """What the plots show for one bundled round: metrics from the bundle's round metrics
    object (read through the hash-verified store), the anchored participant count, and the
    gas of the anchoring transaction as the chain's receipt has it."""

    position: int
    round: int
    log_loss: float | None = None
    roc_auc: float | None = None
    participants: int | None = None
    refused: tuple[tuple[str, str], ...] = ()
    gas: AnchorGas | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timeline:
    """The events of the scanned block range, or why there are none."""

    events: tuple[ChainEvent, ...] = ()
    start: int | None = None
    end: int | None = None
    queries: int = 0
    notes: tuple[str, ...] = ()


class AuditReport:
    """Collects an audit's streamed results and renders them, with metrics, gas and the
    event timeline, as a self-contained HTML page.

    Feed every result through :meth:`add` (it returns the result, so it can sit inside a
    comprehension beside :meth:`Verdict.add`), then call :meth:`render` while the chain is
    still open.
    """

    def __init__(self, bundle: AuditBundle, *, ledger: str | None = None) -> None:
        self.bundle = bundle
        self.ledger = address(ledger) if ledger is not None else bundle.deployment.ledger
        self.verdict = Verdict()
        self.job = ScopeChecks(None)
        self.rounds: dict[int, ScopeChecks] = {}
        self.round_checks: list[str] = []  # round-level check names, first appearance first

    def add(self, result: CheckResult) -> CheckResult:
        """Counts ``result`` into its round's tallies and returns it unchanged."""
        self.verdict.add(result)
        if result.round is None:
            self.job.add(result)
            return result
        if result.name not in self.round_checks:
            self.round_checks.append(result.name)
        scope = self.rounds.get(result.round)
        if scope is None:
            scope = self.rounds[result.round] = ScopeChecks(result.round)
        scope.add(result)
        return result

    def _job_check_held(self, name: str) -> bool:
        tally = self.job.tallies.get(name)
        return tally is not None and tally.status == PASS

    def round_status(self, number: int) -> str | None:
        scope = self.rounds.get(number)
        return None if scope is None else scope.status

    # ------------------------------------------------------------------ reading

    def round_facts(self, chain: Chain | None) -> list[RoundFacts]:
        """One record per bundled round, in bundle order; ``chain`` None skips the gas."""
        return [self._facts(line, chain) for line in self.bundle.rounds()]

    def _facts(self, line: RoundLine, chain: Chain | None) -> RoundFacts:
        try:
            entry = line.entry()
        except UsageError as exc:
            return RoundFacts(line.position, line.claimed_round, notes=(f"malformed entry: {exc}",))
        notes: list[str] = []
        log_loss = roc_auc = None
        try:
            metrics = parse_json(self.bundle.objects.get(entry.anchor.metrics_digest))
            validation = metrics.get("validation") if isinstance(metrics, dict) else None
            if isinstance(validation, dict):
                log_loss = _number(validation.get("log_loss"))
                roc_auc = _number(validation.get("roc_auc"))
            if log_loss is None or roc_auc is None:
                notes.append("the round metrics lack validation.log_loss or validation.roc_auc")
        except (ConsortiumError, ValueError) as exc:
            notes.append(f"no round metrics: {exc}")
        gas = None
        if chain is not None:
            try:
                gas = anchor_gas(chain, entry.transaction)
                if gas is None:
                    notes.append(f"the chain knows no transaction {entry.transaction}")
            except CHAIN_ERRORS as exc:
                notes.append(f"cannot read the receipt of {entry.transaction}: {first_line(exc)}")
        return RoundFacts(
            position=line.position,
            round=entry.round,
            log_loss=log_loss,
            roc_auc=roc_auc,
            participants=entry.anchor.participant_count,
            refused=tuple(sorted(entry.refused.items())),
            gas=gas,
            notes=tuple(notes),
        )

    def timeline(
        self, chain: Chain, facts: Sequence[RoundFacts], chunk: int = LOG_CHUNK
    ) -> Timeline:
        """Membership, consent and job events from the deployment block to the last
        anchoring block, read in ranges of ``chunk`` blocks from the trusted contracts."""
        view = ChainView(chain, self.ledger, self.bundle.deployment)
        if not view.linked:
            return Timeline(notes=(f"no TrainingLedger answers at {self.ledger}",))
        notes: list[str] = []
        created: int | None = None
        # The chain's own last anchoring block ends the scan; the receipts of the bundle's
        # transactions stand in when the ledger does not know the job.
        ends = [f.gas.block_number for f in facts if f.gas is not None]
        try:
            job = view.job(self.bundle.job.id)
            created = job.created_block
            if job.last_anchor_block:
                ends = [job.last_anchor_block]
        except CHAIN_ERRORS as exc:
            notes.append(f"the ledger has no job {self.bundle.job.id}: {first_line(exc)}")
        if not ends:
            return Timeline(notes=(*notes, "no round of the job is anchored on chain"))
        end = max(ends)
        start = self.bundle.deployment.block_number
        registry = view.deployment.registry
        # The manifest's deployment block is the bundle's word: it must be where the trusted
        # registry appeared (when the node can tell) and cannot be after the job's creation.
        confirmed = deployed_at(chain, registry, start)
        if confirmed is False or (created is not None and start > created):
            fallback, where = (
                (created, "where the job was created")
                if created is not None
                else (min(ends), "the first anchoring block")
            )
            notes.append(
                f"the manifest's deployment block {start} is not where registry {registry} "
                f"was deployed: the timeline starts at block {fallback}, {where} (earlier "
                "membership events are not shown)"
            )
            start = fallback
        elif confirmed is None:
            notes.append(
                f"the node cannot confirm that registry {registry} was deployed in block "
                f"{start}, as the manifest says; the timeline starts there"
            )
        if start > end:
            return Timeline(start=start, end=end, notes=(*notes, "empty block range"))
        reader = TimelineReader(
            chain,
            registry=view.ledger.registry,
            consents=view.ledger.consent_registry,
            ledger=view.training,
            job_id=self.bundle.job.id,
            datasets=self.bundle.job.datasets,
            chunk=chunk,
        )
        events = reader.read(start, end)
        return Timeline(tuple(events), start, end, reader.queries, tuple(notes))

    # ------------------------------------------------------------------ rendering

    def render(
        self,
        chain: Chain | None,
        *,
        generated_at: datetime | None = None,
        chunk: int = LOG_CHUNK,
    ) -> str:
        """The whole page. ``chain`` None (or an endpoint the chain check rejected) leaves
        out what only the chain can tell: gas and the timeline."""
        generated = (generated_at or datetime.now(UTC)).astimezone(UTC)
        notes: list[str] = []
        usable = chain if chain is not None and self._job_check_held("chain") else None
        if chain is not None and usable is None:
            notes.append("the endpoint is not the job's chain: gas and events are not shown")
        facts = self.round_facts(usable)
        timeline = Timeline()
        if usable is not None and not self._job_check_held("code"):
            timeline = Timeline(
                notes=("the contracts are not the committed ones: their events prove nothing",)
            )
        elif usable is not None:
            try:
                timeline = self.timeline(usable, facts, chunk)
            except CHAIN_ERRORS as exc:
                timeline = Timeline(notes=(f"the events could not be read: {first_line(exc)}",))
        stamps = _timestamps(usable, timeline.events) if usable is not None else {}
        parts = [
            self._header(generated, notes),
            self._job_table(),
            self._round_table(facts),
            self._plots(facts, timeline),
            self._timeline_table(timeline, stamps),
            _FOOTER,
        ]
        title = f"Audit of job {self.bundle.job.id}"
        return _PAGE.format(title=_e(title), css=_CSS, body="\n".join(parts))

    def _header(self, generated: datetime, notes: list[str]) -> str:
        bundle, job = self.bundle, self.bundle.job
        verdict = self.verdict
        rows = [
            ("job", str(job.id)),
            ("purpose", job.purpose),
            ("chain id", str(bundle.chain_id)),
            ("ledger", self.ledger),
            ("coordinator", job.coordinator),
            ("consumer", job.consumer),
            ("participants", ", ".join(job.participants)),
            ("datasets", ", ".join(str(d) for d in job.datasets)),
            ("rounds in the bundle", str(len(bundle))),
            ("bundle", str(bundle.path)),
            ("generated at", generated.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ]
        facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
        counts = (
            f'<span class="count pass">{verdict.passed} passed</span> '
            f'<span class="count fail">{verdict.failed} failed</span> '
            f'<span class="count unverifiable">{verdict.unverifiable} unverifiable</span>'
        )
        return (
            f"<header><h1>Audit of job {_e(job.id)} on chain {_e(bundle.chain_id)}</h1>"
            f'<p class="verdict {verdict.status}" id="verdict">{_e(verdict.describe())}</p>'
            f"<p>{counts}</p><dl>{facts}</dl>{_notes(notes)}</header>"
        )

    def _job_table(self) -> str:
        rows = []
        problems: dict[str, list[CheckResult]] = {}
        for problem in self.job.problems:
            problems.setdefault(problem.name, []).append(problem)
        for name, tally in self.job.tallies.items():
            rows.append(
                f'<tr class="{tally.status}"><td>{_e(name)}</td>{_cell(name, tally)}'
                f"<td>{_problems(problems.get(name, []), 0)}</td></tr>"
            )
        if self.job.omitted:
            rows.append(f'<tr><td colspan="3">... and {self.job.omitted} more</td></tr>')
        return (
            '<section id="job-checks"><h2>Checks of the job</h2>'
            '<table class="checks"><thead><tr><th>check</th><th>result</th><th>failures</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
        )

    def _round_table(self, facts: Sequence[RoundFacts]) -> str:
        by_round: dict[int, RoundFacts] = {}
        for fact in facts:
            by_round.setdefault(fact.round, fact)
        head = "".join(f'<th class="check"><span>{_e(n)}</span></th>' for n in self.round_checks)
        rows = []
        for number, scope in self.rounds.items():
            cells = "".join(
                _cell(name, scope.tallies[name]) if name in scope.tallies else _EMPTY_CELL
                for name in self.round_checks
            )
            fact = by_round.get(number)
            rows.append(
                f'<tr class="round {scope.status}" data-round="{_e(number)}" '
                f'id="round-{_e(number)}"><th>{_e(number)}</th>'
                f'<td class="status">{_e(scope.status)}</td>{cells}'
                f"<td>{_participants(fact)}</td>"
                f'<td class="problems">{_problems(scope.problems, scope.omitted)}</td></tr>'
            )
        if not rows:
            rows.append(f'<tr><td colspan="{len(self.round_checks) + 4}">no rounds</td></tr>')
        return (
            '<section id="rounds"><h2>Checks per round</h2>'
            "<p>One row per round; a cell counts the subjects (participants, records, datasets) "
            "of one check. Hover a cell for its counts.</p>"
            '<div class="scroll"><table class="rounds"><thead><tr><th>round</th><th>result</th>'
            f"{head}<th>participants</th><th>failures</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>"
        )

    def _plots(self, facts: Sequence[RoundFacts], timeline: Timeline) -> str:
        figures = []
        status = self.round_status
        metrics = [f for f in facts if f.log_loss is not None or f.roc_auc is not None]
        if metrics:
            figures.append(
                _figure(
                    _metrics_plot(metrics, status),
                    "Validation log loss and ROC AUC of each round's global model",
                    "From each round's metrics object in the bundle; a red x marks a round "
                    "whose checks did not all hold.",
                )
            )
        gas = [f for f in facts if f.gas is not None]
        if gas:
            figures.append(
                _figure(
                    _gas_plot(gas, status),
                    "Gas used by each round's anchoring transaction",
                    "gasUsed of the receipt of the manifest's transaction, read from the chain; "
                    "bars coloured by the round's audit result.",
                )
            )
        counted = [f for f in facts if f.participants is not None]
        if counted:
            figures.append(
                _figure(
                    _participants_plot(counted),
                    "Participants per round",
                    "Updates in the anchored round, and participants the coordinator left out "
                    "(the manifest's refused list).",
                )
            )
        if timeline.events:
            figures.append(
                _figure(
                    _timeline_plot(timeline.events, status),
                    "Membership and consent events beside the anchored rounds",
                    "Vertical lines are RoundAnchored blocks, coloured by the round's result.",
                )
            )
        notes = [f"round {f.round}: {n}" for f in facts for n in f.notes]
        body = "".join(figures) or "<p>No plottable data.</p>"
        return f'<section id="plots"><h2>Per-round plots</h2>{body}{_notes(notes)}</section>'

    def _timeline_table(self, timeline: Timeline, stamps: dict[int, int]) -> str:
        rows = []
        for event in timeline.events:
            result = ""
            status = None
            if event.round is not None:
                status = self.round_status(event.round)
                result = (
                    f'<a href="#round-{_e(event.round)}">{_e(status)}</a>'
                    if status
                    else "not in the bundle"
                )
            stamp = stamps.get(event.block)
            when = (
                ""
                if stamp is None
                else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
            )
            css = f"{event.kind} {status or ''}".strip()
            rows.append(
                f'<tr class="event {_e(css)}" data-block="{event.block}" '
                f'data-event="{_e(event.name)}">'
                f"<td>{event.block}</td><td>{_e(when)}</td><td>{_e(event.kind)}</td>"
                f"<td>{_e(event.name)}</td><td>{_e(event.detail)}</td><td>{result}</td>"
                f'<td class="tx">{_e(event.transaction)}</td></tr>'
            )
        scanned = (
            f"<p>Blocks {timeline.start} to {timeline.end}, read in {timeline.queries} bounded "
            "<code>eth_getLogs</code> queries from the registries bound to the trusted ledger "
            "(consent events of the job's datasets only) and the ledger's events of this job.</p>"
            if timeline.start is not None and timeline.end is not None
            else ""
        )
        table = (
            '<table class="timeline"><thead><tr><th>block</th><th>time (UTC)</th><th>kind</th>'
            "<th>event</th><th>detail</th><th>round result</th><th>transaction</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            if rows
            else "<p>No events to show.</p>"
        )
        return (
            '<section id="timeline"><h2>Timeline of membership, consent and rounds</h2>'
            f"{scanned}{_notes(list(timeline.notes))}{table}</section>"
        )


# ------------------------------------------------------------------------------ writing


def check_report_path(path: Path) -> None:
    """Refuses, before any audit work, a report path that cannot be written.

    The nearest existing directory on the way to ``path`` must accept a new file (tried for
    real: permission bits do not tell the whole story, e.g. read-only mounts); missing
    directories below it are created when the report is written.

    Raises:
        UsageError: naming the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"cannot write the report to {path}: it is a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write the report to {path}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".consortium-report-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot write the report to {path}: {reason}") from None


def write_report(path: Path, page: str) -> None:
    """Writes the page atomically: a reader never sees half a report, and a failed write
    leaves any previous report in place."""
    write_text_atomically(Path(path), page, mode=0o644)


# ------------------------------------------------------------------------------ plots


def _new_figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg without pyplot: no global state, no GUI backend, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> str:
    """The figure as a ``data:`` URI; the PNG carries no metadata (no links, no versions)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(figure: Figure, title: str, caption: str) -> str:
    return (
        f'<figure><img src="{_png(figure)}" alt="{_e(title)}">'
        f"<figcaption><b>{_e(title)}.</b> {_e(caption)}</figcaption></figure>"
    )


def _round_axis(axes: Any, *, integer_y: bool = False) -> None:
    """Rounds (and counts) are whole numbers: no 1.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    axes.set_axisbelow(True)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if integer_y:
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round")
    axes.grid(alpha=0.3)


def _metrics_plot(facts: Sequence[RoundFacts], status: Callable[[int], str | None]) -> Figure:
    figure = _new_figure(9, 3.2)
    for axes, label, values in (
        (figure.add_subplot(1, 2, 1), "validation log loss", [f.log_loss for f in facts]),
        (figure.add_subplot(1, 2, 2), "validation ROC AUC", [f.roc_auc for f in facts]),
    ):
        points = [(f.round, v) for f, v in zip(facts, values, strict=True) if v is not None]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="#1565c0")
        bad = [(r, v) for r, v in points if status(r) not in (PASS, None)]
        if bad:
            axes.scatter(
                [b[0] for b in bad], [b[1] for b in bad], marker="x", s=80, color="#c62828",
                zorder=3, label="checks did not hold",
            )  # fmt: skip
            axes.legend(loc="best", fontsize="small")
        axes.set_ylabel(label)
        _round_axis(axes)
    return figure


def _gas_plot(facts: Sequence[RoundFacts], status: Callable[[int], str | None]) -> Figure:
    figure = _new_figure(9, 3)
    axes = figure.add_subplot(1, 1, 1)
    colours = [_STATUS_COLOURS.get(status(f.round) or PASS, "#777777") for f in facts]
    axes.bar(
        [f.round for f in facts],
        [f.gas.gas_used if f.gas else 0 for f in facts],
        color=colours,
        width=0.8 if len(facts) < 200 else 1.0,
    )
    axes.set_ylabel("gas used")
    _round_axis(axes)
    return figure


def _participants_plot(facts: Sequence[RoundFacts]) -> Figure:
    figure = _new_figure(9, 3)
    axes = figure.add_subplot(1, 1, 1)
    rounds = [f.round for f in facts]
    accepted = [f.participants or 0 for f in facts]
    refused = [len(f.refused) for f in facts]
    axes.bar(rounds, accepted, color="#1565c0", label="in the round")
    if any(refused):
        axes.bar(rounds, refused, bottom=accepted, color="#ef6c00", label="left out")
        axes.legend(loc="upper left", fontsize="small", ncols=2)
    top = max(a + r for a, r in zip(accepted, refused, strict=True))
    axes.set_ylim(0, max(top, 1) * 1.3)  # head room for the legend
    axes.set_ylabel("participants")
    _round_axis(axes, integer_y=True)
    return figure


def _timeline_plot(events: Sequence[ChainEvent], status: Callable[[int], str | None]) -> Figure:
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(9, 2.6)
    axes = figure.add_subplot(1, 1, 1)
    anchors = [e for e in events if e.name == "RoundAnchored" and e.round is not None]
    for event in anchors:
        colour = _STATUS_COLOURS.get(status(event.round or 0) or "", "#777777")
        axes.axvline(event.block, color=colour, alpha=0.6, linewidth=1)
        if len(anchors) <= 30:
            axes.text(event.block, 2.55, str(event.round), ha="center", va="bottom", fontsize=7)
    others = [e for e in events if e.name != "RoundAnchored"]
    for kind, colour in (("membership", "#6a1b9a"), ("consent", "#00838f"), ("job", "#37474f")):
        chosen = [e for e in others if e.kind == kind]
        axes.scatter(
            [e.block for e in chosen], [_KIND_ROWS[kind]] * len(chosen), color=colour,
            marker="D", s=30, zorder=3,
        )  # fmt: skip
    axes.set_yticks(list(_KIND_ROWS.values()), list(_KIND_ROWS))
    axes.set_ylim(-0.7, 2.9)
    axes.margins(x=0.03)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("block (numbers above the lines: anchored rounds)")
    axes.grid(axis="x", alpha=0.3)
    return figure


# ------------------------------------------------------------------------------ HTML bits


def _e(value: object) -> str:
    """HTML-escapes anything for text and attribute values alike (quotes included)."""
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    """A finite JSON number, else None (bool is an int to Python, not a metric)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _cell(name: str, tally: CheckTally) -> str:
    status = tally.status
    total = tally.total
    if status == PASS:
        text = "&#10003;" if total == 1 else f"&#10003; {total}"
    elif status == FAIL:
        text = f"&#10007; {tally.failed}/{total}"
    else:
        text = f"? {tally.unverifiable}/{total}"
    hover = (
        f"{name}: {tally.passed} passed, {tally.failed} failed, {tally.unverifiable} unverifiable"
    )
    return f'<td class="cell {status}" title="{_e(hover)}">{text}</td>'


def _problems(problems: Iterable[CheckResult], omitted: int) -> str:
    items = [
        f'<li class="{p.status}"><b>{_e(p.status)} {_e(p.name)}</b> {_e(_detail(p))}</li>'
        for p in problems
    ]
    if omitted:
        items.append(f"<li>... and {omitted} more (see <code>--json</code>)</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _detail(result: CheckResult) -> str:
    """The message without the ``job J, round R`` prefix its row already shows."""
    prefix, _, rest = result.message.partition(": ")
    participant = f"{result.participant}: " if result.participant else ""
    return participant + rest if rest else prefix


def _participants(fact: RoundFacts | None) -> str:
    if fact is None or fact.participants is None:
        return ""
    text = f"{fact.participants} in the round"
    if not fact.refused:
        return _e(text)
    reasons = "".join(f"<li>{_e(who)}: {_e(why)}</li>" for who, why in fact.refused)
    return f"{_e(text)}, {len(fact.refused)} left out:<ul>{reasons}</ul>"


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def _timestamps(chain: Chain, events: Iterable[ChainEvent]) -> dict[int, int]:
    """Block timestamps of the events' blocks, one read per distinct block; a node that
    cannot serve one leaves that time blank."""
    stamps: dict[int, int] = {}
    for block in sorted({e.block for e in events}):
        with contextlib.suppress(*CHAIN_ERRORS):
            stamps[block] = int(chain.w3.eth.get_block(block)["timestamp"])
    return stamps


_FOOTER = (
    "<footer><p>Generated by <code>consortium audit --report</code>. Results are the "
    "auditor's own: every digest was recomputed from the bundle's bytes and every claim about "
    "the chain read back from it. Metrics and refusal reasons are the bundle's own statements, "
    "shown for context; the checks above say whether the objects holding them are the ones the "
    "chain anchored.</p></footer>"
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" \
content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #212121; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; }
dt { font-weight: 600; } dd { margin: 0; font-family: monospace; word-break: break-all; }
.verdict { font-size: 1.2em; font-weight: 700; padding: 0.5em 0.8em; border-radius: 4px; }
.verdict.pass { background: #e8f5e9; color: #1b5e20; }
.verdict.fail { background: #ffebee; color: #b71c1c; }
.verdict.unverifiable { background: #fff8e1; color: #8d6e00; }
.count { margin-right: 1em; } .count.pass { color: #2e7d32; }
.count.fail { color: #c62828; } .count.unverifiable { color: #8d6e00; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.45em; vertical-align: top; }
thead th { background: #f5f5f5; }
th.check { height: 9em; vertical-align: bottom; }
th.check span { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
td.cell { text-align: center; white-space: nowrap; }
td.cell.pass { color: #2e7d32; }
td.cell.fail { background: #c62828; color: #fff; font-weight: 700; }
td.cell.unverifiable { background: #f9a825; }
tr.fail > th, tr.fail > td.status { background: #ffcdd2; color: #b71c1c; font-weight: 700; }
tr.unverifiable > th, tr.unverifiable > td.status { background: #fff8e1; }
tr.round.fail { outline: 2px solid #c62828; }
td.problems { min-width: 24em; } td.problems ul, td ul { margin: 0; padding-left: 1.1em; }
li.fail { color: #b71c1c; } li.unverifiable { color: #8d6e00; }
td.tx { font-family: monospace; font-size: 0.85em; word-break: break-all; }
tr.event.job { background: #eceff1; } tr.event.job.fail { background: #ffcdd2; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.notes { color: #5d4037; }
footer { margin-top: 2em; color: #616161; font-size: 0.9em; }
"""


__all__ = [
    "MAX_PROBLEMS_PER_ROUND",
    "AuditReport",
    "CheckTally",
    "RoundFacts",
    "ScopeChecks",
    "Timeline",
    "check_report_path",
    "write_report",
]
