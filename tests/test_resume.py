"""Crash and resume: a coordinator killed at any step of a round finishes the job correctly.

Each run is a real ``consortium simulate aml`` subprocess against a local anvil node, killed
by SIGKILL at a named crash point (CONSORTIUM_KILL_AT) and then resumed with ``--resume``.
After the crash the write-ahead rule must hold (every root on chain has its records in the
coordinator's store); after the resume no round is anchored twice, the bundle covers every
round, and the final model is the one an uninterrupted run produces. Every run here has the
same seed, and so the same parties' keys (they derive from it) and the same models: nothing is
copied from the reference run.

The lost anchor transaction is staged on a node of its own: with automine off the anchor sits
in the node's pool when the coordinator dies, and a node restart empties the pool; the resumed
coordinator must notice and send the very same signed transaction again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from bundle_files import read_rounds
from conftest import ANVIL_CHAIN_ID, start_anvil
from hexbytes import HexBytes
from journal_holder import journal_held_elsewhere

from consortium.chain.anvil import AnvilNode
from consortium.chain.rpc import RpcChain
from consortium.chain.transact import SignedTransaction
from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.merkle import MerkleTree
from consortium.faults import KILL_AT_ENV, POINTS
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import participant_mask
from consortium.orchestration.bundle import export_bundle
from consortium.protocol.messages import anchor_from_json
from consortium.scenarios import aml
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

CONSORTIUM = Path(sys.executable).parent / "consortium"
BANKS, ROUNDS, CRASH_ROUND = 3, 3, 2
# Where each crash point leaves round CRASH_ROUND: is it anchored, and what was journaled last.
ANCHORED_AT_CRASH = {"sent", "anchored", "delivered"}
LAST_ENTRY_AT_CRASH = {
    "opened": "opened",
    "collected": "opened",  # collecting journals nothing
    "intent": "intent",
    "signed": "signed",
    "sent": "signed",
    "anchored": "anchored",
    "delivered": "delivered",
}


def test_every_crash_point_is_covered() -> None:
    assert set(LAST_ENTRY_AT_CRASH) == set(POINTS)


# ---------------------------------------------------------------------------------- helpers


def _start_node(directory: Path, *, archive: bool = False) -> AnvilNode:
    return start_anvil(directory, archive=archive)


def rpc(node: AnvilNode, method: str, *params: Any) -> Any:
    """A raw JSON-RPC request: the test's own (dev-node-only) hands on the node."""
    reply = requests.post(
        node.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
        timeout=10,
    ).json()  # fmt: skip
    assert "error" not in reply, f"{method}: {reply['error']}"
    return reply["result"]


