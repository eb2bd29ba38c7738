"""Reading JSON from files anyone may have handed over, within bounds.

Every JSON file the project reads comes through here, because each can be hostile or simply
wrong: a FIFO or a device given as a path would block or read forever, a huge file would fill
memory, and deeply nested brackets would crash the interpreter. Each of those is refused with a
one-line :class:`~consortium.errors.UsageError` that names the file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from consortium.errors import UsageError

MAX_JSON_DEPTH = 64
"""How deeply JSON may nest arrays and objects; the deepest the project writes (a contract
artifact's ABI) nests seven deep. Python's ``json`` recurses on the C stack once per level, and
py_ecc (imported with the chain code) raises the recursion limit to 100,000, so some 60,000
nested ``[`` (120 kB) would crash the process rather than raise RecursionError: deeper text is
refused before it is parsed."""
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))

_NOT_REGULAR = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


class NoSuchFile(UsageError):
    """Nothing is at the path; callers that know what would create the file say so."""


def read_json_file(path: Path, *, what: str, max_bytes: int) -> Any:
    """The JSON in the regular file ``path``, read whole but never more than ``max_bytes``.

    ``what`` names the kind of file in messages ("keystore file", "deployment file").

    Raises:
        NoSuchFile: if nothing is at ``path``.
        UsageError: if it is not a regular file, is larger than ``max_bytes``, or is not JSON.
    """
    data = read_regular_file(path, what=what, max_bytes=max_bytes)
    try:
        return parse_json(data)
    except UsageError as exc:
        raise UsageError(f"{what} {path} is {exc}") from None


def require_format(
    value: object,
    form: str,
    fields: Sequence[str],
    source: str,
    error: type[UsageError] = UsageError,
) -> Mapping[str, Any]:
    """``value``, read from ``source``, as a JSON object of format ``form`` holding exactly
    ``fields`` (its ``format`` among them).

    Raises:
        UsageError: ``error``, in one line naming ``source``, if it is not.
    """
    if not isinstance(value, Mapping) or value.get("format") != form:
        raise error(f"{source} is not a {form} file")
    if sorted(value) != sorted(fields):
        raise error(f"{source} must hold exactly {', '.join(sorted(fields))}")
    return value


def read_regular_file(path: Path, *, what: str, max_bytes: int) -> bytes:
    """The bytes of ``path``, refused unless it is a regular file of at most ``max_bytes``.

    The file is opened without blocking (a FIFO without a writer would block ``open`` itself)
    and the opened descriptor is checked, not the path, so nothing swapped in between the check
    and the read is read. Symbolic links are followed: what matters is the file they lead to.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoSuchFile(f"cannot read {what} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        kind = _special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise UsageError(f"cannot read {what} {path}: it is a {kind}, not a regular file")
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UsageError(
            f"{what} {path} is larger than {max_bytes:,} bytes, the limit for a {what}"
        )
    return data


def _special_kind(mode: int) -> str | None:
    """What a file of ``mode`` is, if it is not a regular file."""
    return next((kind for is_kind, kind in _NOT_REGULAR if is_kind(mode)), None)


def parse_json(data: bytes) -> Any:
    """``data`` parsed as UTF-8 JSON, or a UsageError saying why not, worded to follow "is".

    Beside syntax errors, hostile text can hold numbers too long to convert (ValueError) and
    arrays nested deeper than the parser can recurse, which are refused before parsing
    (:data:`MAX_JSON_DEPTH`).
    """
    if _nests_too_deep(data):
        raise UsageError(
            f"not readable JSON: it nests arrays and objects more than {MAX_JSON_DEPTH} deep"
        )
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise UsageError(f"not JSON ({exc.msg} at {where})") from None
    except ValueError as exc:
        raise UsageError(f"not readable JSON: {exc}") from None


def _nests_too_deep(data: bytes) -> bool:
    """Whether the brackets outside strings open more than :data:`MAX_JSON_DEPTH` levels.

    For JSON text this is its nesting; for text that is not, it is at least the depth a parser
    reaches before it fails (strings are delimited the same way up to the first error).
    Stops at the first level too many, so hostile text costs little.
    """
    depth = 0
    for bracket in _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False
