"""The tamper suite: damaged bundles and dishonest chains, each caught by the check meant for it.

A generator of damaged bundles (:func:`bundle_cases`) takes one honest AML job and damages a
copy of its bundle in one way per case: one byte flipped in a file of every kind, records
deleted, duplicated or reordered, updates swapped between participants, a model replaced, a
round dropped, the ledger moved to another deployment, the rounds claimed for a job created
after they were anchored, the deployment block moved; and the layout of ``rounds.jsonl``
damaged: a line that is not JSON, not an object, blank, too long or nested too deeply, rounds
swapped or repeated, the file cut short, a header that miscounts; and every fact the header
states about the chain changed alone (:func:`header_fact_cases`). Dishonest coordinators need
the chain too (:func:`chain_cases`): on a second job's chain the coordinator anchors rounds
that include a non-member's record, train from a stale base, or claim a model FedAvg does not
give; and a consent revoked before an anchoring block is shown to be refused by the contract
and caught by the consent check. Every case must fail the intended check with a message
naming the round, an untouched bundle must pass, and the detection rate is printed at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_files import (
    ROUNDS_FILE,
    Document,
    edit_document,
    read_document,
    read_manifest,
    read_rounds,
    write_document,
    write_manifest,
    write_rounds,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount

from consortium.audit import CheckResult, Scope, Verdict, open_bundle, verify_bundle
from consortium.audit.bundle import MAX_ROUND_LINE_BYTES
from consortium.audit.chainview import ChainView
from consortium.audit.checks import JobFacts, check_consent
from consortium.chain.embedded import EmbeddedChain
from consortium.crypto.canonical import jcs
from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import (
    SignedUpdateRecord,
    UpdateRecord,
    sign_update_record,
    sort_records,
)
from consortium.errors import ChainRevert
from consortium.fl.aggregation import fedavg
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.jobs import participant_mask
from consortium.ledger.roles import Role
from consortium.orchestration.bundle import export_bundle
from consortium.protocol.messages import anchor_to_json
from consortium.scenarios import aml
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import get_model, put_model

ROUNDS = 3


@dataclass
class Tamper:
    """One damaged bundle: how to damage it, and which check must catch it where."""

    name: str
    damage: Callable[[Path, Honest], None]
    check: str
    round: int | None
    mentions: str = ""  # text the failing message must hold; default "round <round>"
    pin_ledger: bool = False  # the auditor pins the honest ledger address

    @property
    def expected_text(self) -> str:
        return self.mentions or f"round {self.round}"


@dataclass
class Honest:
    """The honest job every bundle case starts from."""

    chain: EmbeddedChain
    run: aml.AmlRun
    bundle: Path
    other_deployment: Deployment
    later_job: int  # a job of the same parties, created after the honest job's rounds


# ------------------------------------------------------------------------------ helpers


def store_of(bundle: Path) -> ArtifactStore:
    """The bundle's object store (objects/ab/…)."""
    return ArtifactStore(bundle)


def object_path(bundle: Path, digest: str) -> Path:
    return store_of(bundle).path(bytes.fromhex(digest))


def record_of(bundle: Path, digest: str) -> dict[str, Any]:
    return json.loads(object_path(bundle, digest).read_bytes())


def model_manifest(bundle: Path, digest: str) -> dict[str, str]:
    return json.loads(object_path(bundle, digest).read_bytes())


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flips the lowest bit of one byte (the middle one by default); objects are read-only."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset is None else offset
    data[where] ^= 0x01
    path.write_bytes(bytes(data))


def flip_hex(text: str) -> str:
    """The same hex string with its first digit changed: one byte of the bundle's index."""
    first = "1" if text[0] == "0" else "0"
    return first + text[1:]


def edit_manifest(change: Callable[[Document], None]) -> Callable[[Path, Honest], None]:
    """Damage to the manifest and its rounds, edited as one document (bundle_files)."""
    return lambda bundle, honest: edit_document(bundle, change)


