"""The coordinator journal's one-writer lock, and its repair from the chain and the store.

Two writers on one journal interleave their lines and damage it for good, so a second writer
is refused, naming the first; and a journal damaged anyway is rebuilt by ``repair_journal``
from what the chain and the coordinator's store still hold, after which the job resumes,
exports and audits as if nothing had happened.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from journal_holder import journal_held_elsewhere

from consortium.audit.bundle import open_bundle
from consortium.audit.results import Verdict
from consortium.audit.verifier import verify_bundle
from consortium.chain.embedded import EmbeddedChain
from consortium.ledger.client import Ledger
from consortium.lockfile import LockHeld
from consortium.orchestration.anchorer import JournalMismatch
from consortium.orchestration.bundle import export_bundle
from consortium.orchestration.repair import RepairFailed, repair_journal
from consortium.scenarios import aml
from consortium.store.journal import CorruptJournal, Journal, JournalReader

ROUNDS = 3

# ------------------------------------------------------------------------------ the lock


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = Journal(tmp_path / "journal.jsonl")
    first.append("job", jobId=1)
    with pytest.raises(LockHeld, match=rf"journal .* is in use by process {os.getpid()} \("):
        Journal(tmp_path / "journal.jsonl")
    assert JournalReader(tmp_path / "journal.jsonl").last("job") == {
        "seq": 0,
        "kind": "job",
        "jobId": 1,
    }  # a reader needs no lock
    first.close()
    again = Journal(tmp_path / "journal.jsonl")  # given up on close
    assert [e["kind"] for e in again] == ["job"]
    again.close()


def test_another_process_holding_the_journal_is_named_and_its_death_frees_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    with journal_held_elsewhere(path) as pid, pytest.raises(LockHeld, match=rf"process {pid} "):
        Journal(path)
    Journal(path).close()  # SIGKILL left no stale lock


def test_a_damaged_journal_names_the_repair(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"kind":"job","seq":0}\n{"kind":"intent",\n{"kind":"x","seq":2}\n')
    with pytest.raises(CorruptJournal, match=r"line 2 is damaged.*consortium journal repair"):
        Journal(path)


# ------------------------------------------------------------------------------ repair


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedChain, Path]]:
    """A three-round AML job on the embedded chain, run to the end; the tests copy its
    directory before damaging anything."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("job")
    run = aml.set_up(chain, out, aml.AmlSettings(3, ROUNDS, 7, 1), report=lambda _: None)
    aml.run_rounds(chain, run, lambda _: None)
    yield chain, out


def _copy(out: Path, tmp_path: Path) -> Path:
    subprocess.run(["cp", "-a", str(out), str(tmp_path / "run")], check=True)
    return tmp_path / "run"


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _audit(chain: EmbeddedChain, run: aml.AmlRun, out: Path) -> tuple[str, int]:
    """The auditor's status and round count for the job's bundle, exported afresh."""
    bundle = export_bundle(
        Ledger(chain, run.deployment), run.job_id, run.institute.store,
        run.institute.journal_reader(), out,
    )  # fmt: skip
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        for result in verify_bundle(opened, chain):
            verdict.add(result)
    return verdict.status, verdict.rounds


def _repair(chain: EmbeddedChain, out: Path) -> tuple[aml.AmlRun, object]:
    run = aml.load(chain, out)
    path = run.institute.directory / "journal.jsonl"
    report = repair_journal(path, run.institute.store, Ledger(chain, run.deployment), run.job_id)
    return run, report


def test_a_sound_journal_is_left_untouched(
    finished_job: tuple[EmbeddedChain, Path], tmp_path: Path
) -> None:
    chain, original = finished_job
    out = _copy(original, tmp_path)
    path = out / "parties" / "institute" / "journal.jsonl"
    before = path.read_bytes()
    _, report = _repair(chain, out)
    assert not report.changed and report.kept_copy is None
    assert path.read_bytes() == before
    assert not list(path.parent.glob("journal.jsonl.damaged-*"))


