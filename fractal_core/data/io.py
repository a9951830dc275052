"""Read and write files in the shared response schema (JSONL, CSV, Parquet): the library's public entry points.

One record per response (a *bag*); the fields are described in :mod:`fractal_core.data.records`. Every reader
streams ``(line, record)`` pairs and raises :class:`~fractal_core.errors.InputError` naming ``file:line:field``
on the first bad row, so callers that must not write partial output validate the whole file first
(:func:`read_records`). The work is split by concern: :mod:`fractal_core.data.rows` turns a file into rows
(line numbering per format is described there), :mod:`fractal_core.data.validate` turns a row into a record
(every rule is listed there), and :mod:`fractal_core.data.locate` adds the column of an error's value in its line
(JSONL and CSV), so an editor can jump to it.

Size: one limit for every format, :data:`~fractal_core.data.records.MAX_FIELD_CHARS` characters per field
(``max_field_chars``); a CSV cell is read up to the most JSON quoting can make of that, then checked the same way.
Ids must be unique within a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from fractal_core.data.criteria import criteria_signature, criteria_to_dict, short, signature_text
from fractal_core.data.extras import ExtraColumns, check_column_map, check_mode, split_row
from fractal_core.data.files import FileFormat, atomic_write_lines
from fractal_core.data.locate import located
from fractal_core.data.records import MAX_FIELD_CHARS, ResponseRecord
from fractal_core.data.rows import file_rows
from fractal_core.data.validate import SegmentMode, record_from_row
from fractal_core.errors import InputError

__all__ = [
    "ExtraColumns",
    "LabelKind",
    "SegmentMode",
    "iter_records",
    "label_kind",
    "max_level",
    "num_classes",
    "read_records",
    "record_from_mapping",
    "read_split_dir",
    "record_to_dict",
    "write_records_jsonl",
]

LabelKind = Literal["binary", "ordinal", "proportion"]

_SPLITS = ("train", "valid", "test")


def iter_records(
    path: str | Path,
    *,
    format: FileFormat | None = None,
    segment_mode: SegmentMode = "sentences",
    column_map: Mapping[str, str] | None = None,
    label_map: Mapping[str, float] | None = None,
    max_field_chars: int = MAX_FIELD_CHARS,
    extra_columns: ExtraColumns = "refuse",
    seen_extras: set[str] | None = None,
) -> Iterator[tuple[int, ResponseRecord]]:
    """Stream validated records from a JSONL, CSV or Parquet file.

    Args:
        path: the file; its suffix decides the format unless ``format`` is given.
        format: ``"jsonl"``, ``"csv"`` or ``"parquet"``.
        segment_mode: how raw ``text`` is split (pre-split ``sentences`` are kept as given).
        column_map: ``{user column: schema field}`` renames applied to every row before validation.
        label_map: ``{value as written: response label}`` (e.g. ``{"correct": 0, "wrong": 1}``) applied to every
            row's ``response_label`` after the renames and before validation; a value it does not list is
            refused (file, line, field) rather than guessed.
        max_field_chars: longest accepted field (context, text, one sentence, all sentences, meta as JSON), the
            same for every format.
        extra_columns: what happens to columns that are not schema fields (:mod:`fractal_core.data.extras`):
            ``refuse`` the row (default), keep them in ``meta``, or ``drop`` them.
        seen_extras: when given, the names of the extra columns met are added to it (kept or left out), so a
            caller can say which; filled as the rows stream.

    Yields:
        ``(line, record)``, line numbered as described in the module docstring.

    Raises:
        InputError: on the first unreadable file or invalid row, naming file, line and field.
    """
    path = Path(path)
    file, fmt, rows = file_rows(path, format, max_field_chars)
    rename = dict(column_map or {})
    check_column_map(rename)
    check_mode(extra_columns)
    seen_ids: dict[str, int] = {}
    signature: tuple[tuple[str, str], ...] | None = None
    any_row = False
    for line, row in rows:
        any_row = True
        row, extras = split_row(row, rename)
        if extras and seen_extras is not None:
            seen_extras.update(extras)
        try:
            if label_map is not None:
                row = _mapped_label(row, label_map, file, line)
            record = record_from_row(
                row,
                file,
                line,
                tabular=fmt != "jsonl",
                segment_mode=segment_mode,
                max_chars=max_field_chars,
                extras=extras,
                extra_columns=extra_columns,
            )
        except InputError as err:
            raise located(err, path, fmt, line, rename) from err.__cause__
        if record.id in seen_ids:
            raise InputError(
                f"duplicate id {short(record.id)} (first on line {seen_ids[record.id]})",
                file=file,
                line=line,
                field="id",
            )
        own = criteria_signature(record)
        if not seen_ids:
            signature = own
        elif own != signature:
            raise InputError(
                f"declares {signature_text(own)}, the first row {signature_text(signature)}: "
                "every row must declare the same criteria with the same aggregations",
                file=file,
                line=line,
                field="criteria",
            )
        seen_ids[record.id] = line
        yield line, record
    if not any_row:
        raise InputError("file is empty", file=file)


def _mapped_label(
    row: dict[str, Any], label_map: Mapping[str, float], file: str, line: int
) -> dict[str, Any]:
    """``row`` with its ``response_label`` replaced through ``label_map`` (the value as text, surrounding spaces
    ignored); a missing field is left for validation to report."""
    if "response_label" not in row:
        return row
    written = str(row["response_label"]).strip()
    if written not in label_map:
        known = ", ".join(repr(k) for k in sorted(label_map)[:10])
        raise InputError(
            f"response_label {short(written)} is not one of the mapped values ({known})",
            file=file,
            line=line,
            field="response_label",
        )
    return {**row, "response_label": label_map[written]}


def read_records(
    path: str | Path,
    *,
    format: FileFormat | None = None,
    segment_mode: SegmentMode = "sentences",
    column_map: Mapping[str, str] | None = None,
    label_map: Mapping[str, float] | None = None,
    max_field_chars: int = MAX_FIELD_CHARS,
    extra_columns: ExtraColumns = "refuse",
) -> list[ResponseRecord]:
    """Read and validate a whole file (same options as :func:`iter_records`); nothing is returned on error."""
    return [
        record
        for _, record in iter_records(
            path,
            format=format,
            segment_mode=segment_mode,
            column_map=column_map,
            label_map=label_map,
            max_field_chars=max_field_chars,
            extra_columns=extra_columns,
        )
    ]


def record_from_mapping(
    row: Mapping[str, Any],
    *,
    segment_mode: SegmentMode = "sentences",
    max_field_chars: int = MAX_FIELD_CHARS,
    extra_columns: ExtraColumns = "refuse",
) -> ResponseRecord:
    """One record from a mapping in the schema (e.g. an item of an API request), checked and segmented by the
    same rules as a row of a JSONL file (keys outside the schema as ``extra_columns`` says).

    Raises:
        InputError: naming the bad ``field`` (no file or line: the caller knows where the mapping came from).
    """
    return record_from_row(
        row,
        None,
        None,
        tabular=False,
        segment_mode=segment_mode,
        max_chars=max_field_chars,
        extra_columns=extra_columns,
    )


def read_split_dir(directory: str | Path) -> dict[str, list[ResponseRecord]]:
    """Read ``train.jsonl`` (required) and ``valid.jsonl`` / ``test.jsonl`` (optional) from ``directory``.

    Returns:
        ``{split: records}`` for the splits present, in the order train, valid, test.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("not a directory", file=str(directory))
    if not (directory / "train.jsonl").is_file():
        raise InputError(
            "no train.jsonl in this directory (valid.jsonl and test.jsonl are optional)", file=str(directory)
        )
    return {
        split: read_records(directory / f"{split}.jsonl")
        for split in _SPLITS
        if (directory / f"{split}.jsonl").is_file()
    }