def edit_lines(change: Callable[[list[bytes]], None]) -> Callable[[Path, Honest], None]:
    """Damage to the raw lines of rounds.jsonl (each with its newline); the header stays."""

    def damage(bundle: Path, honest: Honest) -> None:
        path = bundle / ROUNDS_FILE
        lines = path.read_bytes().splitlines(keepends=True)
        change(lines)
        path.write_bytes(b"".join(lines))

    return damage


def flip_object(pick: Callable[[Path, Document], str]) -> Callable[[Path, Honest], None]:
    def damage(bundle: Path, honest: Honest) -> None:
        flip_byte(object_path(bundle, pick(bundle, read_document(bundle))))

    return damage


def record_digest(round_number: int, index: int) -> Callable[[Path, Document], str]:
    return lambda bundle, m: m["rounds"][round_number - 1]["records"][index]["digest"]


def update_manifest(round_number: int, index: int) -> Callable[[Path, Document], str]:
    return lambda bundle, m: record_of(bundle, record_digest(round_number, index)(bundle, m))[
        "updateDigest"
    ]


def first_tensor(
    model: Callable[[Path, Document], str],
) -> Callable[[Path, Document], str]:
    return lambda bundle, m: next(iter(model_manifest(bundle, model(bundle, m)).values()))


def participant_metrics(round_number: int, index: int) -> Callable[[Path, Document], str]:
    return lambda bundle, m: record_of(bundle, record_digest(round_number, index)(bundle, m))[
        "metricsDigest"
    ]


def global_model(round_number: int) -> Callable[[Path, Document], str]:
    return lambda bundle, m: m["rounds"][round_number - 1]["model"]


def round_metrics(round_number: int) -> Callable[[Path, Document], str]:
    return lambda bundle, m: m["rounds"][round_number - 1]["metrics"]


def swap_updates(round_number: int) -> Callable[[Path, Honest], None]:
    """Participants 0 and 1 of the round each get the other's update in their record; the
    records are re-stored and re-listed, so only their signatures can tell."""

    def damage(bundle: Path, honest: Honest) -> None:
        manifest = read_document(bundle)
        entries = manifest["rounds"][round_number - 1]["records"]
        first, second = (record_of(bundle, entries[i]["digest"]) for i in (0, 1))
        first["updateDigest"], second["updateDigest"] = (
            second["updateDigest"],
            first["updateDigest"],
        )
        store = store_of(bundle)
        for entry, record in zip(entries, (first, second), strict=False):
            entry["digest"] = store.put(jcs(record)).hex()
        write_document(bundle, manifest)

    return damage


def replace_model(round_number: int) -> Callable[[Path, Honest], None]:
    """Round ``round_number``'s model is swapped for a slightly different one everywhere the
    manifest names it (entry, anchor, the next round's predecessor)."""

    def damage(bundle: Path, honest: Honest) -> None:
        manifest = read_document(bundle)
        entry = manifest["rounds"][round_number - 1]
        store = store_of(bundle)
        model = get_model(store, bytes.fromhex(entry["model"]))
        forged = {name: np.array(t) * 1.001 for name, t in model.items()}
        digest = put_model(store, forged).hex()
        entry["model"] = entry["anchor"]["modelDigest"] = digest
        if round_number < len(manifest["rounds"]):
            manifest["rounds"][round_number]["anchor"]["previousModelDigest"] = digest
        write_document(bundle, manifest)

    return damage


def move_ledger(bundle: Path, honest: Honest) -> None:
    manifest = read_manifest(bundle)
    manifest["deployment"]["ledger"] = honest.other_deployment.ledger
    write_manifest(bundle, manifest)


def claim_later_job(bundle: Path, honest: Honest) -> None:
    """The bundle claims its rounds for a job created after they were anchored (for another
    job): identical on chain, but with no round of its own."""
    manifest = read_manifest(bundle)
    manifest["job"]["id"] = honest.later_job
    write_manifest(bundle, manifest)


def _ledger_is_another_contract(m: dict[str, Any]) -> None:
    m["deployment"]["ledger"] = m["deployment"]["consents"]


def _delete_record(m: dict[str, Any]) -> None:
    del m["rounds"][1]["records"][1]