@pytest.mark.parametrize(
    "damage",
    ["garbled middle line", "interleaved writers", "rounds cut away", "job entry lost"],
)
def test_a_damaged_journal_is_rebuilt_and_the_job_audits(
    finished_job: tuple[EmbeddedChain, Path], tmp_path: Path, damage: str
) -> None:
    chain, original = finished_job
    out = _copy(original, tmp_path)
    path = out / "parties" / "institute" / "journal.jsonl"
    lines = _lines(path)
    damaged = {
        "garbled middle line": lambda: [*lines[:4], b'{"kind":"int\x00ent"\n', *lines[5:]],
        # What two processes appending at once left: repeated and torn lines, seqs clashing.
        "interleaved writers": lambda: [*lines[:6], *lines[3:6], lines[6][:20] + b"\n", *lines[6:]],
        # Restored from an old copy: sound, but the chain has rounds it never journaled.
        "rounds cut away": lambda: lines[:3],
        "job entry lost": lambda: [b"not json\n", *lines[1:]],
    }[damage]()
    path.write_bytes(b"".join(damaged))
    refusal = JournalMismatch if damage == "rounds cut away" else CorruptJournal
    with pytest.raises(refusal):
        aml.run_rounds(chain, aml.load(chain, out), lambda _: None)

    run, report = _repair(chain, out)
    assert report.changed and bool(report.damaged_lines) == (damage != "rounds cut away")
    assert report.kept_copy is not None and report.kept_copy.read_bytes() == b"".join(damaged)
    journal = Journal(path)  # opens again
    anchored = journal.newest_per_round("anchored")
    journal.close()
    assert [e["round"] for e in anchored] == list(range(1, ROUNDS + 1))
    if damage == "rounds cut away":
        assert report.rebuilt_rounds == list(range(1, ROUNDS + 1))
    # The rebuilt journal says what the sound one said about every anchored round.
    sound = JournalReader(original / "parties" / "institute" / "journal.jsonl")
    for kind in ("intent", "anchored"):
        strip = lambda e: {k: v for k, v in e.items() if k != "seq"}  # noqa: E731
        assert [strip(e) for e in JournalReader(path).newest_per_round(kind)] == [
            strip(e) for e in sound.newest_per_round(kind)
        ], kind
    # Safe to re-run: the repaired journal is sound now.
    _, again = _repair(chain, out)
    assert not again.changed
    # And the job carries on: resume finds every round done, export and audit pass.
    results = aml.run_rounds(chain, run, lambda _: None)
    assert [r.resumed for r in results] == [True] * ROUNDS
    verdict, rounds = _audit(chain, run, out)
    assert (verdict, rounds) == ("pass", ROUNDS)


def test_a_repair_refuses_what_the_store_cannot_back(
    finished_job: tuple[EmbeddedChain, Path], tmp_path: Path
) -> None:
    chain, original = finished_job
    out = _copy(original, tmp_path)
    path = out / "parties" / "institute" / "journal.jsonl"
    path.write_bytes(b"".join(_lines(path)[:1]) + b"garbage\n")
    run = aml.load(chain, out)
    for record in JournalReader(original / "parties" / "institute" / "journal.jsonl").last(
        "intent", round=2
    )["records"][:1]:
        object_path = run.institute.store.path(bytes.fromhex(record))
        object_path.chmod(0o644)
        object_path.unlink()
    with pytest.raises(RepairFailed, match="round 2 of job 1: the store cannot give its records"):
        _repair(chain, out)
    assert path.read_bytes().endswith(b"garbage\n")  # nothing was written


def test_repair_waits_for_no_running_coordinator(
    finished_job: tuple[EmbeddedChain, Path], tmp_path: Path
) -> None:
    chain, original = finished_job
    out = _copy(original, tmp_path)
    writer = Journal(out / "parties" / "institute" / "journal.jsonl")
    try:
        with pytest.raises(LockHeld, match="in use by process"):
            _repair(chain, out)
    finally:
        writer.close()
