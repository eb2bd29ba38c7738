"""Crash and resume of the vertical job: ``consortium simulate sme-credit`` killed by SIGKILL at
each of the round engine's crash points, then resumed with ``--resume`` on the same node.

After the resume every epoch is anchored once, the audit passes, and the job ends where an
uninterrupted job ends: its losses, epoch by epoch, are those of the very descent run in the
clear on the run's own aligned tables (the encrypted arithmetic changes nothing but fixed-point
rounding, so a redone epoch computes what the lost attempt would have). The reference is the
clear descent rather than another run because the rows' shared order follows the PSI's tokens,
which differ between deployments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ANVIL_CHAIN_ID, start_anvil

from consortium.chain.anvil import AnvilNode
from consortium.chain.rpc import RpcChain
from consortium.faults import KILL_AT_ENV
from consortium.fl.block_lr import TAYLOR, fit
from consortium.ledger.client import Ledger
from consortium.scenarios import sme_credit

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

CONSORTIUM = Path(sys.executable).parent / "consortium"
SMALL = ["--businesses", "800", "--key-bits", "1024", "--max-rounds", "4", "--batch-size", "128"]
CRASH_ROUND = 2


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    node = start_anvil(tmp_path_factory.mktemp("vertical-node"))
    yield node
    node.stop()


def simulate(
    node: AnvilNode, out: Path, *, resume: bool = False, kill_at: str | None = None, depth: int = 1
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    args = [str(CONSORTIUM), "simulate", "sme-credit", "--chain", node.url, "--out", str(out)]
    args += ["--json", "--pipeline-depth", str(depth)]
    args += ["--resume"] if resume else SMALL
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)


def losses(report: dict[str, Any]) -> list[float]:
    return [r["metrics"]["loss"] for r in report["rounds"]]


def clear_losses(run: sme_credit.SmeRun) -> tuple[float, ...]:
    """The losses of the same descent on the run's own aligned tables, in the clear."""
    job = sme_credit.roles_for(run)
    blocks = [job.guest_train.X, job.host_train.X]
    return fit(blocks, job.guest_train.labels, TAYLOR, job.terms.config).losses


@pytest.mark.parametrize(
    ("point", "depth"),
    [("opened", 1), ("intent", 1), ("signed", 1), ("sent", 1), ("anchored", 1),
     ("delivered", 1), ("intent", 2), ("anchored", 2)],
)  # fmt: skip
def test_killed_at_any_step_the_vertical_job_resumes(
    node: AnvilNode, tmp_path: Path, point: str, depth: int
) -> None:
    out = tmp_path / "run"
    crashed = simulate(node, out, kill_at=f"{point}:{CRASH_ROUND}", depth=depth)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed = simulate(node, out, resume=True, depth=depth)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["audit"]["status"] == "pass" and report["audit"]["failed"] == 0
    chain = RpcChain(node.url, ANVIL_CHAIN_ID, poll_latency=0.01)
    try:
        run = sme_credit.load(chain, out)
        assert losses(report) == pytest.approx(clear_losses(run), abs=1e-7)
        ledger = Ledger(chain, run.deployment)
        logs = ledger.training.events.RoundAnchored().get_logs(
            from_block=0, argument_filters={"jobId": run.job_id}
        )
        assert [log["args"]["round"] for log in logs] == [r["round"] for r in report["rounds"]]
    finally:
        chain.close()
