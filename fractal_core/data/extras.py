"""Extra columns: fields of a row that are not in the schema (a model name, a timestamp, annotator notes).

The one rule of what happens to them, used by every reader (JSONL, CSV, Parquet), ``fractal ingest
--extra-columns`` and the app's upload page. The mode (:data:`EXTRA_COLUMN_MODES`) is chosen by whoever reads:

- ``refuse`` (the default everywhere): the row is refused naming the column, with the closest field suggested,
  so a misspelt ``sentencelabels`` never quietly loses the labels.
- ``meta``: each extra value is kept in the response's ``meta`` under the column's name.
- ``drop``: left out. Readers report the names they met (``seen_extras`` of
  :func:`fractal_core.data.io.iter_records`), so callers say what was kept or left out.

Which columns are extra (:func:`split_row`): after a column map's renames, every name that is not a field,
and a column named like a field that another column is mapped to (it is displaced, never silently
overwritten by the mapped one or the other way round).

Kept in ``meta``, a file's data is never authority: a column may not write a key the code itself reads with a
meaning (:data:`RESERVED_META_KEYS`), nor a key the row's own ``meta`` already holds (neither value would win
silently); both refuse the row, naming the column. Values are kept as written: a CSV cell is its text (never
parsed or guessed), a JSONL value its JSON; Parquet values become JSON (dates and times ISO 8601 text,
durations seconds, decimals text, a non-finite float null); binary cells are refused.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from fractal_core.data.records import FIELDS, MAX_META_DEPTH
from fractal_core.errors import InputError

ExtraColumns = Literal["refuse", "meta", "drop"]
EXTRA_COLUMN_MODES: tuple[str, ...] = ("refuse", "meta", "drop")

PROVENANCE_META_KEY = "fractal"
"""``meta`` key of the provenance block a store's native export writes (labels with who set them, scores,
split); an ingest reads only its ``split`` and drops the rest."""
RESERVED_META_KEYS: dict[str, str] = {
    PROVENANCE_META_KEY: "the provenance block of a native export (its split is read on ingest)",
}
"""``meta`` keys the code reads with a meaning, and what: an extra column may never write them."""

# fail(message, field) -> the error to raise for the current file and line.
_Fail = Callable[[str, str], InputError]


class ColumnError(InputError):
    """An error about a column as the file names it (``field`` is the file's name, not a schema field)."""


def check_mode(mode: object, field: str = "extra_columns") -> ExtraColumns:
    """``mode`` when it is one of :data:`EXTRA_COLUMN_MODES`; InputError naming ``field`` otherwise."""
    if mode not in EXTRA_COLUMN_MODES:
        raise InputError(
            f"unknown extra-columns mode {mode!r}; use {', '.join(EXTRA_COLUMN_MODES)}", field=field
        )
    return mode  # type: ignore[return-value]


def check_column_map(column_map: Mapping[str, str]) -> None:
    """Refuse a column map whose target is not a schema field (InputError, field ``column_map``)."""
    for column, target in column_map.items():
        if target not in FIELDS:
            raise InputError(
                f"column {column!r} is mapped to {target!r}, which is not a field ({', '.join(FIELDS)})",
                field="column_map",
            )


def split_row(
    row: Mapping[str, Any], column_map: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fields, extras)`` of a row: schema fields under their schema names (after ``column_map``'s
    ``{column: field}`` renames) and the extra columns under the file's names, both in the row's order."""
    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    targets = set(column_map.values()) if column_map else set()
    for name, value in row.items():
        target = column_map.get(name) if column_map else None
        if target is not None:
            fields[target] = value
        elif name in FIELDS and name not in targets:
            fields[name] = value
        else:
            extras[name] = value
    return fields, extras


def extra_columns(names: Iterable[str], column_map: Mapping[str, str] | None = None) -> list[str]:
    """The names among a file's columns that :func:`split_row` treats as extra, in the given order."""
    return list(split_row(dict.fromkeys(names), column_map)[1])


def displaced_message(name: str) -> str:
    """Why a column named like a field is extra: another column is mapped to that field."""
    return (
        f"column `{name}` is not read: another column is mapped to the field `{name}` (map this one instead, "
        "or keep extra columns in meta or leave them out)"
    )


def meta_with_extras(meta: Mapping[str, Any], extras: Mapping[str, Any], fail: _Fail) -> dict[str, Any]:
    """``meta`` plus every extra column's value under its name; a reserved key, a key ``meta`` already has,
    or a value JSON cannot hold raises ``fail(message, column)``."""
    merged = dict(meta)
    for name, value in extras.items():
        if name in RESERVED_META_KEYS:
            raise fail(
                f"column would write meta.{name}, which is reserved for {RESERVED_META_KEYS[name]}; "
                "rename the column or leave extra columns out",
                name,
            )
        if name in merged:
            raise fail(
                f"column would overwrite meta.{name} given in this row's meta; rename one of them", name
            )
        merged[name] = json_value(value, functools.partial(_fail_at, fail, name), depth=1)
    return merged


def _fail_at(fail: _Fail, column: str, message: str) -> InputError:
    return fail(message, column)


def json_value(value: Any, fail: Callable[[str], InputError], depth: int = 0) -> Any:
    """``value`` (as a reader yields it) in a form JSON can hold; see the module docstring."""
    if depth > MAX_META_DEPTH:
        raise fail(f"nested too deeply (at most {MAX_META_DEPTH} levels)")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v, fail, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v, fail, depth + 1) for v in value]
    raise fail(f"holds {type(value).__name__} data, which cannot be kept in meta (leave the column out)")
