"""The AML scenario over Flower, each party in its own processes on this machine: an anvil node,
a SuperLink with the coordinator's ServerApp, and one SuperNode per bank, the job run with
``flwr run`` and ending with ``consortium audit`` passing on its bundle. Loopback only; every
wait is bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import free_port
from flower_federation import Federation

from consortium.chain.anvil import AnvilNode
from consortium.chain.backend import connect
from consortium.cli.main import cli
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Jobs, mask_participants
from consortium.scenarios import aml

APP = Path(str(files("consortium.integrations.flower") / "app"))
BANKS = 2
ROUNDS = 2
RUN_SECONDS = 240
NODE_TIMEOUT = 20.0  # seconds a round waits for a bank's reply: a dead node's is never coming


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    started = Federation(tmp_path / "flower", free_port())
    try:
        yield started
    finally:
        started.close()


def set_up_federation(
    anvil_node: AnvilNode, federation: Federation, out: Path, rounds: int
) -> aml.AmlRun:
    """An AML run of :data:`BANKS` banks on the node, and a federation of one SuperNode each."""
    set_up = CliRunner().invoke(
        cli,
        [
            "simulate", "aml", "--set-up-only", "--chain", anvil_node.url, "--out", str(out),
            "--banks", str(BANKS), "--rounds", str(rounds), "--seed", "11",
        ],
    )  # fmt: skip
    assert set_up.exit_code == 0, set_up.output
    assert " set up in " in set_up.stdout
    chain = connect(anvil_node.url)
    try:
        run = aml.load(chain, out)
    finally:
        chain.close()
    federation.start_link()
    for bank in run.banks:
        config = {"run-dir": str(out), "chain": anvil_node.url, "bank": bank.name}
        federation.start_node(bank.name, free_port(), config)
    federation.wait_for_nodes(BANKS)
    return run


def audited_rounds(anvil_node: AnvilNode, out: Path) -> set[int]:
    """The rounds ``consortium audit`` checked in the run's bundle; it must pass."""
    audited = CliRunner().invoke(
        cli, ["audit", str(out / "bundle"), "--chain", anvil_node.url, "--json"]
    )
    assert audited.exit_code == 0, audited.output[-3000:]
    document = json.loads(audited.stdout)
    assert document["verdict"]["ok"]
    return {r["round"] for r in document["results"] if r["round"] is not None}


