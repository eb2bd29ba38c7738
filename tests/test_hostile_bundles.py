"""Bundles built to hang, flood or escape the auditor: FIFOs, devices, symbolic links, huge
files and archives that unpack into far more than they hold.

Each must end the audit promptly with a verdict or a refusal whose reason is one line. Whatever
could block (a FIFO) or read without end (a device) runs in a child process with a deadline
and a memory cap, or in process under a deadline and a memory cap of its own, so that a
regression fails the test instead of hanging it or exhausting the machine.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import resource
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from audit_scenario import Scenario, reach_scenario_chain, run_scenario
from cli_process import one_line_error, run_cli_process
from click.testing import CliRunner

import consortium.audit.bundle as bundle_module
from consortium.audit import open_bundle
from consortium.audit.bundle import (
    MAX_ARCHIVE_BYTES,
    MAX_JSON_OBJECT_BYTES,
    MAX_OBJECT_BYTES,
    BundleError,
)
from consortium.chain.embedded import EmbeddedChain
from consortium.cli.main import cli

DEADLINE = 60
"""Seconds an in-process audit may take before it counts as hanging; one takes a few."""
HEADROOM = 2 * 2**30
"""Address space an in-process audit may map beyond what the test process has mapped."""
BOMB_BYTES = 200 * 2**20
"""The zeros a bomb holds: gzip shrinks them to about 200 kB."""
T = TypeVar("T")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    chain = EmbeddedChain()
    yield run_scenario(chain, tmp_path_factory.mktemp("hostile"))
    chain.close()


@pytest.fixture
def bundle(scenario: Scenario, tmp_path: Path) -> Path:
    """A copy of the scenario's bundle, its object files writable to the test."""
    copy = Path(shutil.copytree(scenario.bundle, tmp_path / "bundle"))
    for path in (copy / "objects").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def refusal(bundle: Path) -> str:
    """The one line ``consortium audit BUNDLE`` ends with, run as its own process with a
    deadline and a memory cap (it must refuse the bundle before it needs the chain)."""
    process = run_cli_process(bundle.parent, "audit", str(bundle), "--chain", "http://127.0.0.1:9")
    return one_line_error(process)


# ------------------------------------------------------------------------------ the header


def test_a_fifo_as_the_manifest_or_the_rounds_file_is_refused(bundle: Path) -> None:
    rounds = bundle / "rounds.jsonl"
    rounds.unlink()
    os.mkfifo(rounds)
    assert refusal(bundle) == f"error: {rounds} is not a regular file but a FIFO"
    manifest = bundle / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    assert refusal(bundle) == f"error: {manifest} is not a regular file but a FIFO"


@pytest.mark.parametrize("name", ["manifest.json", "rounds.jsonl"])
def test_a_symbolic_link_as_the_manifest_or_the_rounds_file_is_refused(
    bundle: Path, tmp_path: Path, name: str
) -> None:
    path = bundle / name
    outside = tmp_path / name
    path.rename(outside)
    path.symlink_to(outside)  # the right contents, but not in the bundle
    assert refusal(bundle) == f"error: {path} is not a regular file but a symbolic link"
    path.unlink()
    path.symlink_to("/dev/zero")
    assert refusal(bundle) == f"error: {path} is not a regular file but a symbolic link"


def test_the_rounds_file_is_opened_without_blocking_when_it_is_read(bundle: Path) -> None:
    """A FIFO swapped in after the bundle was opened is refused where the rounds are read."""
    with open_bundle(bundle) as opened:
        rounds = bundle / "rounds.jsonl"
        rounds.unlink()
        os.mkfifo(rounds)
        with unblocking(rounds), pytest.raises(BundleError) as refused:
            within_deadline(lambda: next(opened.rounds()))
    assert str(refused.value) == f"{rounds} is not a regular file but a FIFO"


# ------------------------------------------------------------------------------ objects


def object_file(bundle: Path, digest: str) -> Path:
    return bundle / "objects" / digest[:2] / digest[2:]


def record_object(scenario: Scenario, bundle: Path) -> Path:
    """Round 1's first signed record."""
    return object_file(bundle, scenario.rounds[0]["records"][0]["digest"])


def tensor_object(scenario: Scenario, bundle: Path) -> Path:
    """A tensor of round 1's global model (read on the audit's reader threads)."""
    manifest = object_file(bundle, scenario.rounds[0]["model"])
    return object_file(bundle, next(iter(json.loads(manifest.read_bytes()).values())))


