"""The audit of hetero-lr/1 jobs: a vertical job's bundle, exported through the one export path,
verifies with every check of the protocol reported (what is not re-computed said in words);
edits of the bundle and a dishonest coordinator's anchors each fail the check meant for them."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from bundle_files import read_manifest, read_rounds, write_rounds
from vertical_job import Job, new_engine, new_job, run

from consortium.audit import CheckResult, Verdict, open_bundle, verify_bundle
from consortium.crypto.canonical import jcs
from consortium.crypto.merkle import MerkleTree
from consortium.ledger.client import Ledger
from consortium.orchestration.export import export_job
from consortium.protocol.base import RoundIntent, RoundStart
from consortium.protocol.bundles import NoBundleLayout, bundle_layout
from consortium.protocol.messages import RoundReceipt
from consortium.protocol.vertical.audit import CHECK_NAMES, NOT_RECOMPUTED, transcript_problems
from consortium.protocol.vertical.round import PROTOCOL_ID, HeteroLRRound
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal
from consortium.timing import Timings

Edit = Callable[[HeteroLRRound, RoundIntent, list[RoundIntent]], RoundIntent]


@dataclass
class Dishonest:
    """A coordinator that anchors its honest round's intent edited in some rounds, and hands
    out no receipts (a party's own check of its receipt would raise the alarm)."""

    honest: HeteroLRRound
    edits: dict[int, Edit]
    intents: list[RoundIntent] = field(default_factory=list)
    protocol_id: str = PROTOCOL_ID

    @property
    def store(self) -> ArtifactStore:
        return self.honest.store

    def run_round(self, start: RoundStart, timings: Timings) -> RoundIntent:
        intent = self.honest.run_round(start, timings)
        edit = self.edits.get(start.round)
        intent = intent if edit is None else edit(self.honest, intent, self.intents)
        self.intents.append(intent)
        return intent

    def deliver(self, party: str, receipt: RoundReceipt) -> None:
        return None


def _converged_early(
    round_: HeteroLRRound, intent: RoundIntent, _: list[RoundIntent]
) -> RoundIntent:
    metrics = round_.store.get_json(intent.metrics)
    return replace(intent, metrics=round_.store.put_json({**metrics, "converged": True}))


def _host_record_of_round_1(
    round_: HeteroLRRound, intent: RoundIntent, earlier: list[RoundIntent]
) -> RoundIntent:
    host = intent.participants.index(round_.host.address)
    records = list(intent.records)
    records[host] = earlier[0].records[earlier[0].participants.index(round_.host.address)]
    root = MerkleTree(round_.store.get(d) for d in records).root
    return replace(intent, records=tuple(records), root=root)


def _other_host_commitment(
    round_: HeteroLRRound, intent: RoundIntent, _: list[RoundIntent]
) -> RoundIntent:
    model = round_.store.get_json(intent.model)
    weights = {**model["weights"], round_.host.address: hashlib.sha256(b"other").hexdigest()}
    return replace(intent, model=round_.store.put_json({**model, "weights": weights}))


# Each fault of the dishonest job, in its own round, and the checks that must fail there.
FAULTS: dict[int, tuple[str, Edit, set[str]]] = {
    1: ("round metrics claiming converged early", _converged_early, {"round-metrics"}),
    2: (
        "the host's record of round 1 in round 2",
        _host_record_of_round_1,
        {"record", "base-model", "contribution", "transcript", "aggregation"},
    ),
    3: (
        "a commitment in the model changed",
        _other_host_commitment,
        {"contribution", "aggregation"},
    ),
}


def _export(job: Job, rounds: int, edits: dict[int, Edit] | None = None) -> Path:
    """Runs the job (dishonestly if ``edits``) and exports its bundle the one way there is."""
    engine, honest = new_engine(
        job, wrap=None if edits is None else (lambda honest: Dishonest(honest, edits))
    )
    run(engine, honest, rounds)
    ledger = Ledger(job.chain, job.deployment, job.institute)
    journal = Journal(job.directory / "institute" / "journal.jsonl")
    try:
        return export_job(ledger, job.job_id, honest.store, journal, job.directory / "out").bundle
    finally:
        journal.close()


def _audit(job: Job, bundle: Path) -> tuple[Verdict, list[CheckResult]]:
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        results = [verdict.add(r) for r in verify_bundle(opened, job.chain)]
    return verdict, results


@dataclass
class Audited:
    job: Job
    bundle: Path
    verdict: Verdict
    results: list[CheckResult]


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Audited:
    job = new_job(tmp_path_factory.mktemp("honest"))
    bundle = _export(job, job.terms.config.max_epochs)
    return Audited(job, bundle, *_audit(job, bundle))


@pytest.fixture(scope="module")
def dishonest(tmp_path_factory: pytest.TempPathFactory) -> Audited:
    job = new_job(tmp_path_factory.mktemp("dishonest"))
    bundle = _export(job, len(FAULTS), {r: edit for r, (_, edit, _) in FAULTS.items()})
    return Audited(job, bundle, *_audit(job, bundle))


def _failed(results: list[CheckResult], round_number: int) -> set[str]:
    return {r.name for r in results if r.round == round_number and not r.ok}


def test_a_vertical_jobs_bundle_verifies(honest: Audited) -> None:
    assert honest.verdict.ok, [r.message for r in honest.results if not r.ok]
    assert read_manifest(honest.bundle)["protocol"] == PROTOCOL_ID
    rounds = {r.round for r in honest.results if r.round is not None}
    assert len(rounds) >= 2
    for round_number in rounds:
        names = {r.name for r in honest.results if r.round == round_number}
        assert set(CHECK_NAMES) <= names
    aggregation = [r for r in honest.results if r.name == "aggregation"]
    assert len(aggregation) == len(rounds)
    assert all(r.ok and r.message.endswith(f": {NOT_RECOMPUTED}") for r in aggregation)
    last = max(rounds)
    assert "converged, the job's last round" in next(
        r.message for r in honest.results if r.name == "round-metrics" and r.round == last
    )


def test_the_bundle_holds_json_objects_only(honest: Audited) -> None:
    """No tensor: no weight, feature or id leaves a party, only commitments and digests."""
    objects = [p for p in (honest.bundle / "objects").rglob("*") if p.is_file()]
    for path in objects:
        assert jcs(json.loads(path.read_bytes())) == path.read_bytes()


def _edit_host_transcript(bundle: Path, in_place: bool) -> None:
    """Drops the first digest the host received in round 1 (one the guest sent). In place: the
    object's bytes no longer hash to its name. Otherwise: the edited object is stored under
    its own digest and the host's record is made to name it, which its signature does not
    cover."""
    store = ArtifactStore(bundle)
    rounds = read_rounds(bundle)
    for item in rounds[0]["records"]:
        record = store.get_json(bytes.fromhex(item["digest"]))
        contribution = store.get_json(bytes.fromhex(record["updateDigest"]))
        if contribution["party"] != "host":
            continue
        edited = jcs({**contribution, "received": contribution["received"][1:]})
        if in_place:
            path = store.path(bytes.fromhex(record["updateDigest"]))
            path.chmod(0o644)
            path.write_bytes(edited)
            return
        record = {**record, "updateDigest": store.put(edited).hex()}
        item["digest"] = store.put(jcs(record)).hex()
    write_rounds(bundle, rounds)


@pytest.mark.parametrize(
    ("in_place", "expected"),
    [
        (True, {"objects", "contribution", "transcript", "aggregation"}),
        (False, {"signature", "merkle-root", "inclusion-proof", "transcript", "aggregation"}),
    ],
    ids=["object-edited-in-place", "record-renamed-to-edited-object"],
)
def test_an_edited_transcript_fails(
    honest: Audited, tmp_path: Path, in_place: bool, expected: set[str]
) -> None:
    """In place, the objects check catches the edit and the contribution is unreadable; under
    a new digest, the contribution reads well but the record's signature no longer recovers
    the host (the record check, which judges job, round and participant, holds), and the
    transcripts no longer fit together."""
    bundle = tmp_path / "bundle"
    shutil.copytree(honest.bundle, bundle)
    _edit_host_transcript(bundle, in_place)
    verdict, results = _audit(honest.job, bundle)
    assert not verdict.ok
    assert _failed(results, 1) == expected
    assert all(_failed(results, r) == set() for r in {r.round for r in results} - {1, None})


@pytest.mark.parametrize("round_number", sorted(FAULTS), ids=[f[0] for f in FAULTS.values()])
def test_a_dishonest_coordinators_anchor_fails(dishonest: Audited, round_number: int) -> None:
    _, _, expected = FAULTS[round_number]
    assert _failed(dishonest.results, round_number) == expected
    assert _failed(dishonest.results, None) == set()


def test_the_failures_name_the_fault(dishonest: Audited) -> None:
    message = next(r.message for r in dishonest.results if r.name == "round-metrics" and not r.ok)
    assert (
        "round 1:" in message and "converged, yet the chain's last anchored round is 3" in message
    )
    record = next(r for r in dishonest.results if r.name == "record" and not r.ok)
    assert record.round == 2 and "it is for round 1" in record.message
    contribution = [r for r in dishonest.results if r.name == "contribution" and not r.ok]
    assert [r.round for r in contribution] == [2, 3]
    assert all("is not the one the round's model names" in r.message for r in contribution)
    # What was not re-computed is said in failed rounds too.
    aggregation = [r for r in dishonest.results if r.name == "aggregation" and not r.ok]
    assert [r.round for r in aggregation] == [2, 3]
    assert all(NOT_RECOMPUTED in r.message for r in aggregation)


def test_transcripts_that_do_not_fit() -> None:
    fine = {"guest": (["a"], ["b", "v"]), "host": (["b"], ["a", "v"]), "arbiter": (["v"], [])}
    assert transcript_problems(fine) == []
    own = {"guest": (["a"], ["a"]), "host": ([], [])}
    assert transcript_problems(own) == [
        "the guest received its own message a",
        "the guest sent a, which no other party received",
    ]
    swapped = {"guest": (["a", "b"], []), "host": ([], ["b", "a"])}
    assert transcript_problems(swapped) == ["the host received the guest's messages out of order"]


def test_a_protocol_without_a_bundle_layout_is_refused() -> None:
    with pytest.raises(NoBundleLayout, match=r"^job protocol 'x/9' is not one a bundle can be"):
        bundle_layout("x/9")
