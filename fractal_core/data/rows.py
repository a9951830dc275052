"""Rows of a JSONL, CSV or Parquet file, before any validation: ``(line, {field: value})`` pairs.

Line numbers: JSONL -> the 1-based physical line; CSV -> the physical line where the row starts (the header is
line 1, so the first data row is line 2); Parquet -> row index + 1. A file that cannot be read as rows (bad
UTF-8, invalid JSON, a JSON key written twice in one object, a malformed CSV, an unreadable Parquet file) raises
:class:`~fractal_core.errors.InputError` naming the file and line.

JSON is parsed with :func:`loads_strict`, which refuses a key written twice in one object: plain ``json.loads``
keeps the last one, so ``{"id": "a", "id": "b"}`` would silently become ``b``. :func:`object_members` walks the
members of a JSON object on one line (key, where the key is, where its value starts and ends) with the public
decoder only, for the duplicate-key check and for error columns (:mod:`fractal_core.data.locate`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fractal_core.data.records import MAX_FIELD_CHARS, MAX_META_DEPTH
from fractal_core.errors import InputError

# The most characters JSON quoting can add to a text (a character written as \uXXXX): the reader's limit on a
# raw CSV cell, so the CSV module never refuses a cell whose text the validator (MAX_FIELD_CHARS) accepts.
JSON_ESCAPE_FACTOR = 6


class DuplicateKeyError(ValueError):
    """A JSON object names ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return obj


