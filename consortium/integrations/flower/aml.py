"""The AML scenario as a Flower app: each bank a SuperNode running :data:`client_app`, the
institute's coordinator the ServerApp :data:`server_app`, the round engine and the ledger
beneath them as in ``consortium simulate aml``.

The run is one a ``simulate aml``-style set-up recorded in a directory on this machine
(``scenario.json``, every party's keys and store), on a node every process reaches:

- the ServerApp's run config names it: ``run-dir``, ``chain`` (the node's URL), ``depth`` (rounds
  in flight) and ``timeout`` (seconds a round waits for its replies);
- each SuperNode's node config names the bank it is: ``run-dir``, ``chain``, ``bank``.

The ServerApp runs (or finishes: the journal makes it resumable) the scenario's rounds, then
exports the audit bundle into ``run-dir``, for ``consortium audit``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from consortium.chain.backend import connect
from consortium.errors import UsageError
from consortium.integrations.flower.client import ledger_client_app
from consortium.integrations.flower.transport import GridTransport
from consortium.ledger.client import Ledger
from consortium.orchestration.engine import RoundResult
from consortium.orchestration.export import export_job
from consortium.protocol.fedavg.participant import Participant
from consortium.scenarios import aml


def _text(config: Mapping[str, object], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"the Flower config needs {key} as a quoted string, got {value!r}")
    return value


def _number(config: Mapping[str, object], key: str, *, whole: bool = False) -> float:
    value = config.get(key)
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if whole else "a positive number"
        raise UsageError(f"the Flower config needs {key} as {kind}, got {value!r}")
    return value


@contextmanager
def _bank(context: Context) -> Iterator[Participant]:
    """The bank this SuperNode is, for one message: its chain connection and journal are
    closed when the message is answered."""
    config = context.node_config
    chain = connect(_text(config, "chain"))
    try:
        run = aml.load(chain, Path(_text(config, "run-dir")))
        participant = aml.participant_for(chain, run, _text(config, "bank"))
        try:
            yield participant
        finally:
            participant.journal.close()
    finally:
        chain.close()


client_app = ledger_client_app(_bank)
server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Runs the scenario's rounds over ``grid`` and exports the job's bundle."""
    config = context.run_config
    out = Path(_text(config, "run-dir"))
    chain = connect(_text(config, "chain"))
    try:
        run = aml.load(chain, out)
        job = Ledger(chain, run.deployment).jobs.get(run.job_id)
        timeout = _number(config, "timeout")
        transport = GridTransport.discover(grid, job.participants, timeout=timeout, least=1)
        depth = int(_number(config, "depth", whole=True))
        coordinator = aml.coordinator_for(chain, run, transport, depth=depth)
        try:
            coordinator.run(run.settings.rounds, _report)
        finally:
            coordinator.journal.close()
        institute = run.institute
        export_job(
            Ledger(chain, run.deployment), run.job_id, institute.store,
            institute.journal_reader(), out,
        )  # fmt: skip
    finally:
        chain.close()


def _report(result: RoundResult) -> None:
    """One line per round in the ServerApp's log (``flwr log``)."""
    left_out = f"; left out: {', '.join(sorted(result.refused))}" if result.refused else ""
    print(
        f"round {result.round} anchored in block {result.anchor.block_number}, "
        f"{result.anchor.participant_count} participants{left_out}",
        flush=True,
    )