def simulate(
    node: AnvilNode,
    out: Path,
    *,
    resume: bool = False,
    kill_at: str | None = None,
    depth: int = 1,
) -> subprocess.CompletedProcess[str]:
    """``consortium simulate aml`` in a subprocess of its own, optionally told to die; one
    round at a time unless ``depth`` says how many may be in flight."""
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    args = [str(CONSORTIUM), "simulate", "aml", "--chain", node.url, "--out", str(out), "--json"]
    args += ["--resume"] if resume else ["--banks", str(BANKS), "--rounds", str(ROUNDS)]
    args += ["--pipeline-depth", str(depth)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def killed(result: subprocess.CompletedProcess[str], where: str) -> None:
    assert result.returncode == -signal.SIGKILL, (
        f"{where}: expected death by SIGKILL, got exit {result.returncode}\n{result.stderr}"
    )


def finished(
    result: subprocess.CompletedProcess[str], where: str, *, history: bool = True
) -> dict[str, Any]:
    """The report of a run that completed, with every round of the job audited. Without the
    node's ``history`` (a restarted anvil keeps no past state unless it is an archive node),
    the audit cannot check the standing at past blocks: it says so, and the run exits 1 as
    ``consortium audit`` would."""
    report = json.loads(result.stdout)
    audit = report["audit"]
    assert (audit["rounds"], audit["failed"]) == (ROUNDS, 0), f"{where}: {audit}"
    expected = ("pass", 0) if history else ("unverifiable", 1)
    assert (audit["status"], result.returncode) == expected, f"{where}: {result.stderr}"
    return report


def journal(out: Path) -> list[dict[str, Any]]:
    """The coordinator's journal, read without opening it as a Journal (which may repair)."""
    path = out / "parties" / "institute" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def entries(out: Path, kind: str | None, round_number: int | None = None) -> list[dict[str, Any]]:
    """The journal's entries of ``kind`` (any kind for None) and round, oldest first."""
    return [
        e
        for e in journal(out)
        if kind in (None, e["kind"]) and round_number in (None, e.get("round"))
    ]


@dataclass
class OnChain:
    ledger: Ledger
    job_id: int

    @classmethod
    def of(cls, node: AnvilNode, out: Path) -> OnChain:
        chain = RpcChain(node.url, ANVIL_CHAIN_ID, poll_latency=0.01)
        run = aml.load(chain, out)
        return cls(Ledger(chain, run.deployment), run.job_id)

    def anchored_rounds(self) -> list[dict[str, Any]]:
        """Every RoundAnchored event of the job, oldest first (a small node: scan it all)."""
        event = self.ledger.training.events.RoundAnchored()
        logs = event.get_logs(from_block=0, argument_filters={"jobId": self.job_id})
        return [dict(log["args"]) for log in logs]

    def close(self) -> None:
        self.ledger.chain.close()


def check_write_ahead(out: Path, on_chain: OnChain, where: str) -> None:
    """Every root anchored on chain has its intent journaled and its records durable in the
    coordinator's store, and the records give that root."""
    store = ArtifactStore(out / "parties" / "institute" / "store")
    for event in on_chain.anchored_rounds():
        (intent,) = entries(out, "intent", event["round"]) or [None]
        assert intent is not None, f"{where}: round {event['round']} anchored without an intent"
        leaves = [store.get(from_hex32(d)) for d in intent["records"]]  # verifies each digest
        assert MerkleTree(leaves).root == bytes(event["merkleRoot"]), where
        assert intent["root"] == hex32(bytes(event["merkleRoot"])), where
        assert store.has(bytes(event["modelDigest"])), where
        assert store.has(bytes(event["metricsDigest"])), where


def check_completed(out: Path, on_chain: OnChain, reference: Reference, where: str) -> None:
    """The job is complete, each round anchored once, journaled once, bundled, and the models
    are the reference run's."""
    job = on_chain.ledger.jobs.get(on_chain.job_id)
    assert job.last_round == ROUNDS, where
    events = on_chain.anchored_rounds()
    assert [e["round"] for e in events] == list(range(1, ROUNDS + 1)), f"{where}: {events}"
    assert [hex32(bytes(e["modelDigest"])) for e in events] == reference.models, where
    assert hex32(job.head_model_digest) == reference.models[-1], where
    for r in range(1, ROUNDS + 1):
        assert len(entries(out, "anchored", r)) == 1, f"{where}: round {r} journaled anchored"
        assert len(entries(out, "delivered", r)) == 1, f"{where}: round {r} journaled delivered"
        (anchored,) = entries(out, "anchored", r)
        anchor = anchor_from_json(anchored["anchor"])
        assert on_chain.ledger.jobs.round_commitment(job.id, r) == anchor.commitment(), where
    assert [r["round"] for r in read_rounds(out / "bundle")] == list(range(1, ROUNDS + 1)), where


# ---------------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Reference:
    out: Path
    models: list[str]  # the global model digest of each round


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """A node of this module's own: every run funds five parties from its faucet."""
    node = _start_node(tmp_path_factory.mktemp("resume-node"))
    yield node
    node.stop()


@pytest.fixture(scope="module")
def reference(node: AnvilNode, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    report = finished(simulate(node, out), "reference run")
    assert not any(r["resumed"] for r in report["rounds"])
    return Reference(out, [r["anchor"]["modelDigest"] for r in report["rounds"]])


@pytest.fixture
def own_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AnvilNode]:
    """A node this test may stop, restart and switch to manual mining; an archive node when
    the test passes True as the fixture's (indirect) parameter."""
    node = _start_node(tmp_path / "node", archive=getattr(request, "param", False))
    yield node
    node.stop()


# ---------------------------------------------------------------------------------- tests


def test_a_rerun_with_the_same_seed_gives_the_same_models(
    node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    """What the crash tests rely on: keys, training and aggregation are deterministic per seed."""
    out = tmp_path / "again"
    report = finished(simulate(node, out), "rerun")
    assert [r["anchor"]["modelDigest"] for r in report["rounds"]] == reference.models


# Where a pipelined run is killed: training points run on the main thread while the round
# before may still be anchoring; anchoring points run on the anchoring thread while the round
# after may already be training.
TRAINING_POINTS = {"opened", "collected", "intent"}


@pytest.mark.parametrize("depth", [1, 2], ids=["unpipelined", "pipelined"])
@pytest.mark.parametrize("point", POINTS)
def test_killed_at_any_step_the_job_resumes(
    point: str, depth: int, node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    where = f"killed at {point}:{CRASH_ROUND}, depth {depth}"
    out = tmp_path / "run"
    killed(simulate(node, out, kill_at=f"{point}:{CRASH_ROUND}", depth=depth), where)
    on_chain = OnChain.of(node, out)
    try:
        # The process died where it was told to, and left nothing anchored without artifacts.
        job = on_chain.ledger.jobs.get(on_chain.job_id)
        expected = CRASH_ROUND if point in ANCHORED_AT_CRASH else CRASH_ROUND - 1
        # Pipelined, round CRASH_ROUND - 1 may still have been anchoring when round
        # CRASH_ROUND's training was cut short; and round CRASH_ROUND + 1, trained while round
        # CRASH_ROUND anchored, may have had its anchor sent ahead before the kill.
        possible = {expected}
        if depth > 1:
            possible.add(expected - 1 if point in TRAINING_POINTS else expected + 1)
        assert job.last_round in possible, where
        of_round = entries(out, None, CRASH_ROUND) if depth > 1 else journal(out)
        assert of_round[-1]["kind"] == LAST_ENTRY_AT_CRASH[point], where
        assert of_round[-1]["round"] == CRASH_ROUND, where
        check_write_ahead(out, on_chain, where)
        assert not (out / "bundle").exists(), where

        resumed = simulate(node, out, resume=True, depth=depth)
        report = finished(resumed, f"{where}, then resumed")
        assert [r["round"] for r in report["rounds"]] == list(range(1, ROUNDS + 1)), where
        assert report["rounds"][-1]["anchor"]["modelDigest"] == reference.models[-1], where
        assert report["rounds"][CRASH_ROUND - 2]["resumed"], where  # taken from the journal
        if depth == 1:
            assert not report["rounds"][-1]["resumed"], where
        check_completed(out, on_chain, reference, where)
        # One anchor transaction was signed per round, whatever the crash interrupted.
        for r in range(1, ROUNDS + 1):
            (signed,) = entries(out, "signed", r)
            assert signed["txHash"] == entries(out, "anchored", r)[0]["txHash"], where
    finally:
        on_chain.close()


def _interrupt_with_anchor_in_pool(node: AnvilNode, out: Path) -> str:
    """Runs round 1, turns automine off, and kills the coordinator right after it sent round
    2's anchor, which stays in the node's pool; returns that transaction's hash."""
    killed(simulate(node, out, kill_at="delivered:1"), "killed after round 1")
    rpc(node, "evm_setAutomine", False)
    killed(simulate(node, out, resume=True, kill_at=f"sent:{CRASH_ROUND}"), "killed after send")
    (signed,) = entries(out, "signed", CRASH_ROUND)
    pending = rpc(node, "eth_getTransactionByHash", signed["txHash"])
    assert pending is not None and pending["blockNumber"] is None  # in the pool, not mined
    assert rpc(node, "eth_getTransactionReceipt", signed["txHash"]) is None
    return signed["txHash"]


@pytest.mark.parametrize("own_node", [False, True], ids=["plain", "archive"], indirect=True)
def test_an_anchor_lost_with_the_nodes_pool_is_sent_again(
    own_node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    tx_hash = _interrupt_with_anchor_in_pool(own_node, out)

    own_node.stop()  # the state file keeps the mined blocks, not the transaction pool
    own_node.start()  # and a fresh anvil automines again
    assert rpc(own_node, "eth_getTransactionByHash", tx_hash) is None, "the node kept its pool"
    on_chain = OnChain.of(own_node, out)
    try:
        assert on_chain.ledger.jobs.get(on_chain.job_id).last_round == CRASH_ROUND - 1
        check_write_ahead(out, on_chain, "after the node restart")

        report = finished(
            simulate(own_node, out, resume=True), "resumed after the loss",
            history=own_node.archive,
        )  # fmt: skip
        assert report["rounds"][CRASH_ROUND - 1]["transaction"] == tx_hash
        check_completed(out, on_chain, reference, "lost anchor")
        # The very same signed transaction was sent again: one signature, mined as signed.
        (signed,) = entries(out, "signed", CRASH_ROUND)
        (anchored,) = entries(out, "anchored", CRASH_ROUND)
        assert signed["txHash"] == anchored["txHash"] == tx_hash
        mined = rpc(own_node, "eth_getTransactionByHash", tx_hash)
        assert int(mined["nonce"], 16) == signed["nonce"]
    finally:
        on_chain.close()


def test_an_anchor_still_pending_on_resume_is_awaited(
    own_node: AnvilNode, reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed through the Python API while round 2's anchor waits in the pool: the
    coordinator sees it pending, waits for it rather than signing another, and finishes once
    a block is mined."""
    out = tmp_path / "run"
    tx_hash = _interrupt_with_anchor_in_pool(own_node, out)

    chain = RpcChain(own_node.url, ANVIL_CHAIN_ID, poll_latency=0.01)
    run = aml.load(chain, out)
    coordinator = aml.coordinator_for(chain, run)
    transactor = coordinator.ledger.transactor
    looked_up: list[tuple[str, bool]] = []
    waiting = threading.Event()
    is_known = transactor.is_known

    def spy(tx: Any) -> bool:
        known = is_known(tx)
        looked_up.append((tx.to_0x_hex(), known))
        waiting.set()
        return known

    monkeypatch.setattr(transactor, "is_known", spy)
    outcome: dict[str, Any] = {}

    def resume() -> None:
        try:
            outcome["results"] = coordinator.run(run.settings.rounds)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=resume, daemon=True)
    worker.start()
    try:
        assert waiting.wait(30), f"the coordinator never looked the anchor up: {outcome}"
        assert looked_up == [(tx_hash, True)]
        assert rpc(own_node, "eth_getTransactionReceipt", tx_hash) is None  # still not mined
        assert entries(out, "anchored", CRASH_ROUND) == []
    finally:
        rpc(own_node, "evm_mine")
        rpc(own_node, "evm_setAutomine", True)
        worker.join(60)
    assert not worker.is_alive(), "the resumed coordinator did not finish"
    assert "error" not in outcome, outcome.get("error")
    assert [r.round for r in outcome["results"]] == list(range(1, ROUNDS + 1))
    assert outcome["results"][CRASH_ROUND - 1].tx_hash == tx_hash

    ledger = Ledger(chain, run.deployment)
    export_bundle(ledger, run.job_id, run.institute.store, run.institute.journal_reader(), out)
    on_chain = OnChain(ledger, run.job_id)
    try:
        check_completed(out, on_chain, reference, "pending anchor")
        (signed,) = entries(out, "signed", CRASH_ROUND)
        assert signed["txHash"] == tx_hash
    finally:
        on_chain.close()


def test_an_older_attempt_mined_after_all_is_recognised(
    node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    """Two journaled attempts at round 2's anchor (the first was refused on resend, so a second
    was signed with the same nonce), and the first is the one that got mined, say from another
    node's pool: the resumed coordinator finds it instead of calling the round foreign."""
    where = "older attempt mined"
    out = tmp_path / "run"
    killed(simulate(node, out, kill_at=f"signed:{CRASH_ROUND}"), where)
    on_chain = OnChain.of(node, out)
    try:
        run = aml.load(on_chain.ledger.chain, out)
        coordinator = on_chain.ledger.as_signer(run.institute.account)
        (first,) = entries(out, "signed", CRASH_ROUND)
        (intent,) = entries(out, "intent", CRASH_ROUND)
        # A new base fee, so that the second attempt's fees, and so its hash, differ from the
        # first's (idle blocks alone leave it unchanged once it reached its floor).
        base_fee = on_chain.ledger.chain.w3.eth.get_block("latest")["baseFeePerGas"]
        rpc(node, "anvil_setNextBlockBaseFeePerGas", hex(2 * base_fee + 1_000_000_000))
        rpc(node, "evm_mine")
        job = coordinator.jobs.get(run.job_id)
        second = coordinator.jobs.sign_anchor(
            run.job_id, CRASH_ROUND, from_hex32(intent["root"]),
            participant_mask(job.participants, intent["participants"]),
            from_hex32(intent["model"]), from_hex32(intent["metrics"]),
        )  # fmt: skip
        assert second.nonce == first["nonce"] and second.tx_hash.to_0x_hex() != first["txHash"]
        attempts = Journal(out / "parties" / "institute" / "journal.jsonl")
        attempts.append(
            "signed", round=CRASH_ROUND, txHash=second.tx_hash.to_0x_hex(),
            raw=second.raw.to_0x_hex(), nonce=second.nonce,
        )  # fmt: skip
        attempts.close()
        coordinator.transactor.confirm(
            coordinator.transactor.broadcast(
                SignedTransaction(HexBytes(first["txHash"]), HexBytes(first["raw"]), first["nonce"])
            )
        )

        report = finished(simulate(node, out, resume=True), f"{where}, then resumed")
        assert report["rounds"][CRASH_ROUND - 1]["transaction"] == first["txHash"]
        check_completed(out, on_chain, reference, where)
    finally:
        on_chain.close()


def test_an_anchor_the_node_lost_after_delivery_is_sent_again(
    own_node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    """The node dies right after round 2 was anchored and delivered, and comes back from
    state saved before that anchor was mined. The journal calls round 2 delivered; the chain
    does not have it. The resumed coordinator takes the chain's word, sends the journaled
    transaction again, and the job finishes and exports with the anchor the chain now holds."""
    out = tmp_path / "run"
    killed(simulate(own_node, out, kill_at="delivered:1"), "killed after round 1")
    own_node.stop()  # writes the state with round 1 anchored
    saved = tmp_path / "state-after-round-1.json"
    shutil.copy(own_node.state_file, saved)
    own_node.start()
    killed(
        simulate(own_node, out, resume=True, kill_at=f"delivered:{CRASH_ROUND}"),
        "killed after round 2 was delivered",
    )
    (signed,) = entries(out, "signed", CRASH_ROUND)
    (lost,) = entries(out, "anchored", CRASH_ROUND)
    own_node.stop()
    shutil.copy(saved, own_node.state_file)  # the node lost everything after round 1
    own_node.start()
    on_chain = OnChain.of(own_node, out)
    try:
        assert on_chain.ledger.jobs.get(on_chain.job_id).last_round == CRASH_ROUND - 1
        assert entries(out, "delivered", CRASH_ROUND), "the journal calls the round delivered"

        report = finished(
            simulate(own_node, out, resume=True), "resumed after the node lost a delivered anchor",
            history=False,
        )  # fmt: skip
        assert report["rounds"][CRASH_ROUND - 1]["transaction"] == signed["txHash"]
        events = on_chain.anchored_rounds()
        assert [e["round"] for e in events] == list(range(1, ROUNDS + 1))
        assert [hex32(bytes(e["modelDigest"])) for e in events] == reference.models
        # One signature for round 2, mined again; the journal's newest anchor is the chain's.
        assert entries(out, "signed", CRASH_ROUND) == [signed]
        newest = entries(out, "anchored", CRASH_ROUND)[-1]
        assert newest["txHash"] == lost["txHash"] == signed["txHash"]
        anchor = anchor_from_json(newest["anchor"])
        assert on_chain.ledger.jobs.round_commitment(on_chain.job_id, CRASH_ROUND) == (
            anchor.commitment()
        )
        bundled = read_rounds(out / "bundle")
        assert [r["round"] for r in bundled] == list(range(1, ROUNDS + 1))
        assert bundled[CRASH_ROUND - 1]["anchor"] == newest["anchor"]
    finally:
        on_chain.close()


def test_a_second_resume_on_the_same_directory_is_refused(
    node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    """While one process runs the coordinator of a directory, another ``--resume`` on it is
    refused in one line naming the first, and leaves the journal as it was."""
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    path = out / "parties" / "institute" / "journal.jsonl"
    before = path.read_bytes()
    with journal_held_elsewhere(path) as pid:
        second = simulate(node, out, resume=True)
    assert second.returncode == 1, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"error: the journal {path} is in use by process {pid} ("), line
    assert path.read_bytes() == before


def test_a_damaged_journal_is_repaired_by_the_cli_and_the_run_resumes(
    node: AnvilNode, reference: Reference, tmp_path: Path
) -> None:
    """What a user does with a journal that resume refuses: ``consortium journal repair``,
    then ``--resume`` again; the audit passes and nothing was anchored again."""
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    institute = out / "parties" / "institute"
    path = institute / "journal.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:5], b'{"seq": 5, "kind": "intent", "ro\n', *lines[5:]]))
    refused = simulate(node, out, resume=True)
    assert refused.returncode == 1
    assert "line 6 is damaged" in refused.stderr and "consortium journal repair" in refused.stderr

    env = {**os.environ, "CONSORTIUM_NETWORK": node.url, "CONSORTIUM_CHAIN_ID": str(ANVIL_CHAIN_ID)}
    job_id = json.loads((out / "scenario.json").read_text())["jobId"]
    args = [str(CONSORTIUM), "journal", "repair", "--job", str(job_id), "--from", str(institute)]
    repaired = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert repaired.returncode == 0, repaired.stderr
    assert "1 damaged line(s) dropped" in repaired.stdout, repaired.stdout
    assert list(institute.glob("journal.jsonl.damaged-*"))
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert "nothing to repair" in again.stdout, again.stdout + again.stderr

    on_chain = OnChain.of(node, out)
    try:
        finished(simulate(node, out, resume=True), "resumed after the repair")
        check_completed(out, on_chain, reference, "repaired journal")
    finally:
        on_chain.close()