def loads_strict(text: str) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` for a key written twice in one object (any depth)."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


def duplicate_key_message(key: str) -> str:
    return f"key {key!r} is written twice in one object (JSON would keep only the last one); write it once"


@dataclass(frozen=True, slots=True)
class Member:
    """One ``"key": value`` member of a JSON object; positions are 0-based offsets into the line."""

    key: str
    key_start: int
    value_start: int
    value_end: int


_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def object_members(text: str, start: int = 0) -> Iterator[Member]:
    """The members of the JSON object that begins at (or after whitespace from) ``start``, in file order.

    Stops early, without raising, where the text is not a well-formed object (the caller then reports what it
    already knows without a position); duplicate keys are yielded as written.
    """
    pos = _skip_ws(text, start)
    if text[pos : pos + 1] != "{":
        return
    pos += 1
    while True:
        pos = _skip_ws(text, pos)
        if text[pos : pos + 1] != '"':
            return
        end = pos + 1
        while end < len(text) and text[end] != '"':
            end += 2 if text[end] == "\\" else 1
        if end >= len(text):
            return
        try:
            key = json.loads(text[pos : end + 1])
        except ValueError:
            return
        colon = _skip_ws(text, end + 1)
        if text[colon : colon + 1] != ":":
            return
        value_start = _skip_ws(text, colon + 1)
        try:
            _, value_end = _DECODER.raw_decode(text, value_start)
        except (ValueError, RecursionError):
            return
        yield Member(key, pos, value_start, value_end)
        pos = _skip_ws(text, value_end)
        if text[pos : pos + 1] != ",":
            return
        pos += 1


def duplicate_key_location(text: str, key: str) -> tuple[str | None, int | None]:
    """(top-level field, 0-based position) of a duplicate ``key`` on a JSON line: the key's second occurrence
    when it repeats at the top level, else the value of the top-level field whose object repeats it."""
    seen: set[str] = set()
    members = list(object_members(text))
    for member in members:
        if member.key == key and key in seen:
            return key, member.key_start
        seen.add(member.key)
    for member in members:
        try:
            loads_strict(text[member.value_start : member.value_end])
        except DuplicateKeyError:
            return member.key, member.value_start
        except (ValueError, RecursionError):
            continue
    return None, None


# --- row sources -----------------------------------------------------------------------------------------


def decoded_lines(path: Path, file: str) -> Iterator[tuple[int, str]]:
    """Physical lines decoded as UTF-8 one at a time, so a bad byte is reported on its own line."""
    try:
        handle = path.open("rb")
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror or err}", file=file) from err
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"not valid UTF-8 (byte {err.start + 1} of the line); save the file as UTF-8",
                    file=file,
                    line=number,
                ) from err
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a BOM written by spreadsheet exports
            yield number, text


def jsonl_rows(path: Path, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """One JSON object per non-blank line."""
    for number, text in decoded_lines(path, file):
        if not text.strip():
            continue
        try:
            obj = loads_strict(text)
        except DuplicateKeyError as err:
            field, pos = duplicate_key_location(text, err.key)
            column = None if pos is None else pos + 1
            reason = duplicate_key_message(err.key) + ("" if column is None else f" (column {column})")
            raise InputError(reason, file=file, line=number, field=field, column=column) from err
        except json.JSONDecodeError as err:
            raise InputError(
                f"invalid JSON: {err.msg} at column {err.colno}", file=file, line=number
            ) from err
        except RecursionError as err:
            raise InputError(
                f"JSON nested too deeply (at most {MAX_META_DEPTH} levels)", file=file, line=number
            ) from err
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=file, line=number)
        yield number, obj


def _allow_cells(max_chars: int) -> None:
    # The csv module's limit is process-wide: only ever raise it, so other readers keep working.
    needed = JSON_ESCAPE_FACTOR * max_chars + 2
    if csv.field_size_limit() < needed:
        csv.field_size_limit(needed)


def csv_rows(path: Path, file: str, max_chars: int = MAX_FIELD_CHARS) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows under a header line; empty cells are left out (a missing field), blank lines skipped."""
    _allow_cells(max_chars)
    limit = JSON_ESCAPE_FACTOR * max_chars + 2
    lines = decoded_lines(path, file)
    reader = csv.reader(text for _, text in lines)
    start = 1
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            return
        header = [cell.strip() for cell in header]
        empty = [i + 1 for i, cell in enumerate(header) if not cell]
        if empty:
            raise InputError(f"column {empty[0]} of the header has no name", file=file, line=reader.line_num)
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise InputError(
                f"duplicate column {duplicated[0]!r} in the header", file=file, line=reader.line_num
            )
        start = reader.line_num + 1
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                start = reader.line_num + 1
                continue
            if len(cells) != len(header):
                raise InputError(
                    f"row has {len(cells)} fields but the header has {len(header)}", file=file, line=start
                )
            yield start, {name: cell for name, cell in zip(header, cells, strict=True) if cell != ""}
            start = reader.line_num + 1
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise InputError(
                f"a cell is longer than {limit:,} characters (a field holds at most {max_chars:,})",
                file=file,
                line=start,
            ) from err
        raise InputError(f"malformed CSV: {err}", file=file, line=reader.line_num) from err


def csv_header(path: Path, file: str) -> list[str]:
    """The column names of a CSV file as :func:`csv_rows` reads them (the first non-blank line, stripped);
    empty for a file without one."""
    _allow_cells(MAX_FIELD_CHARS)
    try:
        for cells in csv.reader(text for _, text in decoded_lines(path, file)):
            if any(cell.strip() for cell in cells):
                return [cell.strip() for cell in cells]
    except csv.Error as err:
        raise InputError(f"malformed CSV header: {err}", file=file, line=1) from err
    return []


def column_names(path: Path, file: str, fmt: str, max_rows: int = 1000) -> list[str]:
    """The columns of a file, in order: a CSV header, a Parquet schema, or for JSONL the keys of the objects
    on its first ``max_rows`` rows (in order of first appearance; a later row may add more)."""
    if fmt == "csv":
        return csv_header(path, file)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return [str(name) for name in pq.ParquetFile(path).schema_arrow.names]
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"not a readable Parquet file: {err}", file=file) from err
    names: dict[str, None] = {}
    for n, (_, row) in enumerate(jsonl_rows(path, file)):
        if n >= max_rows:
            break
        names.update(dict.fromkeys(row))
    return list(names)


def parquet_rows(path: Path, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a Parquet file; null cells are left out (a missing field)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"not a readable Parquet file: {err}", file=file) from err
    number = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            number += 1
            yield number, {key: value for key, value in row.items() if value is not None}


def file_rows(
    path: str | Path, format: str | None = None, max_field_chars: int = MAX_FIELD_CHARS
) -> tuple[str, str, Iterator[tuple[int, dict[str, Any]]]]:
    """``(file, fmt, rows)`` of a JSONL, CSV or Parquet file (``format`` or its suffix): the name errors cite, the
    format read and the rows with their line numbers; InputError when the format is unknown or the path is not a
    regular file."""
    from fractal_core.data.files import require_format

    path = Path(path)
    file = str(path)
    fmt = require_format(path, format)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file", file=file)
    if fmt == "jsonl":
        return file, fmt, jsonl_rows(path, file)
    if fmt == "csv":
        return file, fmt, csv_rows(path, file, max_field_chars)
    return file, fmt, parquet_rows(path, file)