def audit_rows(scenario: Scenario, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The details of the failed rows of ``consortium audit BUNDLE`` run in process, which must
    exit 1 (checks failed) within the deadline and the memory cap."""
    reach_scenario_chain(scenario, monkeypatch)
    monkeypatch.setenv("COLUMNS", "2000")
    result = within_deadline(
        lambda: CliRunner().invoke(cli, ["audit", str(bundle), "--chain", "http://node"])
    )
    assert result.exit_code == 1, result.output
    cells = [line.split("│") for line in result.stdout.splitlines() if "│" in line]
    return [cell[3].strip() for cell in cells if "FAIL" in cell[2] or not cell[0].strip()]


@pytest.mark.parametrize("where", [record_object, tensor_object], ids=["record", "tensor"])
def test_a_fifo_as_an_object_fails_the_objects_check(
    scenario: Scenario,
    bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: Callable[[Scenario, Path], Path],
) -> None:
    path = where(scenario, bundle)
    path.unlink()
    os.mkfifo(path)
    with unblocking(path):
        rows = audit_rows(scenario, bundle, monkeypatch)
    assert any(row.endswith(f"at {path}: not a regular file but a FIFO") for row in rows), rows


def test_symbolic_links_in_the_objects_fail_the_objects_check(
    scenario: Scenario, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """To /dev/zero (read whole, it would never end), to the right bytes outside the bundle,
    and a fan-out directory leading out of it."""
    record = record_object(scenario, bundle)
    record.unlink()
    record.symlink_to("/dev/zero")
    tensor = tensor_object(scenario, bundle)
    tensor.rename(tmp_path / "tensor")
    tensor.symlink_to(tmp_path / "tensor")
    metrics = object_file(bundle, scenario.rounds[1]["metrics"])
    fanout = metrics.parent
    assert fanout not in (record.parent, tensor.parent)  # each link is seen on its own
    fanout.rename(tmp_path / "fanout")
    fanout.symlink_to(tmp_path / "fanout")
    rows = audit_rows(scenario, bundle, monkeypatch)
    link = "not a regular file but a symbolic link"
    assert any(row.endswith(f"at {record}: {link}") for row in rows), rows
    assert any(row.endswith(f"at {tensor}: {link}") for row in rows), rows
    fanout_link = f"at {metrics}: objects/{fanout.name} is a symbolic link, not a directory"
    assert any(row.endswith(fanout_link) for row in rows), rows


def test_objects_larger_than_their_place_allows_are_not_read(
    scenario: Scenario, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sparse files: as large as they claim, they take no room on disk."""
    record = record_object(scenario, bundle)
    os.truncate(record, MAX_JSON_OBJECT_BYTES + 1)
    tensor = tensor_object(scenario, bundle)
    os.truncate(tensor, MAX_OBJECT_BYTES + 1)
    rows = audit_rows(scenario, bundle, monkeypatch)
    for path, limit in ((record, MAX_JSON_OBJECT_BYTES), (tensor, MAX_OBJECT_BYTES)):
        text = f"at {path} is {limit + 1:,} bytes, more than the {limit:,} it may take"
        assert any(row.endswith(text) for row in rows), rows


# ------------------------------------------------------------------------------ archives


class Zeros(io.RawIOBase):
    """``size`` zero bytes, made as they are read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def archive_of(path: Path, *members: tuple[tarfile.TarInfo, io.RawIOBase | None]) -> Path:
    """A ``.tar.gz`` of ``members`` (fast compression: the tests make large ones)."""
    with (
        gzip.open(path, "wb", compresslevel=1) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for member, contents in members:
            archive.addfile(member, contents)
    return path


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **fields: Any
) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.size = kind, size
    for field, value in fields.items():
        setattr(member, field, value)
    return member


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.RawIOBase]:
    return entry(name, size=len(data)), io.BytesIO(data)


def test_a_decompression_bomb_is_refused_before_it_is_written_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = archive_of(
        tmp_path / "bundle.tar.gz",
        file_entry("bundle/manifest.json", b"{}"),
        (entry("bundle/objects/00/zeros", size=BOMB_BYTES), Zeros(BOMB_BYTES)),
    )
    assert bomb.stat().st_size < BOMB_BYTES // 100
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the command unpacks it
    assert refusal(bomb) == f"error: {bomb}: refused: it expands more than 100 times its size"
    assert list(scratch.iterdir()) == []  # the partial extraction is gone


def test_an_archive_expanding_past_the_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound whatever its ratio (random bytes do not compress); the bound made small."""
    monkeypatch.setattr(bundle_module, "MAX_ARCHIVE_BYTES", 2**20)
    archive = archive_of(
        tmp_path / "bundle.tar.gz", file_entry("bundle/objects/00/noise", os.urandom(2**21))
    )
    assert_archive_refused(archive, "it expands past 1,048,576 bytes")
    assert MAX_ARCHIVE_BYTES == 2**34  # the real bound, as docs/audit-bundle.md states it


def test_an_archive_of_too_many_members_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle_module, "MAX_ARCHIVE_MEMBERS", 3)
    archive = archive_of(
        tmp_path / "bundle.tar.gz", *(file_entry(f"bundle/{n}", b"") for n in range(4))
    )
    assert_archive_refused(archive, "it holds more than 3 members")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (
            entry("bundle/manifest.json", tarfile.SYMTYPE, linkname="/etc/passwd"),
            "member 'bundle/manifest.json' is a symbolic link, not a regular file or a directory",
        ),
        (
            entry("bundle/rounds.jsonl", tarfile.SYMTYPE, linkname="manifest.json"),
            "member 'bundle/rounds.jsonl' is a symbolic link, not a regular file or a directory",
        ),
        (
            entry("bundle/rounds.jsonl", tarfile.LNKTYPE, linkname="bundle/manifest.json"),
            "member 'bundle/rounds.jsonl' is a hard link, not a regular file or a directory",
        ),
        (
            entry("bundle/rounds.jsonl", tarfile.FIFOTYPE),
            "member 'bundle/rounds.jsonl' is a FIFO, not a regular file or a directory",
        ),
        (
            entry("bundle/zero", tarfile.CHRTYPE, devmajor=1, devminor=5),
            "member 'bundle/zero' is a character device, not a regular file or a directory",
        ),
        (entry("../x"), "member '../x' is not a path inside the bundle"),
        (entry("bundle/../../x"), "member 'bundle/../../x' is not a path inside the bundle"),
        (entry("/tmp/bundle/x"), "member '/tmp/bundle/x' is not a path inside the bundle"),
        (
            entry("bundle/x", pax_headers={"comment": "x" * 100_000}),
            "it holds an extended header longer than 65,536 bytes",
        ),
    ],
    ids=["symlink out", "symlink in", "hard link", "fifo", "device", "up", "up inside", "absolute",
         "pax header"],
)  # fmt: skip
def test_archive_members_that_are_not_bundle_files_are_refused(
    tmp_path: Path, member: tarfile.TarInfo, reason: str
) -> None:
    archive = archive_of(
        tmp_path / "bundle.tar.gz", file_entry("bundle/manifest.json", b"{}"), (member, None)
    )
    assert_archive_refused(archive, reason)
    assert not (tmp_path / "x").exists() and not Path("/tmp/bundle/x").exists()


def assert_archive_refused(archive: Path, reason: str) -> None:
    with pytest.raises(BundleError) as refused, open_bundle(archive):
        pass
    assert str(refused.value) == f"{archive}: refused: {reason}"


# ------------------------------------------------------------------------------ safeguards


def within_deadline(body: Callable[[], T]) -> T:
    """``body()`` run on a thread, under a memory cap; a test failure if it does not return
    within :data:`DEADLINE` (the thread is left blocked; :func:`unblocking` frees it)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(body())
        except BaseException as exc:  # handed to the test below
            outcome.append(exc)

    with capped_memory():
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(DEADLINE)
    assert outcome, f"still running after {DEADLINE} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@contextlib.contextmanager
def capped_memory() -> Iterator[None]:
    """The process may map only :data:`HEADROOM` more than it has: reading a device without
    end raises MemoryError instead of exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + HEADROOM, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def unblocking(fifo: Path) -> Iterator[None]:
    """On exit, frees whatever is blocked opening ``fifo`` for reading (a regression), so that
    no thread of the test process stays blocked on it."""
    try:
        yield
    finally:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):  # no reader: nothing blocked
                raise