def record_to_dict(record: ResponseRecord) -> dict[str, Any]:
    """The JSON object :func:`write_records_jsonl` writes for one record (lossless: text and offsets kept)."""
    label: float | int | None = record.response_label
    if label != label:  # NaN: no label of its own (a response of a preference pair) is written as null
        label = None
    elif record.aggregation != "mean" and float(record.response_label).is_integer():
        label = int(record.response_label)
    row: dict[str, Any] = {
        "id": record.id,
        "context": record.context,
        "sentences": [s.text for s in record.spans],
        "sentence_labels": record.sentence_labels,
        "response_label": label,
        "aggregation": record.aggregation,
        "task": record.task,
        "meta": record.meta,
        "text": record.text,
        "spans": [[s.start, s.end] for s in record.spans],
    }
    if (
        record.criteria is not None
    ):  # the criteria carry every label; the top-level ones only repeat the first
        for name in ("sentence_labels", "response_label", "aggregation"):
            del row[name]
        row["criteria"] = criteria_to_dict(record.criteria)
    return row


def write_records_jsonl(records: Iterable[ResponseRecord], path: str | Path) -> None:
    """Write records as JSONL atomically (:func:`fractal_core.data.files.atomic_write`).

    A failure (including one raised while iterating ``records``) leaves any existing file untouched; a path
    that is a directory, a device or another special file is refused with InputError.
    """
    atomic_write_lines(path, (json.dumps(record_to_dict(r), ensure_ascii=False) for r in records))


def label_kind(records: Sequence[ResponseRecord]) -> LabelKind:
    """``"proportion"`` for mean bags, ``"ordinal"`` for max bags with a level above 1, else ``"binary"``."""
    if not records:
        raise ValueError("label_kind needs at least one record")
    aggregations = {r.aggregation for r in records}
    if "mean" in aggregations:
        if len(aggregations) > 1:
            raise ValueError(
                f"cannot mix mean bags with {sorted(aggregations - {'mean'})} bags in one dataset"
            )
        return "proportion"
    return "ordinal" if max_level(records) > 1 else "binary"


def num_classes(records: Sequence[ResponseRecord]) -> int:
    """Output classes of the instance scorer: 2 for binary and proportion data, max level + 1 for ordinal."""
    kind = label_kind(records)
    return max_level(records) + 1 if kind == "ordinal" else 2


def max_level(records: Sequence[ResponseRecord]) -> int:
    """Highest level among max bags' response and sentence labels (0 when there is none; a response without a
    label of its own, NaN, adds none)."""
    level = 0
    for record in records:
        if record.aggregation != "max":
            continue
        if record.response_label == record.response_label:
            level = max(level, int(record.response_label))
        if record.sentence_labels:
            level = max(level, max((v for v in record.sentence_labels if v is not None), default=0))
    return level