@pytest.mark.anvil
@pytest.mark.slow
def test_the_job_runs_over_flower_and_its_audit_passes(
    anvil_node: AnvilNode, federation: Federation, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    set_up_federation(anvil_node, federation, out, ROUNDS)
    run_id = federation.run(APP, run_config(anvil_node, out))
    assert_completed(federation, run_id)
    assert audited_rounds(anvil_node, out) == set(range(1, ROUNDS + 1))


@pytest.mark.anvil
@pytest.mark.slow
def test_a_coordinator_killed_mid_job_resumes_in_a_new_run(
    anvil_node: AnvilNode, federation: Federation, tmp_path: Path
) -> None:
    """The ServerApp dies after round 1 is anchored; a new ``flwr run`` goes on from the
    coordinator's journal and the chain: no round is anchored twice, and the audit passes."""
    out = tmp_path / "run"
    run = set_up_federation(anvil_node, federation, out, ROUNDS + 1)
    first = federation.run(APP, run_config(anvil_node, out))
    chain = connect(anvil_node.url)
    try:
        jobs = Ledger(chain, run.deployment).jobs
        wait_until_anchored(jobs, run.job_id, 1, lambda: federation.log(first))
        federation.kill_server_app()
        anchored_before = jobs.get(run.job_id).last_round
        second = federation.run(APP, run_config(anvil_node, out))
        assert_completed(federation, second)
        assert anchored_before < ROUNDS + 1 == jobs.get(run.job_id).last_round
    finally:
        chain.close()
    assert audited_rounds(anvil_node, out) == set(range(1, ROUNDS + 2))


@pytest.mark.anvil
@pytest.mark.slow
def test_a_bank_whose_node_dies_mid_job_is_left_out_and_the_job_finishes(
    anvil_node: AnvilNode, federation: Federation, tmp_path: Path
) -> None:
    """Bank 1's SuperNode is killed once round 1 is anchored: the rounds after it go on with
    bank 0 alone (each anchor names its participants), the receipts bank 1 can no longer take
    are journaled, and the audit passes, saying in which rounds bank 1 took no part."""
    out = tmp_path / "run"
    run = set_up_federation(anvil_node, federation, out, ROUNDS + 1)
    run_id = federation.run(APP, {**run_config(anvil_node, out), "timeout": NODE_TIMEOUT})
    chain = connect(anvil_node.url)
    try:
        jobs = Ledger(chain, run.deployment).jobs
        wait_until_anchored(jobs, run.job_id, 1, lambda: federation.log(run_id))
        federation.stop_node(run.banks[1].name)
        assert_completed(federation, run_id)
        job = jobs.get(run.job_id)
        anchors = jobs.logged_anchors(run.job_id, job.created_block, chain.w3.eth.block_number)
        masks = [anchors[r][0].participant_mask for r in range(1, ROUNDS + 2)]
    finally:
        chain.close()
    gone = run.banks[1].account.address
    assert gone in mask_participants(job.participants, masks[0])
    assert gone not in mask_participants(job.participants, masks[-1])
    assert audited_rounds(anvil_node, out) == set(range(1, ROUNDS + 2))


@pytest.mark.anvil
@pytest.mark.slow
def test_a_consent_revoked_mid_job_over_flower_leaves_its_owner_out(
    anvil_node: AnvilNode, federation: Federation, tmp_path: Path
) -> None:
    """Bank 1 revokes the consent to its data once round 1 is anchored: the job completes over
    Flower with bank 0, bank 1 is not even sent the later rounds' model, and the audit passes,
    saying in which rounds bank 1 took no part."""
    out = tmp_path / "run"
    run = set_up_federation(anvil_node, federation, out, ROUNDS + 1)
    run_id = federation.run(APP, run_config(anvil_node, out))
    chain = connect(anvil_node.url)
    try:
        revoking = Ledger(chain, run.deployment, run.banks[1].account)
        job = revoking.jobs.get(run.job_id)
        (dataset,) = [
            d for d in job.dataset_ids
            if revoking.consents.dataset(d).owner == run.banks[1].account.address
        ]  # fmt: skip
        wait_until_anchored(revoking.jobs, run.job_id, 1, lambda: federation.log(run_id))
        revoking.consents.revoke(dataset, job.consumer, aml.PURPOSE)
        assert_completed(federation, run_id)
    finally:
        chain.close()
    audited = CliRunner().invoke(
        cli, ["audit", str(out / "bundle"), "--chain", anvil_node.url, "--json"]
    )
    assert audited.exit_code == 0, audited.output[-3000:]
    absent = {
        r["round"]
        for r in json.loads(audited.stdout)["results"]
        if r["check"] == "membership" and "took no part" in r["message"]
    }
    assert absent and 1 not in absent


def assert_completed(federation: Federation, run_id: int) -> None:
    status = federation.wait_for_run(run_id, RUN_SECONDS)
    assert status == "finished:completed", federation.log(run_id)[-3000:]


def wait_until_anchored(jobs: Jobs, job_id: int, round_number: int, log: Callable[[], str]) -> None:
    """Waits, bounded, until the job's round ``round_number`` is anchored."""
    deadline = time.monotonic() + RUN_SECONDS
    while jobs.get(job_id).last_round < round_number:
        assert time.monotonic() < deadline, log()[-3000:]
        time.sleep(0.5)


def run_config(anvil_node: AnvilNode, out: Path) -> dict[str, object]:
    return {"run-dir": str(out), "chain": anvil_node.url, "depth": 1, "timeout": 60.0}
