"""Tests of the bounded JSON file reader every command's files go through."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

from consortium.errors import UsageError
from consortium.jsonio import MAX_JSON_DEPTH, NoSuchFile, parse_json, read_json_file

NESTED = "[" * 100_000 + "]" * 100_000


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fails the test instead of hanging it if the body blocks (as ``open`` on a FIFO can)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read(path: Path, max_bytes: int = 1000) -> object:
    return read_json_file(path, what="test file", max_bytes=max_bytes)


def test_reads_a_regular_file_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"a": [1, 2]}' + " " * 987)
    assert read(path) == {"a": [1, 2]}
    path.write_text('{"a": [1, 2]}' + " " * 988)
    with pytest.raises(UsageError) as info:
        read(path)
    assert str(info.value) == (
        f"test file {path} is larger than 1,000 bytes, the limit for a test file"
    )


def test_a_missing_file_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(NoSuchFile) as info:
        read(tmp_path / "absent.json")
    assert str(info.value) == f"cannot read test file {tmp_path / 'absent.json'}: no such file"


def test_follows_a_symbolic_link_to_a_file(tmp_path: Path) -> None:
    (tmp_path / "target.json").write_text("[1]")
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    assert read(tmp_path / "link.json") == [1]


def test_refuses_a_directory_and_a_fifo_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        read(tmp_path)
    assert str(info.value) == (
        f"cannot read test file {tmp_path}: it is a directory, not a regular file"
    )
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(UsageError) as info:
        read(fifo)
    assert str(info.value) == f"cannot read test file {fifo}: it is a FIFO, not a regular file"


def test_refuses_a_device() -> None:
    with pytest.raises(UsageError) as info:
        read(Path("/dev/zero"))
    assert str(info.value) == (
        "cannot read test file /dev/zero: it is a character device, not a regular file"
    )


def test_refuses_nesting_past_the_depth_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(NESTED)
    with pytest.raises(UsageError) as info:
        read(path, max_bytes=len(NESTED))
    assert str(info.value) == (
        f"test file {path} is not readable JSON: it nests arrays and objects more than 64 deep"
    )
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(at_limit.encode()) is not None
    # Brackets inside strings are text, not nesting.
    assert parse_json(f'["{NESTED}"]'.encode()) == [NESTED]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "not JSON (Expecting property name enclosed in double quotes at column 2)"),
        (b'"\xff"', "not UTF-8 text (invalid start byte at byte 1)"),
        (b"1" * 5000, "not readable JSON: Exceeds the limit (4300 digits) for integer string"),
    ],
)
def test_parse_errors_are_worded_to_follow_is(data: bytes, reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_json(data)
    assert str(info.value).startswith(reason)
