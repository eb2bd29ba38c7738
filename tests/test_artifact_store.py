"""Tests of the content-addressed artifact store, on the real filesystem.

The crash and concurrency tests run real child processes: a writer killed by SIGKILL must leave
no object or a whole one, and the temporary file it leaves must be removed by the next store
that opens the directory, but never while its writer is alive.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.errors import ConsortiumError, UsageError
from consortium.store.artifacts import (
    TEMP_PREFIX,
    ArtifactError,
    ArtifactStore,
    CorruptArtifact,
    MissingArtifact,
)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "party")


def all_files(root: Path) -> list[str]:
    """Every file under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return sorted(root.glob(f"objects/*/{TEMP_PREFIX}*"))


def damage(path: Path, content: bytes) -> None:
    """Replace an object's bytes behind the store's back (objects are read-only)."""
    path.chmod(0o644)
    path.write_bytes(content)
    path.chmod(0o444)


# ------------------------------------------------------------------------------- basics


def test_round_trip_layout_and_permissions(store: ArtifactStore) -> None:
    data = b"global model, round 3"
    digest = store.put(data)
    assert digest == hashlib.sha256(data).digest()
    text = digest.hex()
    assert store.path(digest) == store.root / "objects" / text[:2] / text[2:]
    assert store.get(digest) == data
    assert store.has(digest) and digest in store
    # Read-only, so nothing rewrites an object by accident; no temporary file is left.
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o444
    assert all_files(store.root) == [f"objects/{text[:2]}/{text[2:]}"]


def test_put_is_idempotent_and_does_not_rewrite(store: ArtifactStore) -> None:
    digest = store.put(b"update")
    before = store.path(digest).stat()
    assert store.put(b"update") == digest
    after = store.path(digest).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert list(store) == [digest]


def test_empty_object(store: ArtifactStore) -> None:
    digest = store.put(b"")
    assert digest.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert store.get(digest) == b""


def test_opening_a_store_creates_nothing_until_the_first_put(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    assert list(store) == [] and store.verify_all() == [] and store.recover() == []
    with pytest.raises(MissingArtifact):
        store.get(bytes(32))
    store.put(b"x")
    assert (tmp_path / "nowhere" / "objects").is_dir()


@pytest.mark.parametrize("read", ["get", "get_view"])
def test_missing_object(store: ArtifactStore, read: str) -> None:
    digest = hashlib.sha256(b"never stored").digest()
    assert not store.has(digest)
    with pytest.raises(MissingArtifact, match=f"^artifact {digest.hex()} is not in the store "):
        getattr(store, read)(digest)


@pytest.mark.parametrize(
    "how",
    [
        lambda data: bytes([data[0] ^ 0x01]) + data[1:],  # one flipped bit
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"",  # emptied
        lambda data: data + b"\n",  # appended to
    ],
    ids=["flipped", "truncated", "empty", "appended"],
)
@pytest.mark.parametrize("read", ["get", "get_view"])
def test_damaged_object_is_refused_by_name(store: ArtifactStore, how, read: str) -> None:
    data = os.urandom(1000)
    digest = store.put(data)
    path = store.path(digest)
    damage(path, how(data))
    with pytest.raises(CorruptArtifact) as info:
        getattr(store, read)(digest)
    message = str(info.value)
    assert "\n" not in message
    assert digest.hex() in message and str(path) in message
    assert isinstance(info.value, ConsortiumError)
    assert store.verify_all() == [digest]


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 4096, (1 << 22) + 3])
def test_get_view_is_a_read_only_view_of_private_memory(store: ArtifactStore, size: int) -> None:
    data = os.urandom(size)
    digest = store.put(data)
    view = store.get_view(digest)
    assert view.readonly and view.format == "B" and view == data == store.get(digest)
    with pytest.raises(TypeError):
        view[:1] = b"x"
    # It ends on a 64-byte boundary, so a payload behind a header is aligned for its dtype
    # (numpy gives an empty buffer an address of its own).
    assert size == 0 or (np.frombuffer(view, dtype=np.uint8).ctypes.data + size) % 64 == 0
    # Nobody writes through the buffer behind it either.
    assert not view.obj.flags.writeable
    # Its bytes are the ones verified, not the file's: rewriting the file changes nothing.
    damage(store.path(digest), bytes(size))
    assert view == data


