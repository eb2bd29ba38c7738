"""A party's table as a CSV file: the format a member feeds its own data in, and the one the
simulation exports its synthetic data to so that users can feed it back.

The file has a header row; one column holds the subject ids, on the guest's side one holds the
0/1 labels, and every other column is a numeric feature, in header order. A member's file is
the one input it prepares by hand, so every way it can be wrong is a one-line
:class:`DataFileError` naming the file, the line and the column, and the read is bounded in
bytes and rows. Values are parsed with the standard library's csv module; blank lines are
skipped and spaces around a value are ignored.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.fl.party_table import PartyTable
from consortium.jsonio import read_regular_file

MAX_DATA_FILE_BYTES = 256 * 1024 * 1024
MAX_DATA_ROWS = 1_000_000
_SHOWN_CHARS = 40  # how much of a bad value a message quotes


class DataFileError(UsageError):
    """A party's data file cannot be read as a table; the message names the file, the line and
    the column."""


def load_party_csv(
    path: Path,
    id_column: str,
    label_column: str | None = None,
    *,
    name: str | None = None,
    max_bytes: int = MAX_DATA_FILE_BYTES,
    max_rows: int = MAX_DATA_ROWS,
) -> PartyTable:
    """The table in the CSV file ``path``, named ``name`` (the file's stem by default).

    ``label_column`` is given on the guest's side only; its values must be 0 or 1.

    Raises:
        DataFileError: if the file is missing, not a regular file, larger than ``max_bytes``,
            has more than ``max_rows`` rows, or is not a table of this shape.
    """
    if id_column == label_column:
        raise UsageError(f"the id and the label column must differ, both are {id_column!r}")
    try:
        data = read_regular_file(path, what="data file", max_bytes=max_bytes)
    except UsageError as exc:
        raise DataFileError(str(exc)) from None
    rows = _Rows(path, _lines(path, data))
    header = rows.header()
    id_index = _column(path, header, id_column, "ids")
    label_index = None if label_column is None else _column(path, header, label_column, "labels")
    feature_indices = [i for i in range(len(header)) if i not in (id_index, label_index)]
    if not feature_indices:
        raise DataFileError(f"data file {path} line 1: no feature column besides the ids/labels")
    first_line: dict[str, int] = {}  # id -> the line it is on, in file order
    labels = array("b")
    values = array("d")
    for line, fields in rows:
        if len(first_line) == max_rows:
            raise DataFileError(f"data file {path} has more than {max_rows:,} rows, the limit")
        identifier = fields[id_index].strip()
        if not identifier:
            raise DataFileError(f"data file {path} line {line} column {id_column!r}: empty id")
        if identifier in first_line:
            raise DataFileError(
                f"data file {path} line {line} column {id_column!r}: duplicate id "
                f"{_shown(identifier)}, first on line {first_line[identifier]}"
            )
        first_line[identifier] = line
        if label_index is not None:
            labels.append(_label(path, line, header[label_index], fields[label_index]))
        _append_numbers(path, line, header, feature_indices, fields, values)
    if not first_line:
        raise DataFileError(f"data file {path} has a header but no rows")
    X = np.frombuffer(values, dtype=np.float64).reshape(len(first_line), len(feature_indices))
    _check_finite(path, X, list(first_line.values()), [header[i] for i in feature_indices])
    return PartyTable(
        name=path.stem if name is None else name,
        ids=tuple(first_line),
        feature_names=tuple(header[i] for i in feature_indices),
        X=X,
        y=None if label_index is None else np.frombuffer(labels, dtype=np.int8),
    )


def write_party_csv(
    table: PartyTable, path: Path, *, id_column: str = "id", label_column: str = "label"
) -> None:
    """Writes ``table`` to ``path`` (atomically), readable back by :func:`load_party_csv` with
    the same column names into an equal table: floats are written in their shortest form that
    reads back to the same float64. The label column is written only if the table has labels.
    """
    names = [id_column, *([] if table.y is None else [label_column]), *table.feature_names]
    if len(set(names)) != len(names):
        raise ValueError(f"column names collide: {names}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    labels: Sequence[int | None] = [None] * table.num_rows if table.y is None else table.y.tolist()
    for identifier, label, row in zip(table.ids, labels, table.X.tolist(), strict=True):
        writer.writerow([identifier, *([] if label is None else [label]), *map(repr, row)])
    write_text_atomically(path, out.getvalue())


class _Rows:
    """The records of a CSV reader with their line numbers, reporting reader errors and ragged
    rows as :class:`DataFileError`."""

    def __init__(self, path: Path, lines: Iterator[str]) -> None:
        self._path = path
        self._reader = csv.reader(lines, strict=True)
        self._header: list[str] = []

    def header(self) -> list[str]:
        record = next(self._records(), None)
        if record is None:
            raise DataFileError(f"data file {self._path} is empty")
        header = [name.strip() for name in record[1]]
        first_column: dict[str, int] = {}
        for position, column in enumerate(header, start=1):
            if not column:
                raise DataFileError(f"data file {self._path} line 1 column {position}: no name")
            if column in first_column:
                raise DataFileError(
                    f"data file {self._path} line 1 column {column!r}: the name appears twice "
                    f"(columns {first_column[column]} and {position})"
                )
            first_column[column] = position
        self._header = header
        return header

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        for line, fields in self._records():
            width = len(self._header)
            if len(fields) != width:
                where = (
                    f"column {self._header[len(fields)]!r} is missing"
                    if len(fields) < width
                    else f"nothing belongs after column {self._header[-1]!r}"
                )
                raise DataFileError(
                    f"data file {self._path} line {line}: {len(fields)} fields where the header "
                    f"has {width}; {where}"
                )
            yield line, fields

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        try:
            for fields in self._reader:
                if fields:
                    yield self._reader.line_num, fields
        except csv.Error as exc:
            raise DataFileError(
                f"data file {self._path} line {self._reader.line_num}: not CSV ({exc})"
            ) from None


def _lines(path: Path, data: bytes) -> Iterator[str]:
    """``data`` decoded as UTF-8 (a leading byte order mark ignored), one line at a time, so
    that the csv module counts lines as an editor does and no second copy of the whole file
    is made."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFileError(f"data file {path} line {line}: not UTF-8 text") from None
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _column(path: Path, header: list[str], column: str, holds: str) -> int:
    if column not in header:
        raise DataFileError(f"data file {path} line 1: no column {column!r} for the {holds}")
    return header.index(column)


def _label(path: Path, line: int, column: str, value: str) -> int:
    text = value.strip()
    if text not in ("0", "1"):
        raise DataFileError(
            f"data file {path} line {line} column {column!r}: label {_shown(text)} is not 0 or 1"
        )
    return int(text)


def _append_numbers(
    path: Path,
    line: int,
    header: list[str],
    indices: list[int],
    fields: list[str],
    values: array[float],
) -> None:
    """Appends the row's features to ``values``; a value ``float`` cannot read is named."""
    cells = [fields[i] for i in indices]
    try:
        values.extend(map(float, cells))
    except ValueError:
        index, cell = next((i, c) for i, c in zip(indices, cells, strict=True) if not _is_float(c))
        problem = "no value" if not cell.strip() else f"{_shown(cell.strip())} is not a number"
        raise DataFileError(
            f"data file {path} line {line} column {header[index]!r}: {problem}"
        ) from None


def _check_finite(path: Path, X: NDArray[np.float64], lines: list[int], names: list[str]) -> None:
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, column = (int(v) for v in bad[0])
        raise DataFileError(
            f"data file {path} line {lines[row]} column {names[column]!r}: "
            f"{float(X[row, column])} is not a finite number"
        )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(value: str) -> str:
    """``value`` quoted for a one-line message: escaped, and cut if long."""
    return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")
