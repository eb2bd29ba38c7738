"""The auditor: an untouched bundle passes every check; the CLI, the script and their exit codes.

One AML scenario (3 banks, 3 rounds) runs once per module on the embedded chain; the commands
are pointed at that chain by replacing ``open_chain`` (the embedded chain lives in this
process only, and the real ``open_chain`` rightly refuses it). The anvil tests run the same
commands as separate processes against a real node, and show that state lost by a node
restart makes the membership, consent and events checks "unverifiable", not failed or passed.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np
import pytest
from audit_scenario import ROUNDS, Scenario, reach_scenario_chain, run_scenario
from bundle_files import (
    edit_document,
    read_manifest,
    read_rounds,
    write_manifest,
    write_rounds,
)
from click.testing import CliRunner, Result
from conftest import ANVIL_CHAIN_ID, free_port
from ledger_fixtures import DAY, PURPOSE, deploy_consortium, digest
from web3.types import BlockIdentifier

from consortium.audit import (
    AuditReport,
    BundleError,
    CheckResult,
    Verdict,
    locate_model,
    model_digest_from,
    open_bundle,
    open_chain,
    protocols,
    verify_bundle,
)
from consortium.audit.bundle import MAX_MANIFEST_BYTES
from consortium.audit.chainview import ChainView
from consortium.audit.checks import COMMON_CHECK_NAMES, JobFacts, check_events
from consortium.audit.evidence import Evidence
from consortium.audit.replay import ConsentTerms, ImpliedState
from consortium.audit.results import Scope
from consortium.audit.standing import Standing, StandingReader
from consortium.audit.timeline import ChainEvent, TimelineReader
from consortium.chain.anvil import AnvilNode
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.chain.rpc import RpcChain
from consortium.cli.main import cli
from consortium.crypto.eip712 import Domain
from consortium.errors import ChainRevert, ChainUnavailable, UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.consents import Consent
from consortium.ledger.members import MemberState
from consortium.ledger.roles import Role
from consortium.protocol.fedavg.audit import AUDIT as FEDAVG
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import get_model, put_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "verify_job.py"
FEDAVG_CHECKS = {*COMMON_CHECK_NAMES, *FEDAVG.check_names}  # what a FedAvg audit reports


def audit(chain: Chain, bundle: Path, ledger: str | None = None) -> tuple[Verdict, list]:
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        results = [verdict.add(r) for r in verify_bundle(opened, chain, ledger=ledger)]
    return verdict, results


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    chain = EmbeddedChain()
    yield run_scenario(chain, tmp_path_factory.mktemp("audit"))
    chain.close()


@pytest.fixture
def on_scenario_chain(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> Chain:
    return reach_scenario_chain(scenario, monkeypatch)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args])


def copy_bundle(scenario: Scenario, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scenario.bundle, tmp_path / "bundle"))


# ------------------------------------------------------------------------------ the API


def test_an_untouched_bundle_passes_every_check(scenario: Scenario) -> None:
    verdict, results = audit(scenario.chain, scenario.bundle)
    failed = [r.message for r in results if not r.ok]
    assert verdict.ok and not failed, failed
    assert verdict.exit_code == 0 and verdict.describe().startswith("VERIFIED")
    assert {r.name for r in results} == FEDAVG_CHECKS
    # Each round runs every round-level check; messages say where they belong.
    for number in range(1, ROUNDS + 1):
        in_round = [r for r in results if r.round == number]
        assert {r.name for r in in_round} == FEDAVG_CHECKS - {
            "chain", "deployment", "deployer", "code", "job", "protocol", "complete",
            "head-model",
        }  # fmt: skip
        assert all(f"job 1, round {number}" in r.message for r in in_round)
    per_participant = Counter(r.name for r in results if r.round == 1 and r.participant)
    assert per_participant["signature"] == 3 and per_participant["base-model"] == 3
    # coordinator, consumer and the three participants; three datasets.
    assert per_participant["membership"] == 5 and per_participant["consent"] == 3


def test_results_stream_round_by_round(scenario: Scenario) -> None:
    with open_bundle(scenario.bundle) as opened:
        stream = verify_bundle(opened, scenario.chain)
        first = next(stream)  # nothing is read ahead: the first result comes at once
        assert first.name == "chain" and first.ok
        rounds = [r.round for r in stream if r.round is not None]
    assert rounds == sorted(rounds)


PADDING = 200_000
"""Bytes of an unknown field (readers ignore those) added to each round of :func:`many_rounds`:
the size of a round of some 250 participants, so that holding the rounds would show at once."""


def many_rounds(scenario: Scenario, directory: Path, count: int) -> Path:
    """A copy of the scenario's bundle whose rounds.jsonl holds ``count`` rounds: round 1's
    entry, numbered 1 to ``count`` and padded. Every line is read, parsed and checked (most
    checks fail, as these are not the chain's rounds): the path whose memory is measured."""
    bundle = Path(shutil.copytree(scenario.bundle, directory / "bundle"))
    first, padding = scenario.rounds[0], "x" * PADDING
    write_rounds(bundle, [{**first, "round": n, "padding": padding} for n in range(1, count + 1)])
    return bundle


def audit_peak(chain: Chain, bundle: Path) -> tuple[int, Verdict]:
    """The peak of the Python memory the audit holds (tracemalloc), and its verdict.

    Garbage is collected as each round starts: a reverted call leaves a reference cycle (its
    exception and traceback) that the collector frees whenever it next runs, and that timing
    is not the audit's. What exists before the audit is frozen out of those collections,
    which keeps them quick.
    """
    verdict = Verdict()
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        with open_bundle(bundle) as opened:
            for result in verify_bundle(opened, chain):
                if result.round is not None and result.round > verdict.rounds:
                    gc.collect()
                verdict.add(result)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.unfreeze()
    return peak, verdict


def test_the_audit_memory_is_flat_in_the_number_of_rounds(
    scenario: Scenario, tmp_path: Path
) -> None:
    """rounds.jsonl is read a line at a time and each round dropped once checked: auditing four
    times as many rounds takes less extra memory than one more round's line would."""
    audit_peak(scenario.chain, many_rounds(scenario, tmp_path / "warm-up", 1))  # lazy caches
    peaks = {}
    for count in (4, 16):
        bundle = many_rounds(scenario, tmp_path / str(count), count)
        peaks[count], verdict = audit_peak(scenario.chain, bundle)
        assert verdict.rounds == count and verdict.failed  # every line was read and checked
    assert peaks[4] > PADDING  # a line is in memory while it is checked
    assert peaks[16] - peaks[4] < PADDING, peaks


def test_the_archive_and_the_output_directory_are_bundles_too(scenario: Scenario) -> None:
    for path in (scenario.out / "bundle.tar.gz", scenario.out):
        verdict, _ = audit(scenario.chain, path)
        assert verdict.ok, path


def test_a_pinned_ledger_must_be_the_manifests(scenario: Scenario) -> None:
    assert audit(scenario.chain, scenario.bundle, ledger=scenario.run.deployment.ledger)[0].ok
    other = scenario.run.deployment.registry  # a real contract, but not the ledger
    verdict, results = audit(scenario.chain, scenario.bundle, ledger=other)
    assert not verdict.ok
    (deployment,) = [r for r in results if r.name == "deployment"]
    assert not deployment.ok and f"the auditor trusts {other}" in deployment.message


def assert_refused(bundle: Path, text: str) -> None:
    """Opening ``bundle`` is refused with one line holding ``text``."""
    with pytest.raises(BundleError, match=re.escape(text)) as refusal, open_bundle(bundle):
        pass
    assert "\n" not in str(refusal.value)


def test_unreadable_bundles_are_refused(tmp_path: Path, scenario: Scenario) -> None:
    assert_refused(tmp_path, "has no manifest.json")
    bundle = copy_bundle(scenario, tmp_path)
    manifest = bundle / "manifest.json"
    header = manifest.read_text()
    manifest.write_text(header.replace("audit-bundle/4", "audit-bundle/9"))
    assert_refused(bundle, "audit-bundle/9")
    manifest.write_text("{")
    assert_refused(bundle, "is not JSON")
    manifest.write_text('{"chainId": ' + "9" * 5000 + "}")  # more digits than Python converts
    assert_refused(bundle, "is not readable JSON")
    manifest.write_text("[" * 100_000 + "]" * 100_000)  # deeper than json can recurse
    assert_refused(bundle, "is not readable JSON: it nests arrays and objects more than 64 deep")
    manifest.write_text(" " * MAX_MANIFEST_BYTES + header)
    assert_refused(
        bundle,
        "is larger than 1,048,576 bytes, so not the header of a 'consortium.audit-bundle/4' "
        "(or an earlier) bundle, the formats this auditor reads",
    )
    too_big = json.loads(header)
    too_big["job"]["id"] = 2**256  # getJob takes a uint256
    manifest.write_text(json.dumps(too_big))
    assert_refused(bundle, "field 'id' must be at most")


def test_format_1_and_bundles_without_their_rounds_file_are_refused(
    tmp_path: Path, scenario: Scenario
) -> None:
    bundle = copy_bundle(scenario, tmp_path)
    header = read_manifest(bundle)
    uncounted = {k: v for k, v in header.items() if k != "roundCount"}
    # Format 1 held the rounds in the manifest.
    write_manifest(
        bundle, {**uncounted, "format": "consortium.audit-bundle/1", "rounds": scenario.rounds}
    )
    assert_refused(
        bundle,
        "has format 'consortium.audit-bundle/1'; this auditor reads "
        "'consortium.audit-bundle/4', 'consortium.audit-bundle/3' and "
        "'consortium.audit-bundle/2' only",
    )
    write_manifest(bundle, uncounted)
    assert_refused(bundle, "lacks field 'roundCount'")
    write_manifest(bundle, header)
    rounds = bundle / "rounds.jsonl"
    rounds.unlink()
    assert_refused(bundle, f"{bundle} is not a complete audit bundle: it has no rounds.jsonl")
    rounds.mkdir()
    assert_refused(bundle, f"{rounds} is not a regular file")
    rounds.rmdir()
    os.mkfifo(rounds)  # reading it would block the audit
    assert_refused(bundle, f"{rounds} is not a regular file")


def test_the_manifest_names_the_protocol_the_job_s_model_spec_names(scenario: Scenario) -> None:
    manifest = scenario.manifest
    assert manifest["format"] == "consortium.audit-bundle/4"
    assert manifest["protocol"] == "fedavg/1"
    spec = ArtifactStore(scenario.bundle).get_json(bytes.fromhex(manifest["job"]["modelSpec"]))
    assert spec["protocol"] == "fedavg/1"
    _, results = audit(scenario.chain, scenario.bundle)
    (protocol,) = [r for r in results if r.name == "protocol"]
    assert protocol.ok and "protocol 'fedavg/1' is the job's" in protocol.message


def test_a_format_2_bundle_is_read_as_fedavg(tmp_path: Path, scenario: Scenario) -> None:
    """A version 2 header names no protocol: FedAvg, the only one then, is implied."""
    bundle = copy_bundle(scenario, tmp_path)
    header = {k: v for k, v in read_manifest(bundle).items() if k != "protocol"}
    write_manifest(bundle, {**header, "format": "consortium.audit-bundle/2"})
    with open_bundle(bundle) as opened:
        assert opened.protocol == "fedavg/1"
    verdict, results = audit(scenario.chain, bundle)
    assert verdict.ok, [r.message for r in results if not r.ok]
    # A version 3 or 4 header must name it.
    for later in ("consortium.audit-bundle/3", "consortium.audit-bundle/4"):
        write_manifest(bundle, {**header, "format": later})
        assert_refused(bundle, "lacks field 'protocol'")


def test_an_unknown_protocol_is_refused_in_one_line(
    tmp_path: Path, scenario: Scenario, on_scenario_chain: Chain
) -> None:
    bundle = copy_bundle(scenario, tmp_path)
    write_manifest(bundle, {**read_manifest(bundle), "protocol": "x/9"})
    message = "bundle protocol 'x/9' is not one this auditor knows (known: fedavg/1, hetero-lr/1)"
    assert_refused(bundle, message)
    result = invoke(str(bundle), "--chain", "http://node")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    write_manifest(bundle, {**read_manifest(bundle), "protocol": 1})
    assert_refused(bundle, "field 'protocol' must be a protocol id, not 1")


def test_a_known_protocol_other_than_the_spec_s_fails_the_protocol_check(
    tmp_path: Path, scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle naming another protocol the auditor knows, here one with FedAvg's checks, fails
    the protocol check against the job's model spec, whatever that protocol's checks say."""
    monkeypatch.setattr(
        protocols, "PROTOCOLS", MappingProxyType({**protocols.PROTOCOLS, "fedavg/2": FEDAVG})
    )
    bundle = copy_bundle(scenario, tmp_path)
    write_manifest(bundle, {**read_manifest(bundle), "protocol": "fedavg/2"})
    verdict, results = audit(scenario.chain, bundle)
    assert not verdict.ok
    assert [r.message for r in results if not r.ok] == [
        f"job 1: the bundle's protocol is 'fedavg/2', but the job's model spec "
        f"{scenario.manifest['job']['modelSpec']} names 'fedavg/1'"
    ]


def test_the_embedded_chain_is_refused_as_an_audit_endpoint() -> None:
    with pytest.raises(UsageError, match="embedded chain"):
        open_chain("embedded")


def test_a_node_without_the_past_state_makes_standing_unverifiable(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pruned node refuses every call as of a past block (``missing trie node``)."""
    present = Ledger.call

    def pruned(self: Ledger, fn: Any, block: BlockIdentifier = "latest") -> Any:
        if isinstance(block, int):
            raise ChainUnavailable(f"missing trie node (block {block})")
        return present(self, fn, block)

    monkeypatch.setattr(Ledger, "call", pruned)
    verdict, results = audit(scenario.chain, scenario.bundle)
    assert verdict.status == "unverifiable" and verdict.exit_code == 1
    undecided = {r.name for r in results if r.unverifiable}
    assert undecided == {"membership", "consent", "events"}
    assert not verdict.failed


def test_a_node_answering_with_todays_state_is_caught_by_the_probe(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that silently serves the latest state for old blocks would make the membership
    checks meaningless; the job's round count as of the block before each anchor exposes it."""
    monkeypatch.setattr(ChainView, "last_round_at", lambda self, job_id, block: ROUNDS)
    verdict, results = audit(scenario.chain, scenario.bundle)
    undecided = [r for r in results if r.unverifiable]
    assert verdict.status == "unverifiable"
    # Today the job is at round 3; as of the block before round r's anchor it was at r - 1.
    assert {r.round for r in undecided} == {1, 2, 3}
    assert "does not serve that block's real state" in undecided[0].message


def test_a_node_that_reports_no_job_before_its_anchor_is_caught_by_the_probe(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain's commitment says the round was anchored for this job in block B, so a node
    saying the job did not exist as of block B - 1 is not serving that block's real state:
    undecided (never an exception, and no verdict on the other checks lost)."""

    def no_job(self: ChainView, job_id: int, block: int) -> int:
        raise ChainRevert("UnknownJob", {"jobId": job_id}, f"Job {job_id} does not exist.")

    monkeypatch.setattr(ChainView, "last_round_at", no_job)
    verdict, results = audit(scenario.chain, scenario.bundle)
    assert verdict.status == "unverifiable" and not verdict.failed
    undecided = [r for r in results if r.unverifiable]
    assert {r.round for r in undecided} == {1, 2, 3}
    assert {r.name for r in undecided} == {"membership", "consent", "events"}
    block = scenario.rounds[0]["anchor"]["blockNumber"] - 1
    assert f"the node reports no job 1 as of block {block}" in undecided[0].message
    assert "round 1 was anchored" in undecided[0].message


# ------------------------------------------------------------------------------ events and state


@dataclass(frozen=True)
class ReplayInputs:
    """What the events check compares for round 1, read from the scenario's chain."""

    events: list[ChainEvent]
    standing: Standing
    facts: JobFacts
    start: int

    def check(
        self, events: list[ChainEvent], standing: Standing | None = None
    ) -> list[CheckResult]:
        implied = ImpliedState()
        implied.apply(events)
        scope = Scope(self.facts.id, 1)
        return list(check_events(scope, implied, standing or self.standing, self.facts, self.start))


@pytest.fixture(scope="module")
def replay_inputs(scenario: Scenario) -> ReplayInputs:
    """The registry events from the deployment block to the block before round 1's anchor,
    and the state the registries hold as of that block."""
    chain, deployment = scenario.chain, scenario.run.deployment
    view = ChainView(chain, deployment.ledger, deployment)
    job = view.job(scenario.run.job_id)
    with open_bundle(scenario.bundle) as opened:
        facts = JobFacts.of(opened.job, job, Domain(chain.chain_id, deployment.ledger))
    block = scenario.rounds[0]["anchor"]["blockNumber"] - 1
    reader = TimelineReader(
        chain,
        registry=view.ledger.registry,
        consents=view.ledger.consent_registry,
        ledger=view.training,
        job_id=job.id,
        datasets=job.dataset_ids,
    )
    standing = StandingReader(view, job.id, job.consumer, job.purpose).read(
        1, block, [job.coordinator, job.consumer, *job.participants], job.dataset_ids
    )
    events = reader.registry_events(deployment.block_number, block)
    return ReplayInputs(events, standing, facts, deployment.block_number)


def test_events_and_state_agree_on_a_real_job(
    scenario: Scenario, replay_inputs: ReplayInputs
) -> None:
    (result,) = replay_inputs.check(replay_inputs.events)
    assert result.ok and result.name == "events", result.message
    assert f"events of blocks {replay_inputs.start} to {replay_inputs.standing.block}" in (
        result.message
    )
    # In the audit: one passing events check per round.
    _, results = audit(scenario.chain, scenario.bundle)
    events = [r for r in results if r.name == "events"]
    assert [(r.round, r.ok) for r in events] == [(n, True) for n in range(1, ROUNDS + 1)]


def test_events_that_disagree_with_state_fail_naming_the_participant(
    replay_inputs: ReplayInputs,
) -> None:
    events, facts = replay_inputs.events, replay_inputs.facts
    participant = facts.participants[1]
    # A node hiding a member's admission: the events say it never joined.
    hidden = [
        e for e in events if not (e.name == "MemberAdded" and e.args["account"] == participant)
    ]
    (result,) = replay_inputs.check(hidden)
    assert not result.ok and result.participant == participant
    assert result.message.startswith(f"job {facts.id}, round 1, participant {participant}: ")
    assert f"the events make {participant} never a member, the registry holds an active" in (
        result.message
    )

    # A revocation the state does not show: named by the dataset's owner.
    granted = next(e for e in events if e.name == "ConsentGranted")
    dataset = granted.args["datasetId"]
    revoked = ChainEvent(
        granted.block, granted.log_index + 1, "consent", "ConsentRevoked", "forged",
        granted.transaction, args={**granted.args},
    )  # fmt: skip
    (result,) = replay_inputs.check([*events, revoked])
    assert not result.ok and result.participant == replay_inputs.standing.owners[dataset]
    assert f"dataset {dataset}: the events make the consent" in result.message
    assert "revoked, the consent registry holds valid from" in result.message

    # And the other way round: state that the events do not explain.
    standing = replay_inputs.standing
    demoted = {
        **standing.members,
        participant: replace(standing.members[participant], roles=Role(0)),
    }
    (result,) = replay_inputs.check(events, replace(standing, members=demoted))
    assert not result.ok and result.participant == participant
    assert "the registry holds an active member (no roles)" in result.message


def test_cancelled_signed_grants_change_nothing_the_replay_reads(
    replay_inputs: ReplayInputs,
) -> None:
    events = replay_inputs.events
    granted = next(e for e in events if e.name == "ConsentGranted")
    cancelled = ChainEvent(
        granted.block, granted.log_index + 1, "consent", "SignedGrantsCancelled", "cancelled",
        granted.transaction, args={**granted.args, "nonce": 7},
    )  # fmt: skip
    (result,) = replay_inputs.check([*events, cancelled])
    assert result.ok and result.name == "events", result.message


def test_cancellations_are_read_worded_and_replayed_with_the_consents(chain: Chain) -> None:
    """On a chain where a consent is granted, its signed grants cancelled, revoked and granted
    again, the timeline names each change and the replay ends in the consent the chain holds."""
    c = deploy_consortium(chain)
    bank, logistics, _ = c.ledgers
    ds = logistics.consents.register("shipments", digest("schema"))
    now = logistics.now()
    logistics.consents.cancel_signed_grants(ds, bank.address, PURPOSE)  # never granted yet
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + DAY)
    logistics.consents.cancel_signed_grants(ds, bank.address, PURPOSE)
    logistics.consents.revoke(ds, bank.address, PURPOSE)
    logistics.consents.grant(ds, bank.address, PURPOSE, now, now + 2 * DAY)
    logistics.consents.cancel_signed_grants(ds, bank.address, PURPOSE)

    ledger = c.reader
    reader = TimelineReader(
        chain,
        registry=ledger.registry,
        consents=ledger.consent_registry,
        ledger=ledger.training,
        job_id=1,
        datasets=[ds],
    )
    events = reader.read(c.deployment.block_number, chain.w3.eth.block_number)
    consent_events = [e for e in events if e.kind == "consent"]
    assert [e.name for e in consent_events] == [
        "DatasetRegistered",
        "SignedGrantsCancelled",
        "ConsentGranted",
        "SignedGrantsCancelled",
        "ConsentRevoked",
        "ConsentGranted",
        "SignedGrantsCancelled",
    ]
    assert consent_events[-1].detail == (
        f"dataset {ds}: signed grants of the consent for {PURPOSE!r} to {bank.address} "
        "cancelled, the next one carries nonce 6"
    )
    implied = ImpliedState()
    implied.apply(events)
    held = ledger.consents.get(ds, bank.address, PURPOSE)
    assert implied.consent(ds, bank.address, PURPOSE) == ConsentTerms(
        held.valid_from, held.valid_until, held.revoked
    )
    assert (held.valid_until, held.revoked) == (now + 2 * DAY, False)


def test_rounds_out_of_block_order_are_read_again_and_not_replayed_backwards(
    scenario: Scenario, tmp_path: Path
) -> None:
    bundle = copy_bundle(scenario, tmp_path)

    def swap(rounds: list[dict[str, Any]]) -> None:
        rounds[0], rounds[1] = rounds[1], rounds[0]

    edit_document(bundle, lambda m: swap(m["rounds"]))
    _, results = audit(scenario.chain, bundle)
    # Membership as of round 1's block is read again (not carried back from round 2's).
    assert all(r.ok for r in results if r.name in ("membership", "consent"))
    events = {r.round: r for r in results if r.name == "events"}
    assert events[2].ok and events[3].ok and not events[1].ok
    assert "the rounds are out of block order" in events[1].message


# ------------------------------------------------------------------------------ evidence


def test_prefetched_models_read_and_fail_as_models_read_one_by_one(tmp_path: Path) -> None:
    """Reading a round's tensors on several threads changes nothing the checks see: the same
    models, and for a damaged tensor the same problem, in the same words."""
    store = ArtifactStore(tmp_path / "objects")
    rng = np.random.default_rng(3)
    digests = [
        put_model(store, {"w": rng.normal(size=50), "b": rng.normal(size=1)}) for _ in range(3)
    ]
    damaged = bytes.fromhex(store.get_json(digests[1])["w"])
    path = store.path(damaged)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    scope = Scope(1, 1)

    def read(prefetch: bool) -> tuple[list[dict[str, list[float]] | None], list[tuple[Scope, str]]]:
        evidence = Evidence(store)
        if prefetch:
            evidence.prefetch_models([*digests, bytes(32)])  # one that is not even there
        models = [evidence.model(d, scope, "update") for d in [*digests, bytes(32)]]
        as_lists = [None if m is None else {k: v.tolist() for k, v in m.items()} for m in models]
        return as_lists, evidence.problems

    prefetched, one_by_one = read(prefetch=True), read(prefetch=False)
    assert prefetched == one_by_one
    models, problems = prefetched
    assert models[1] is None and models[3] is None and models[0] is not None
    assert [message.split(":")[0] for _, message in problems] == [
        f"update tensor 'w' {damaged.hex()}",
        f"update manifest {bytes(32).hex()}",
    ]


# ------------------------------------------------------------------------------ standing reads


def test_back_to_back_rounds_read_membership_and_consent_once(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round's anchoring block holds only its anchor, so rounds 2 and 3 stand on the
    state read for round 1: no probe, no epochs, no fact read twice; and round 1 reads its
    parties, the datasets' owners and the consents in one call each."""
    reads: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    real = Ledger.call

    def counting(self: Ledger, fn: Any, block: BlockIdentifier = "latest") -> Any:
        if isinstance(block, int):  # a read of past state
            reads[fn.fn_name] += 1
            asked[fn.fn_name] += len(fn.args[0]) if fn.args and isinstance(fn.args[0], list) else 1
        return real(self, fn, block)

    monkeypatch.setattr(Ledger, "call", counting)
    verdict, _ = audit(scenario.chain, scenario.bundle)
    assert verdict.ok
    job = scenario.manifest["job"]
    accounts = {job["coordinator"], job["consumer"], *job["participants"]}
    assert reads == {
        "jobProgress": 1, "membershipEpoch": 1, "consentEpoch": 1, "getMembers": 1, "ownersOf": 1,
        "getConsents": 1,
    }  # fmt: skip
    assert (asked["getMembers"], asked["ownersOf"], asked["getConsents"]) == (
        len(accounts), len(job["datasets"]), len(job["datasets"]) - 1,
    )  # fmt: skip


@dataclass
class Era:
    """The registries' state from ``block`` on, in a :class:`FakeRegistries`."""

    block: int
    epochs: tuple[int, int]
    members: dict[str, MemberState]
    consent: Consent


class FakeRegistries:
    """A ChainView stand-in whose state changes at the given eras; every read is counted."""

    def __init__(self, eras: list[Era], owners: dict[int, str]) -> None:
        self.eras = eras
        self.owners = owners
        self.reads: Counter[str] = Counter()
        self.expected_round = 1  # the probe's answer is the round before this one

    def era(self, block: int) -> Era:
        return [e for e in self.eras if e.block <= block][-1]

    def last_round_at(self, job_id: int, block: int) -> int:
        self.reads["probe"] += 1
        return self.expected_round - 1

    def epochs_at(self, block: int) -> tuple[int, int]:
        self.reads["epochs"] += 1
        return self.era(block).epochs

    def members_at(self, accounts: list[str], block: int) -> dict[str, MemberState]:
        self.reads["member"] += len(accounts)
        return {a: self.era(block).members[a] for a in accounts}

    def dataset_owners_at(self, dataset_ids: list[int], block: int) -> dict[int, str]:
        self.reads["owner"] += len(dataset_ids)
        return {d: self.owners[d] for d in dataset_ids}

    def consents_at(
        self, dataset_ids: list[int], grantee: str, purpose: str, block: int
    ) -> dict[int, Consent]:
        self.reads["consent"] += len(dataset_ids)
        return dict.fromkeys(dataset_ids, self.era(block).consent)

    def read(self, reader: StandingReader, round_number: int, block: int) -> Standing:
        self.expected_round = round_number
        self.reads.clear()
        return reader.read(round_number, block, ["A", "B", "C"], [1, 2])


def test_standing_reads_again_exactly_what_may_have_changed() -> None:
    active = MemberState(active=True, roles=Role.PROVIDER | Role.CONSUMER, ever_joined=True)
    never = MemberState(active=False, roles=Role(0), ever_joined=False)
    granted = Consent(2, "A", "p", valid_from=0, valid_until=99, granted_at=5, revoked=False)
    eras = [
        Era(10, (1, 1), {"A": active, "B": active, "C": never}, granted),
        Era(20, (1, 1), {"A": active, "B": active, "C": active}, granted),  # C joins: no bump
        Era(30, (1, 2), {"A": active, "B": active, "C": active}, replace(granted, revoked=True)),
    ]
    chain = FakeRegistries(eras, owners={1: "A", 2: "B"})  # A is the consumer: no consent
    reader = StandingReader(chain, 7, "A", "p")  # type: ignore[arg-type]

    first = chain.read(reader, 1, 10)
    assert chain.reads == {"probe": 1, "epochs": 1, "member": 3, "owner": 2, "consent": 1}
    assert first.members["C"] == never and first.consents[2] == granted
    # Same epochs: only what an addition could change (C, never a member) is read again.
    second = chain.read(reader, 2, 20)
    assert chain.reads == {"probe": 1, "epochs": 1, "member": 1}
    assert second.members["C"] == active
    # The consent epoch moved: the consent is read again, the members are not.
    third = chain.read(reader, 3, 30)
    assert chain.reads == {"probe": 1, "epochs": 1, "consent": 1}
    assert third.consents[2].revoked
    # Block 31 held only the anchor of round 3: round 4, anchored in block 32, reads nothing.
    reader.unchanged_in(31)
    assert chain.read(reader, 4, 31) == replace(third, block=31)
    assert not chain.reads
    # A block before those read (a damaged bundle's order): everything is read again.
    back = chain.read(reader, 5, 15)
    assert chain.reads == {"probe": 1, "epochs": 1, "member": 3, "owner": 2, "consent": 1}
    assert back.members["C"] == never and not back.consents[2].revoked


# ------------------------------------------------------------------------------ the CLI


def test_audit_prints_a_table_of_checks_per_round_and_a_verdict(
    scenario: Scenario, on_scenario_chain: Chain
) -> None:
    result = invoke(str(scenario.bundle), "--chain", "http://node")
    assert result.exit_code == 0, result.output
    for column in ("round", "check", "result", "detail"):
        assert column in result.stdout
    for name in FEDAVG_CHECKS:
        assert name in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("VERIFIED: every check holds")


def test_audit_json_lists_every_result(scenario: Scenario, on_scenario_chain: Chain) -> None:
    result = invoke(str(scenario.bundle), "--chain", "http://node", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == {
        "ok": True, "status": "pass", "passed": len(report["results"]), "failed": 0,
        "unverifiable": 0, "stopped": None,
    }  # fmt: skip
    assert report["jobId"] == 1 and report["ledger"] == scenario.run.deployment.ledger
    first = report["results"][0]
    assert set(first) == {"check", "round", "participant", "ok", "status", "message"}
    assert {r["round"] for r in report["results"]} == {None, 1, 2, 3}


def test_audit_exit_codes(scenario: Scenario, on_scenario_chain: Chain, tmp_path: Path) -> None:
    bundle = copy_bundle(scenario, tmp_path)
    metrics = scenario.rounds[1]["metrics"]
    damaged = next(bundle.rglob(metrics[2:]))
    damaged.chmod(0o644)
    damaged.write_bytes(damaged.read_bytes() + b" ")
    result = invoke(str(bundle), "--chain", "http://node")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "NOT VERIFIED" in result.stdout

    as_json = invoke(str(bundle), "--chain", "http://node", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["verdict"]["status"] == "fail"

    missing = invoke(str(tmp_path / "nowhere"), "--chain", "http://node")
    assert missing.exit_code == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: no bundle at {tmp_path / 'nowhere'}: no such file or directory"
    ]
    (tmp_path / "empty").mkdir()
    empty = invoke(str(tmp_path / "empty"), "--chain", "http://node")
    assert empty.exit_code == 2
    assert empty.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'} is not an audit bundle: it has no manifest.json"
    ]
    (bundle / "manifest.json").write_text('{"format": "something-else"}')
    wrong = invoke(str(bundle), "--chain", "http://node")
    assert wrong.exit_code == 2 and "something-else" in wrong.stderr

    bad_ledger = invoke(str(scenario.bundle), "--chain", "http://node", "--ledger", "0x12")
    assert bad_ledger.exit_code == 2 and "not an address" in bad_ledger.stderr


def test_audit_refuses_the_embedded_chain(scenario: Scenario) -> None:
    result = invoke(str(scenario.bundle), "--chain", "embedded")
    assert result.exit_code == 2 and "embedded chain" in result.stderr


# ------------------------------------------------------------------------------ audit model


def test_audit_model_names_the_round_that_produced_a_model(
    scenario: Scenario, on_scenario_chain: Chain, tmp_path: Path
) -> None:
    rounds = scenario.rounds
    by_digest = invoke("model", rounds[1]["model"], str(scenario.bundle), "--chain", "http://n")
    assert by_digest.exit_code == 0, by_digest.output
    assert "is the model round 2 of job 1 produced, verified" in by_digest.stdout

    # The model's manifest file, as a store or bundle holds it.
    manifest_file = next(scenario.bundle.rglob(rounds[2]["model"][2:]))
    as_file = invoke("model", str(manifest_file), str(scenario.bundle), "--chain", "x", "--json")
    assert as_file.exit_code == 0, as_file.output
    report = json.loads(as_file.stdout)
    assert report["round"] == 3 and report["verified"] and report["problems"] == []

    # The model's tensors, as someone deploying it would have them.
    model = get_model(scenario.run.institute.store, bytes.fromhex(rounds[0]["model"]))
    npz = tmp_path / "production-model.npz"
    np.savez(npz, **model)
    assert "round 1" in invoke("model", str(npz), str(scenario.bundle), "--chain", "x").stdout

    initial = invoke(
        "model", scenario.manifest["job"]["initialModel"], str(scenario.bundle), "--chain", "x"
    )
    assert initial.exit_code == 1 and "initial model: no round produced it" in initial.stdout
    unknown = invoke("model", "ab" * 32, str(scenario.bundle), "--chain", "x")
    assert unknown.exit_code == 1 and "was produced by no round of job 1" in unknown.stdout
    nonsense = invoke("model", "not-a-model", str(scenario.bundle), "--chain", "x")
    assert nonsense.exit_code == 2 and "neither a model digest" in nonsense.stderr


def test_a_model_from_an_unverified_round_is_not_vouched_for(
    scenario: Scenario, tmp_path: Path
) -> None:
    bundle = copy_bundle(scenario, tmp_path)
    rounds = read_rounds(bundle)
    tensor = next(iter(json.loads(next(bundle.rglob(rounds[1]["model"][2:])).read_text()).values()))
    damaged = next(bundle.rglob(tensor[2:]))
    damaged.chmod(0o644)
    damaged.write_bytes(b"\x00" + damaged.read_bytes()[1:])
    with open_bundle(bundle) as opened:
        for number in (1, 2, 3):
            digest = bytes.fromhex(rounds[number - 1]["model"])
            provenance, problems = locate_model(opened, scenario.chain, digest)
            assert provenance.round == number
            # Round 1 precedes the damage; rounds 2 and 3 depend on it.
            assert provenance.verified == (number == 1), provenance.message
            assert bool(problems)
    assert model_digest_from("0x" + "AB" * 32) == bytes.fromhex("ab" * 32)


# ------------------------------------------------------------------------------ the script


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_job", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script, reaching the scenario's embedded chain whatever URL it gets (as the audit
    commands do, too) and leaving it open for the next test."""
    chain = reach_scenario_chain(scenario, monkeypatch)
    module = load_script()
    monkeypatch.setattr(module, "open_chain", lambda url: chain)
    return module


def test_the_script_imports_only_the_public_api() -> None:
    imports = [
        line.split()[1]
        for line in SCRIPT.read_text().splitlines()
        if line.startswith(("import ", "from "))
    ]
    assert [m for m in imports if m.startswith("consortium")] == ["consortium.audit"]


def test_the_script_gives_the_same_verdict_and_exit_codes(
    scenario: Scenario, script: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert script.main([str(scenario.bundle), "--chain", "http://node"]) == 0
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith("VERIFIED: every check holds (114 passed, 0 failed, 0 unverifiable)")
    )

    bundle = copy_bundle(scenario, tmp_path)
    edit_document(bundle, lambda m: m["rounds"].pop(1))
    assert script.main([str(bundle), "--chain", "http://node", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "fail"
    assert any(f["check"] == "sequence" and f["round"] == 3 for f in report["failures"])

    assert script.main([str(tmp_path / "nowhere"), "--chain", "http://node"]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_the_script_writes_the_report_consortium_audit_writes(
    scenario: Scenario, script: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "out" / "script.html"  # a missing directory is created
    args = [str(scenario.bundle), "--chain", "http://node", "--report"]
    assert script.main([*args, str(path)]) == 0
    verdict = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert verdict.startswith("VERIFIED")
    page = path.read_text(encoding="utf-8")
    assert f'<p class="verdict pass" id="verdict">{verdict}</p>' in page

    cli_path = tmp_path / "cli.html"
    assert invoke(*args, str(cli_path)).exit_code == 0

    def undated(html: str) -> str:
        return re.sub(r"<dt>generated at</dt><dd>[^<]*</dd>", "", html)

    assert undated(page) == undated(cli_path.read_text(encoding="utf-8"))


def test_the_script_refuses_an_unwritable_report_before_the_audit(
    scenario: Scenario,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    script = load_script()

    def no_audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the audit ran")

    monkeypatch.setattr(script, "verify_bundle", no_audit)
    args = [str(scenario.bundle), "--chain", "http://node", "--report", str(tmp_path)]
    assert script.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"error: cannot write the report to {tmp_path}: it is a directory"]


def test_the_script_keeps_the_verdict_when_the_report_fails(
    scenario: Scenario,
    script: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:

    def broken(self: AuditReport, chain: Chain) -> str:
        raise RuntimeError("plot failed")

    monkeypatch.setattr(AuditReport, "render", broken)
    path = tmp_path / "audit.html"
    assert script.main([str(scenario.bundle), "--chain", "x", "--report", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("VERIFIED") and not path.exists()
    assert err.splitlines() == ["error: the report could not be generated: plot failed"]


# ------------------------------------------------------------------------------ on anvil


@pytest.mark.anvil
def test_cli_and_script_against_anvil_and_after_a_restart(tmp_path: Path) -> None:
    """End to end as separate processes; then a restart loses the past state anvil does not
    persist, and membership, consent and events become unverifiable while everything else
    holds."""
    node = AnvilNode(tmp_path / "node", port=free_port(), chain_id=ANVIL_CHAIN_ID)
    try:
        node.start()
    except UsageError as exc:
        pytest.skip(str(exc))
    try:
        chain = RpcChain(node.url, ANVIL_CHAIN_ID, poll_latency=0.005)
        scenario = run_scenario(chain, tmp_path / "run", rounds=2)
        chain.close()
        script = subprocess.run(
            [sys.executable, str(SCRIPT), str(scenario.out / "bundle.tar.gz"), "--chain", node.url],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert script.returncode == 0, script.stdout + script.stderr
        assert script.stdout.startswith("VERIFIED")

        node.stop()
        node.start()
        after = subprocess.run(
            [sys.executable, str(SCRIPT), str(scenario.bundle), "--chain", node.url, "--json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert after.returncode == 1, after.stderr
        report = json.loads(after.stdout)
        assert report["status"] == "unverifiable" and report["failed"] == 0
        assert {f["check"] for f in report["failures"]} == {"membership", "consent", "events"}
        assert all(f["status"] == "unverifiable" for f in report["failures"])
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"[" * 100_000, "is not readable JSON: it nests arrays and objects more than 64 deep"),
        (b"{}", "not a model manifest (a JSON object of tensor digests)"),
        (b" " * (8 * 1024 * 1024 + 1), "is larger than 8,388,608 bytes"),
    ],
    ids=["deep", "empty", "oversized"],
)
def test_a_hostile_model_manifest_is_one_usage_error(
    tmp_path: Path, content: bytes, error: str
) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=re.escape(error)):
        model_digest_from(str(path))