def test_get_view_refuses_a_file_that_grew_after_it_was_sized(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(1000)
    digest = store.put(data)
    damage(store.path(digest), data + b"appended while being read")
    real_fstat = os.fstat

    def stale_fstat(fd: int) -> os.stat_result:
        fields = list(real_fstat(fd))
        fields[stat.ST_SIZE] = len(data)
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", stale_fstat)
    with pytest.raises(CorruptArtifact, match=digest.hex()):
        store.get_view(digest)


def test_put_repairs_a_damaged_object_and_nothing_else(store: ArtifactStore) -> None:
    good = store.put(b"kept")
    digest = store.put(b"payload")
    damage(store.path(digest), b"paylOad")
    assert store.verify_all() == [digest]
    assert store.put(b"payload") == digest
    assert store.get(digest) == b"payload"
    assert store.verify_all() == []
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o444
    assert store.get(good) == b"kept"
    assert temp_files(store.root) == []


@pytest.mark.parametrize(
    "bad", [b"", bytes(31), bytes(33), "00" * 32, None], ids=["0", "31", "33", "hex", "none"]
)
def test_digests_must_be_32_bytes(store: ArtifactStore, bad) -> None:
    with pytest.raises(UsageError, match="an artifact digest is 32 bytes of SHA-256"):
        store.get(bad)
    assert bad not in store


def test_listing_skips_temporary_and_foreign_files(store: ArtifactStore) -> None:
    digests = sorted(store.put(bytes([i])) for i in range(20))
    assert list(store.digests()) == digests == list(store)
    (store.root / "objects" / "README").write_text("not an object")
    (store.root / "objects" / "zz").mkdir()
    (store.path(digests[0]).parent / "notes.txt").write_text("neither")
    assert list(store) == digests
    assert store.verify_all() == []


# ------------------------------------------------------------------------------- JSON


def test_json_is_stored_canonically(store: ArtifactStore) -> None:
    value = {"round": 3, "b": [1.5, "x"], "a": None}
    digest = store.put_json(value)
    assert store.get(digest) == b'{"a":null,"b":[1.5,"x"],"round":3}'
    assert store.get_json(digest) == value
    assert store.put_json({"a": None, "round": 3, "b": [1.5, "x"]}) == digest


@pytest.mark.parametrize("raw", [b'{"b":1, "a":2}', b'{"a":1,"a":2}', b"\xff", b"NaN"])
def test_get_json_refuses_non_canonical_or_non_json(store: ArtifactStore, raw: bytes) -> None:
    digest = store.put(raw)
    with pytest.raises(ArtifactError, match=f"^artifact {digest.hex()} is "):
        store.get_json(digest)


def test_put_json_refuses_values_without_a_canonical_form(store: ArtifactStore) -> None:
    with pytest.raises(UsageError):
        store.put_json({"x": float("nan")})
    assert list(store) == []


# ------------------------------------------------------------------------------- export


def test_export_copies_verified_objects_into_the_same_layout(
    store: ArtifactStore, tmp_path: Path
) -> None:
    chosen = [store.put(b"record 1"), store.put(b"model")]
    store.put(b"not exported")
    bundle = store.export([*chosen, chosen[0]], tmp_path / "bundle")
    assert sorted(bundle) == sorted(chosen)
    assert all_files(tmp_path / "bundle") == sorted(
        f"objects/{d.hex()[:2]}/{d.hex()[2:]}" for d in chosen
    )
    assert [bundle.get(d) for d in chosen] == [b"record 1", b"model"]
    # Exporting again is a no-op.
    assert sorted(store.export(chosen, tmp_path / "bundle")) == sorted(chosen)


def test_export_never_copies_a_damaged_object(store: ArtifactStore, tmp_path: Path) -> None:
    digest = store.put(b"update")
    damage(store.path(digest), b"updatE")
    with pytest.raises(CorruptArtifact):
        store.export([digest], tmp_path / "bundle")
    assert list(ArtifactStore(tmp_path / "bundle")) == []
    with pytest.raises(MissingArtifact):
        store.export([hashlib.sha256(b"absent").digest()], tmp_path / "bundle")


# ------------------------------------------------------------------------------- races


def test_concurrent_writer_of_the_same_bytes_wins_the_link(store: ArtifactStore) -> None:
    """Another writer links the object between our temp write and our link: both succeed."""
    rival = ArtifactStore(store.root)

    class Racing(ArtifactStore):
        def _write_temp(self, fd: int, data: memoryview) -> None:
            super()._write_temp(fd, data)
            rival.put(bytes(data))

    digest = Racing(store.root).put(b"same update")
    assert store.get(digest) == b"same update"
    assert all_files(store.root) == [str(store.path(digest).relative_to(store.root))]


def test_recover_removes_unlocked_temporary_files_only(store: ArtifactStore) -> None:
    directory = store.path(store.put(b"x")).parent
    abandoned = directory / f"{TEMP_PREFIX}abandoned"
    abandoned.write_bytes(b"half an upd")
    live = directory / f"{TEMP_PREFIX}live"
    live.write_bytes(b"half an upd")
    with live.open("rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert store.recover() == [abandoned]
        assert live.exists()
    assert ArtifactStore(store.root).recover() == []  # the constructor already removed it
    assert not live.exists()


CHILD_PRELUDE = """
import os, sys, time
from pathlib import Path
from consortium.store.artifacts import ArtifactStore
root = Path(sys.argv[1])
"""

STALLING_WRITER = (
    CHILD_PRELUDE
    + """
class Stalling(ArtifactStore):
    def _write_temp(self, fd, data):
        half = len(data) // 2
        super()._write_temp(fd, data[:half])
        print("half", flush=True)
        time.sleep(60)
        super()._write_temp(fd, data[half:])

Stalling(root).put(os.urandom(4 << 20))
print("done", flush=True)
"""
)


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_writer_killed_mid_write_leaves_no_object_and_its_temp_is_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "party"
    child = spawn(STALLING_WRITER, str(root))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "half\n"
        [temporary] = temp_files(root)
        assert temporary.stat().st_size == 2 << 20
        # A store opened next to the live writer must not touch its temporary file.
        assert ArtifactStore(root).recover() == []
        assert temporary.exists()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    assert temp_files(root) == [temporary]
    store = ArtifactStore(root)
    assert temp_files(root) == []
    assert list(store) == []
    assert all_files(root) == []


RANDOM_WRITER = (
    CHILD_PRELUDE
    + """
import random
store = ArtifactStore(root)
rng = random.Random(int(sys.argv[2]))
print("ready", flush=True)
while True:
    store.put(rng.randbytes(rng.choice([10, 1000, 300_000, 3_000_000])))
"""
)


def test_writers_killed_at_random_points_leave_only_whole_objects(tmp_path: Path) -> None:
    root = tmp_path / "party"
    rng = random.Random(1234)
    for attempt in range(6):
        child = spawn(RANDOM_WRITER, str(root), str(attempt))
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # Whatever instant the kill hit, every object is whole and readable.
        store = ArtifactStore(root)
        assert temp_files(root) == []
        assert store.verify_all() == []
        for digest in store:
            assert hashlib.sha256(store.get(digest)).digest() == digest
        names = {p.name for p in root.rglob("*") if p.is_file()}
        assert all(not name.startswith(TEMP_PREFIX) for name in names)
    assert list(ArtifactStore(root))  # the loop did write objects


CONCURRENT_WRITER = (
    CHILD_PRELUDE
    + """
import random
store = ArtifactStore(root)
rng = random.Random(7)  # both children write the same sequence
contents = [rng.randbytes(rng.choice([100, 200_000])) for _ in range(30)]
print("ready", flush=True)
go = root.parent / "go"
while not go.exists():
    time.sleep(0.001)
print(" ".join(store.put(data).hex() for data in contents), flush=True)
"""
)


def test_two_processes_putting_the_same_content_both_succeed(tmp_path: Path) -> None:
    root = tmp_path / "party"
    children = [spawn(CONCURRENT_WRITER, str(root)) for _ in range(2)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        (tmp_path / "go").touch()
        outputs = [child.communicate(timeout=30)[0] for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert [child.returncode for child in children] == [0, 0]
    assert outputs[0] == outputs[1]
    digests = sorted(bytes.fromhex(text) for text in set(outputs[0].split()))
    store = ArtifactStore(root)
    assert list(store) == digests
    assert store.verify_all() == []
    assert temp_files(root) == []


# ------------------------------------------------------------------------------- property


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("property"))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000))
def test_put_get_round_trip(shared_store: ArtifactStore, data: bytes) -> None:
    digest = shared_store.put(data)
    assert digest == hashlib.sha256(data).digest()
    assert shared_store.get(digest) == data
    assert shared_store.put(data) == digest
    assert digest in shared_store


def test_a_store_is_private_and_an_export_is_not(tmp_path: Path) -> None:
    """Updates say something of the data they were trained on: a party's store is its own; a
    bundle is made to be handed over."""
    old = os.umask(0o022)
    try:
        store = ArtifactStore(tmp_path / "party" / "store")
        digest = store.put(b"an update")
        bundle = store.export([digest], tmp_path / "bundle")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "party").stat().st_mode) == 0o755
    assert stat.S_IMODE(bundle.root.stat().st_mode) == 0o755
    assert bundle.get(digest) == b"an update"


def test_a_read_only_store_reads_verified_and_changes_nothing(tmp_path: Path) -> None:
    writer = ArtifactStore(tmp_path)
    digest = writer.put(b"evidence")
    left = writer.path(digest).parent / f"{TEMP_PREFIX}crashed"
    left.write_bytes(b"half an object")  # a crashed writer's leftover, not ours to remove
    evidence = ArtifactStore(tmp_path, read_only=True)
    assert evidence.get(digest) == b"evidence"
    assert evidence.recover() == [] and left.exists()
    with pytest.raises(UsageError, match="is read-only"):
        evidence.put(b"more")
    assert sorted(p.name for p in writer.path(digest).parent.iterdir()) == sorted(
        [writer.path(digest).name, left.name]
    )
