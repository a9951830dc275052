"""Where in its line an input error is: the 1-based character column of the offending value, for an editor.

Computed only on the error path (the file is read again up to the bad line), and only for formats with
columns: JSONL (the value of the field, found with :func:`fractal_core.data.rows.object_members`) and CSV (the
cell of the field's column; for JSON inside a quoted cell, the offending character, doubled quotes counted as
written). Locating is a courtesy: when the value cannot be found the error is returned unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from fractal_core.data.extras import ColumnError
from fractal_core.data.rows import csv_header, decoded_lines, object_members
from fractal_core.data.validate import CellJSONError
from fractal_core.errors import InputError


def located(err: InputError, path: Path, fmt: str, line: int, rename: Mapping[str, str]) -> InputError:
    """``err`` with the column of its field's value in the physical line (message and ``column``) when the
    format has columns and the value can be found; ``rename`` is the ``{user column: field}`` map applied."""
    offset = err.offset if isinstance(err, CellJSONError) else 0
    column = None
    if err.field is not None and fmt in ("jsonl", "csv"):
        # A schema field was written under the user's column name; an extra column's error names the column.
        mapped = {} if isinstance(err, ColumnError) else {field: user for user, field in rename.items()}
        source = mapped.get(err.field, err.field)
        with contextlib.suppress(Exception):  # never hide the real error behind a locating failure
            text = _physical_line(path, line)
            if fmt == "jsonl":
                column = jsonl_value_column(text, source, offset)
            else:
                header = csv_header(path, str(path))
                column = csv_cell_column(text, header.index(source), offset) if source in header else None
    if column is None:
        if isinstance(err, CellJSONError):
            return InputError(
                f"{err.reason} at character {offset + 1} of the value",
                file=err.file,
                line=err.line,
                field=err.field,
            )
        return err
    reason = (
        f"{err.reason} at column {column}"
        if isinstance(err, CellJSONError)
        else f"{err.reason} (column {column})"
    )
    return InputError(reason, file=err.file, line=err.line, field=err.field, column=column)


def _physical_line(path: Path, line: int) -> str:
    for number, text in decoded_lines(path, str(path)):
        if number == line:
            return text
    raise LookupError(line)


def jsonl_value_column(text: str, key: str, offset: int = 0) -> int | None:
    """1-based column of character ``offset`` of the value of top-level ``key`` in the JSON object on this line."""
    for member in object_members(text):
        if member.key == key:
            return member.value_start + offset + 1
    return None


def csv_cell_column(text: str, header_cell: int, offset: int) -> int | None:
    """1-based column, in this CSV line, of character ``offset`` of cell number ``header_cell`` (quoted cells:
    the opening quote and doubled quotes are counted as they appear in the file)."""
    starts: list[int] = []
    pos, n = 0, len(text)
    while len(starts) <= header_cell:
        starts.append(pos)
        if pos < n and text[pos] == '"':
            pos += 1
            while pos < n and not (text[pos] == '"' and text[pos + 1 : pos + 2] != '"'):
                pos += 2 if text[pos] == '"' else 1
            pos += 1
        while pos < n and text[pos] not in ",\r\n":
            pos += 1
        if pos >= n or text[pos] != ",":
            if len(starts) <= header_cell:
                return None
            break
        pos += 1
    pos = starts[header_cell]
    if text[pos : pos + 1] == '"':  # walk the cell's characters, a doubled quote being one character
        pos += 1
        for _ in range(offset):
            pos += 2 if text[pos : pos + 2] == '""' else 1
            if pos >= n or text[pos] in "\r\n":
                return None  # the cell continues on a later line
    else:
        pos += offset
    return pos + 1