def _duplicate_record(m: dict[str, Any]) -> None:
    records = m["rounds"][0]["records"]
    records.insert(1, dict(records[0]))


def _reorder_records(m: dict[str, Any]) -> None:
    records = m["rounds"][2]["records"]
    records[0], records[2] = records[2], records[0]
    for index, entry in enumerate(records):
        entry["leafIndex"] = index  # a careful forger keeps the indices in place


def _drop_round(index: int) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        del m["rounds"][index]

    return change


def _flip_field(*path: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = (
            flip_hex(node[path[-1]])
            if path[-1] != "transaction"
            else ("0x" + flip_hex(node[path[-1]][2:]))
        )

    return change


def _swap_transactions(m: dict[str, Any]) -> None:
    rounds = m["rounds"]
    rounds[0]["transaction"], rounds[1]["transaction"] = (
        rounds[1]["transaction"],
        rounds[0]["transaction"],
    )


def _bad_proof(m: dict[str, Any]) -> None:
    proof = m["rounds"][1]["records"][0]["proof"]
    proof[0] = flip_hex(proof[0])


def _invent_refusal(m: dict[str, Any]) -> None:
    m["rounds"][0]["refused"] = {m["job"]["participants"][0]: "late"}


def _drop_participant(m: dict[str, Any]) -> None:
    m["job"]["participants"] = m["job"]["participants"][1:]


def _round_beyond_uint32(m: dict[str, Any]) -> None:
    m["rounds"][0]["anchor"]["round"] = 2**32  # anchorRound takes a uint32


def _later_deployment_block(m: dict[str, Any]) -> None:
    m["deployment"]["block_number"] += 1


def _other_chain(m: dict[str, Any]) -> None:
    m["chainId"] += 1
    m["deployment"]["chain_id"] += 1


def _set(*path: Any, to: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    """A change of the header field at ``path`` to ``to(document)``."""

    def change(m: dict[str, Any]) -> None:
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = to(m)

    return change


def header_fact_cases() -> list[Tamper]:
    """One case per fact the manifest header states about the chain (docs/audit-bundle.md,
    "What the header states"), each changed alone and caught by the check that covers it.
    The job id, the ledger, the deployment block and the participants are the cases
    "rounds claimed for a job created after them", "ledger moved ...", "deployment block
    moved" and "participant left out of the job" above; the protocol has tests of its own
    (tests/test_audit.py): another one is refused unread, or fails the protocol check."""
    job = ("job",)

    def differs(field: str) -> str:
        return f"differs from getJob on chain in: {field}"

    return [
        Tamper(
            "header: chainId alone",
            edit_manifest(_set("chainId", to=lambda m: m["chainId"] + 1)),
            "chain",
            None,
            mentions="the bundle is for chain",
        ),
        Tamper(
            "header: the deployment's chain_id",
            edit_manifest(_set("deployment", "chain_id", to=lambda m: m["chainId"] + 1)),
            "deployment",
            None,
            mentions="the deployment is on chain",
        ),
        Tamper(
            "header: the registry",
            edit_manifest(_set("deployment", "registry", to=lambda m: m["deployment"]["consents"])),
            "deployment",
            None,
            mentions="the manifest names registry",
        ),
        Tamper(
            "header: the consent registry",
            edit_manifest(_set("deployment", "consents", to=lambda m: m["deployment"]["registry"])),
            "deployment",
            None,
            mentions="the manifest names consent registry",
        ),
        Tamper(
            "header: the deployer",
            edit_manifest(_set("deployment", "deployer", to=lambda m: m["job"]["consumer"])),
            "deployer",
            None,
            mentions="the manifest names deployer",
        ),
        Tamper(
            "header: the job's purpose",
            edit_manifest(_set(*job, "purpose", to=lambda m: m["job"]["purpose"] + "-marketing")),
            "job",
            None,
            mentions=differs("purpose"),
        ),
        Tamper(
            "header: the job's coordinator",
            edit_manifest(_set(*job, "coordinator", to=lambda m: m["job"]["consumer"])),
            "job",
            None,
            mentions=differs("coordinator"),
        ),
        Tamper(
            "header: the job's consumer",
            edit_manifest(_set(*job, "consumer", to=lambda m: m["job"]["participants"][-1])),
            "job",
            None,
            mentions=differs("consumer"),
        ),
        Tamper(
            "header: the job's datasets",
            edit_manifest(_set(*job, "datasets", to=lambda m: m["job"]["datasets"][:-1])),
            "job",
            None,
            mentions=differs("datasets"),
        ),
        Tamper(
            "header: the job's model spec",
            edit_manifest(_flip_field("job", "modelSpec")),
            "job",
            None,
            mentions=differs("modelSpec"),
        ),
        Tamper(
            "header: the job's initial model",
            edit_manifest(_flip_field("job", "initialModel")),
            "job",
            None,
            mentions=differs("initialModel"),
        ),
        Tamper(
            "header announcing more rounds than rounds.jsonl holds",
            announce_rounds(+1),
            "manifest",
            None,
            mentions="rounds.jsonl holds 3 line(s), the manifest announces 4 round entries",
        ),
    ]


def _swap_rounds(m: dict[str, Any]) -> None:
    rounds = m["rounds"]
    rounds[0], rounds[1] = rounds[1], rounds[0]


def _repeat_round(m: dict[str, Any]) -> None:
    m["rounds"].insert(2, m["rounds"][1])


def _garble_line(lines: list[bytes]) -> None:
    lines[1] = lines[1][: len(lines[1]) // 2] + b"\n"


def _array_line(lines: list[bytes]) -> None:
    lines[1] = b"[2]\n"


def _blank_line(lines: list[bytes]) -> None:
    lines.insert(1, b"\n")


def _trailing_blank_line(lines: list[bytes]) -> None:
    lines.append(b"\n")


def _cut_last_line(lines: list[bytes]) -> None:
    del lines[-1]


def _overlong_line(lines: list[bytes]) -> None:
    """Round 2's line padded with an unknown field to one byte beyond the reader's bound."""
    padding = b',"padding":"' + b"x" * MAX_ROUND_LINE_BYTES + b'"}\n'
    lines[1] = lines[1].rstrip(b"\n")[:-1] + padding


def _nested_line(lines: list[bytes]) -> None:
    """A line that is one array inside the next, deeper than Python's recursion limit."""
    lines[1] = b"[" * 100_000 + b"]" * 100_000 + b"\n"


def nested_record(bundle: Path, honest: Honest) -> None:
    """Round 2's first record is swapped for an object of arrays nested deeper than Python's
    parser can recurse, stored under its own digest."""
    document = read_document(bundle)
    nested = store_of(bundle).put(b"[" * 100_000 + b"]" * 100_000)
    document["rounds"][1]["records"][0]["digest"] = nested.hex()
    write_document(bundle, document)


def announce_rounds(change: int) -> Callable[[Path, Honest], None]:
    """The header's roundCount moved by ``change``; rounds.jsonl stays as exported."""

    def damage(bundle: Path, honest: Honest) -> None:
        manifest = read_manifest(bundle)
        manifest["roundCount"] += change
        write_manifest(bundle, manifest)

    return damage


def bundle_cases() -> list[Tamper]:
    """The damaged bundles, one per way a bundle can lie."""
    return [
        Tamper("flip a byte: record", flip_object(record_digest(1, 0)), "objects", 1),
        Tamper("flip a byte: update manifest", flip_object(update_manifest(2, 1)), "objects", 2),
        Tamper(
            "flip a byte: update tensor",
            flip_object(first_tensor(update_manifest(3, 2))),
            "objects",
            3,
        ),
        Tamper(
            "flip a byte: participant metrics",
            flip_object(participant_metrics(1, 2)),
            "objects",
            1,
        ),
        Tamper("flip a byte: global model manifest", flip_object(global_model(3)), "objects", 3),
        Tamper(
            "flip a byte: global model tensor",
            flip_object(first_tensor(global_model(2))),
            "objects",
            2,
        ),
        Tamper("flip a byte: round metrics", flip_object(round_metrics(3)), "objects", 3),
        Tamper(
            "flip a byte: initial model tensor",
            flip_object(first_tensor(lambda b, m: m["job"]["initialModel"])),
            "objects",
            None,
            mentions="base of round 1",
        ),
        Tamper(
            "flip a byte in the manifest: merkle root",
            edit_manifest(_flip_field("rounds", 1, "anchor", "merkleRoot")),
            "anchored",
            2,
        ),
        Tamper(
            "flip a byte in the manifest: record digest",
            edit_manifest(_flip_field("rounds", 2, "records", 1, "digest")),
            "objects",
            3,
        ),
        Tamper(
            "flip a byte in the manifest: transaction",
            edit_manifest(_flip_field("rounds", 0, "transaction")),
            "transaction",
            1,
        ),
        Tamper("record deleted", edit_manifest(_delete_record), "merkle-root", 2),
        Tamper("record duplicated", edit_manifest(_duplicate_record), "leaf-order", 1),
        Tamper("records reordered", edit_manifest(_reorder_records), "leaf-order", 3),
        Tamper("update swapped between participants", swap_updates(2), "signature", 2),
        Tamper("model replaced", replace_model(2), "aggregation", 2),
        Tamper(
            "middle round dropped",
            edit_manifest(_drop_round(1)),
            "sequence",
            3,
            mentions="round 2 is missing",
        ),
        Tamper(
            "last round dropped",
            edit_manifest(_drop_round(2)),
            "complete",
            None,
            mentions="round(s) 3 anchored on chain but not in the bundle",
        ),
        Tamper("transactions swapped", edit_manifest(_swap_transactions), "transaction", 2),
        Tamper("inclusion proof altered", edit_manifest(_bad_proof), "inclusion-proof", 2),
        Tamper("refusal invented", edit_manifest(_invent_refusal), "round-metrics", 1),
        Tamper(
            "participant left out of the job",
            edit_manifest(_drop_participant),
            "job",
            None,
            mentions="differs from getJob on chain in: participants",
        ),
        Tamper("ledger moved to another deployment", move_ledger, "anchored", 1),
        Tamper(
            "rounds claimed for a job created after them",
            claim_later_job,
            "anchored",
            1,
            mentions="the chain holds no anchor of this round",
        ),
        Tamper(
            "anchor round beyond what the contract takes",
            edit_manifest(_round_beyond_uint32),
            "manifest",
            1,
            mentions="field 'round' must be at most 4294967295",
        ),
        Tamper(
            "deployment block moved",
            edit_manifest(_later_deployment_block),
            "events",
            1,
            mentions="is not where registry",
        ),
        Tamper(
            "ledger moved, auditor pins the real one",
            move_ledger,
            "deployment",
            None,
            mentions="the auditor trusts",
            pin_ledger=True,
        ),
        Tamper(
            "ledger replaced by other code",
            edit_manifest(_ledger_is_another_contract),
            "code",
            None,
            mentions="TrainingLedger at",
        ),
        Tamper(
            "another chain",
            edit_manifest(_other_chain),
            "chain",
            None,
            mentions="the bundle is for chain",
        ),
        Tamper(
            "rounds swapped in rounds.jsonl",
            edit_manifest(_swap_rounds),
            "sequence",
            2,
            mentions="round 1 is missing",
        ),
        Tamper(
            "round repeated in rounds.jsonl",
            edit_manifest(_repeat_round),
            "sequence",
            2,
            mentions="round 2 comes after round 2 in the bundle: repeated",
        ),
        Tamper(
            "a line of rounds.jsonl cut in half",
            edit_lines(_garble_line),
            "manifest",
            2,
            mentions="round entry 2 of rounds.jsonl is malformed: the line is not JSON",
        ),
        Tamper(
            "a line of rounds.jsonl that is not an object",
            edit_lines(_array_line),
            "manifest",
            2,
            mentions="round entry 2 of rounds.jsonl is malformed: a round entry must be an object",
        ),
        Tamper(
            "a blank line in rounds.jsonl",
            edit_lines(_blank_line),
            "manifest",
            2,
            mentions="round entry 2 of rounds.jsonl is malformed: the line is blank",
        ),
        Tamper(
            "a trailing blank line in rounds.jsonl",
            edit_lines(_trailing_blank_line),
            "manifest",
            4,
            mentions="round entry 4 of rounds.jsonl is malformed: the line is blank",
        ),
        Tamper(
            "a line of rounds.jsonl beyond the reader's bound",
            edit_lines(_overlong_line),
            "manifest",
            2,
            mentions=f"the line is longer than {MAX_ROUND_LINE_BYTES:,} bytes",
        ),
        Tamper(
            "a line of rounds.jsonl nested too deeply",
            edit_lines(_nested_line),
            "manifest",
            2,
            mentions="the line is not readable JSON",
        ),
        Tamper(
            "a record object nested too deeply",
            nested_record,
            "record",
            2,
            mentions="record 0 is unusable: it is not an update record: not readable JSON",
        ),
        Tamper(
            "rounds.jsonl cut short",
            edit_lines(_cut_last_line),
            "manifest",
            None,
            mentions="rounds.jsonl holds 2 line(s), the manifest announces 3 round entries",
        ),
        Tamper(
            "header announcing fewer rounds than rounds.jsonl holds",
            announce_rounds(-1),
            "manifest",
            None,
            mentions="rounds.jsonl holds 3 line(s), the manifest announces 2 round entries",
        ),
    ]


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Outcomes:
    """What each case did, for the detection-rate summary."""

    rows: list[tuple[str, str, bool]] = field(default_factory=list)


OUTCOMES = Outcomes()


@pytest.fixture(scope="module", autouse=True)
def detection_rate(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the cases and the detection rate when the module is done."""
    yield
    rows = OUTCOMES.rows
    if not rows:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = [f"tamper suite: {sum(d for *_, d in rows)}/{len(rows)} damaged cases detected"]
    lines += [f"  {'detected' if d else 'MISSED  '}  {name}  ({check})" for name, check, d in rows]
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def audit(chain: EmbeddedChain, bundle: Path, ledger: str | None = None) -> tuple[Verdict, list]:
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        results = [verdict.add(r) for r in verify_bundle(opened, chain, ledger=ledger)]
    return verdict, results


def set_up(chain: EmbeddedChain, out: Path, rounds: int) -> tuple[aml.AmlRun, Path]:
    run = aml.set_up(chain, out, aml.AmlSettings(banks=3, rounds=rounds, seed=11), lambda _: None)
    aml.run_rounds(chain, run, lambda _: None)
    ledger = Ledger(chain, run.deployment)
    return run, export_bundle(
        ledger, run.job_id, run.institute.store, run.institute.journal_reader(), out
    )


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Honest]:
    chain = EmbeddedChain()
    run, bundle = set_up(chain, tmp_path_factory.mktemp("honest"), ROUNDS)
    # A second deployment of the same contracts on the same chain: same code, no such job.
    other = deploy(
        chain,
        run.institute.account,
        [Founder(run.institute.account.address, "Other Institute", Role.COORDINATOR)],
        quorum_bps=5000,
        proposal_lifetime=86_400,
    )
    job = Ledger(chain, run.deployment).jobs.get(run.job_id)
    later = Ledger(chain, run.deployment, run.institute.account).jobs.create(
        purpose=job.purpose,
        model_spec_digest=job.model_spec_digest,
        initial_model_digest=job.initial_model_digest,
        consumer=job.consumer,
        participants=job.participants,
        dataset_ids=job.dataset_ids,
    )
    yield Honest(chain, run, bundle, other, later)
    chain.close()


def detect(case: Tamper, results: list[CheckResult]) -> list[CheckResult]:
    return [
        r
        for r in results
        if r.name == case.check
        and r.round == case.round
        and not r.ok
        and case.expected_text in r.message
    ]


# ------------------------------------------------------------------------------ bundle cases


def test_an_untouched_bundle_passes(honest: Honest, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(honest.bundle, tmp_path / "bundle"))
    verdict, results = audit(honest.chain, copy, ledger=honest.run.deployment.ledger)
    assert verdict.ok, [r.message for r in results if not r.ok]


@pytest.mark.parametrize(
    "case", [*bundle_cases(), *header_fact_cases()], ids=lambda case: case.name
)
def test_a_damaged_bundle_is_caught_by_the_intended_check(
    case: Tamper, honest: Honest, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(honest.bundle, tmp_path / "bundle"))
    case.damage(copy, honest)
    pinned = honest.run.deployment.ledger if case.pin_ledger else None
    verdict, results = audit(honest.chain, copy, ledger=pinned)
    caught = detect(case, results)
    OUTCOMES.rows.append((case.name, case.check, bool(caught) and not verdict.ok))
    assert not verdict.ok and verdict.exit_code == 1
    assert caught, (
        f"{case.name}: no failed {case.check!r} check in round {case.round} mentioning "
        f"{case.expected_text!r}; failures: {[r.message for r in results if not r.ok]}"
    )


# ------------------------------------------------------------------------------ chain cases


@dataclass
class Dishonest:
    """A job whose coordinator anchored forged rounds, and its bundle with those rounds."""

    chain: EmbeddedChain
    run: aml.AmlRun
    bundle: Path
    revoked: tuple[int, int] = (0, 0)  # (dataset id, block of the revocation)


def forge_round(
    chain: EmbeddedChain,
    run: aml.AmlRun,
    bundle: Path,
    signers: list[LocalAccount],
    *,
    base: bytes | None = None,
    model_scale: float = 1.0,
) -> None:
    """The coordinator anchors a round of its own making and adds it to the bundle.

    Each signer signs an update (the base model nudged) trained from ``base`` (default: the
    job's head, as an honest round would); the model is FedAvg of the updates times
    ``model_scale`` (1: honest). Everything is stored and anchored correctly, so only the
    checks of what the round says can object.
    """
    ledger = Ledger(chain, run.deployment, run.institute.account)
    job = ledger.jobs.get(run.job_id)
    round_number = job.last_round + 1
    base_digest = job.head_model_digest if base is None else base
    store = store_of(bundle)
    base_model = get_model(store, job.head_model_digest)
    domain = Domain(chain.chain_id, run.deployment.ledger)
    signed, updates = [], {}
    for index, account in enumerate(signers):
        update = {name: t + 0.01 * (index + 1) for name, t in base_model.items()}
        examples = 100 * (index + 1)
        metrics = store.put_json({"numExamples": examples, "trainLogLoss": 0.5})
        record = UpdateRecord(
            run.job_id,
            round_number,
            account.address,
            put_model(store, update),
            base_digest,
            examples,
            metrics,
        )
        signed.append(sign_update_record(account, domain, record))
        updates[account.address] = update
    ordered: list[SignedUpdateRecord] = sort_records(signed)
    model = fedavg(
        [
            (r.record.participant, updates[r.record.participant], r.record.num_examples)
            for r in ordered
        ]
    )
    model = {name: t * model_scale for name, t in model.items()}
    model_digest = put_model(store, model)
    digests = [store.put_json(r.to_json()) for r in ordered]
    tree = MerkleTree(store.get(d) for d in digests)
    accepted = [r.record.participant for r in ordered]
    refused = {p: "no update" for p in job.participants if p not in accepted}
    round_metrics = store.put_json(
        {
            "round": round_number,
            "validation": {},
            "accepted": accepted,
            "examples": sum(r.record.num_examples for r in ordered),
            "refused": refused,
        }
    )
    # A mask names the job's participants only: an outsider's record is under the root uncounted.
    mask = participant_mask(job.participants, [p for p in accepted if p in job.participants])
    anchor, receipt = ledger.jobs.anchor(
        run.job_id, round_number, tree.root, mask, model_digest, round_metrics
    )
    rounds = read_rounds(bundle)
    rounds.append(
        {
            "round": round_number,
            "anchor": anchor_to_json(anchor),
            "transaction": receipt["transactionHash"].to_0x_hex(),
            "records": [
                {
                    "digest": d.hex(),
                    "leafIndex": i,
                    "proof": [p.hex() for p in tree.inclusion_proof(i)],
                }
                for i, d in enumerate(digests)
            ],
            "refused": refused,
            "model": model_digest.hex(),
            "metrics": round_metrics.hex(),
        }
    )
    write_rounds(bundle, rounds)


@pytest.fixture(scope="module")
def dishonest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dishonest]:
    """Round 1 honest; round 2 holds an outsider's record; round 3's records train from the
    initial model; round 4's model is not FedAvg of its updates. Then a consent is revoked."""
    chain = EmbeddedChain()
    run, bundle = set_up(chain, tmp_path_factory.mktemp("dishonest"), 1)
    outsider: LocalAccount = Account.create()
    banks = [bank.account for bank in run.banks]
    forge_round(chain, run, bundle, [banks[0], outsider])
    initial = Ledger(chain, run.deployment).jobs.get(run.job_id).initial_model_digest
    forge_round(chain, run, bundle, banks[:2], base=initial)
    forge_round(chain, run, bundle, banks, model_scale=1.5)
    # Bank 1 revokes the consumer's consent; the contract then accepts no anchor naming bank 1.
    dataset_id = 2
    receipt = Ledger(chain, run.deployment, run.banks[1].account).consents.revoke(
        dataset_id, run.banks[0].account.address, aml.PURPOSE
    )
    yield Dishonest(chain, run, bundle, (dataset_id, receipt["blockNumber"]))
    chain.close()


CHAIN_CASES = [
    ("a non-member's record in an anchored round", "record", 2),
    ("a non-member's record in an anchored round", "membership", 2),
    ("records trained from a stale base model", "base-model", 3),
    ("an anchored model that FedAvg does not give", "aggregation", 4),
]


@pytest.mark.parametrize(("name", "check", "round_number"), CHAIN_CASES)
def test_a_dishonest_coordinator_is_caught_by_the_intended_check(
    name: str, check: str, round_number: int, dishonest: Dishonest
) -> None:
    verdict, results = audit(dishonest.chain, dishonest.bundle)
    case = Tamper(name, lambda bundle, honest: None, check, round_number)
    caught = detect(case, results)
    OUTCOMES.rows.append((name, check, bool(caught) and not verdict.ok))
    assert caught, [r.message for r in results if not r.ok]
    # The honest round stays verified beside the forged ones.
    assert all(r.ok for r in results if r.round == 1)


def test_a_consent_revoked_before_an_anchoring_block_is_caught(dishonest: Dishonest) -> None:
    """The contract itself refuses to anchor a round naming the participant whose consent is
    revoked; and were one anchored after the revocation, the consent check would fail it: shown
    here by reading the state as of the revocation block, as the verifier does for the block
    before an anchor."""
    run, chain = dishonest.run, dishonest.chain
    with pytest.raises(ChainRevert) as refused:
        forge_round(chain, run, dishonest.bundle, [run.banks[0].account, run.banks[1].account])
    assert refused.value.name == "ConsentNotValid"

    dataset_id, block = dishonest.revoked
    view = ChainView(chain, run.deployment.ledger, run.deployment)
    job = view.job(run.job_id)
    facts = JobFacts.of(
        _manifest_job(dishonest.bundle), job, Domain(chain.chain_id, run.deployment.ledger)
    )
    owner = view.dataset_owners_at([dataset_id], block)[dataset_id]
    assert owner is not None
    result = check_consent(
        Scope(run.job_id, job.last_round + 1, owner),
        dataset_id,
        owner,
        view.members_at([owner], block)[owner],
        view.consents_at([dataset_id], job.consumer, job.purpose, block)[dataset_id],
        facts,
        view.block(block).timestamp + 1,
        block,
    )
    detected = not result.ok and "the consent is revoked" in result.message
    OUTCOMES.rows.append(("consent revoked before an anchoring block", "consent", detected))
    assert detected, result.message
    assert f"round {job.last_round + 1}" in result.message
    # The same check passed for every round actually anchored (before the revocation).
    _, results = audit(chain, dishonest.bundle)
    assert all(r.ok for r in results if r.name == "consent")


def _manifest_job(bundle: Path) -> Any:
    with open_bundle(bundle) as opened:
        return opened.job
