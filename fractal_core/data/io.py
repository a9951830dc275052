"""Readers and writers for the shared response schema (JSONL, CSV, Parquet).

One record per response (a *bag*); the fields are described in :mod:`fractal_core.data.records`. Every reader streams
``(line, record)`` pairs and raises :class:`~fractal_core.errors.InputError` naming ``file:line:field`` on the first
bad row, so callers that must not write partial output validate the whole file first (:func:`read_records`).

Line numbers: JSONL -> the 1-based physical line; CSV -> the physical line where the row starts (the header is
line 1, so the first data row is line 2); Parquet -> row index + 1. Columns: an error about a field's value in
a JSONL or CSV file also names the 1-based character column in that line where the value (or, for JSON inside
a CSV cell, the offending character) is, so an editor can jump to it.

Validation rules (why: a wrong label silently poisons training, so we refuse it with a precise message):

- ``id`` (string or integer, unique within the file), ``response_label`` (a number; booleans are refused) and
  either ``sentences`` (non-empty list of non-empty strings) or ``text`` (segmented with
  :func:`fractal_core.data.segment.segment`) are required. ``context`` defaults to ``""``, ``aggregation`` to
  ``"max"``, ``meta`` to ``{}``.
- Ranges: ``max`` -> integer labels 0..``MAX_LABEL`` (levels above 1 make the data ordinal); ``min`` -> binary
  labels; ``mean`` -> ``response_label`` in [0, 1] and binary sentence labels.
- Text: no NUL character and no lone surrogate in any string (ids, text, sentences, context, task, ``meta``
  keys and values); ids at most ``MAX_ID_CHARS`` characters, tasks at most ``MAX_TASK_CHARS``; JSON values
  nested at most ``MAX_META_DEPTH`` deep. So every store engine accepts exactly what the reader accepts.
- Consistency: with every sentence labelled, ``aggregation(sentence_labels)`` must equal ``response_label``
  (``mean``: within 1e-6). With some labels missing, the known ones must not already contradict it
  (a known level above a ``max`` label, a known 0 under a ``min`` label of 1, a proportion out of reach).
- A record written by :func:`write_records_jsonl` also carries ``text`` and ``spans`` (``[[start, end], ...]``)
  so that offsets into the original text survive a round trip; they are checked against ``sentences``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from fractal_core.data.files import FileFormat, atomic_write_lines, require_format
from fractal_core.data.records import (
    AGGREGATIONS,
    MAX_ID_CHARS,
    MAX_LABEL,
    MAX_META_DEPTH,
    MAX_TASK_CHARS,
    ResponseRecord,
    Span,
)
from fractal_core.data.segment import segment, spans_from_sentences
from fractal_core.errors import InputError
from fractal_core.mil.semantics import check_consistency

SegmentMode = Literal["sentences", "steps"]
LabelKind = Literal["binary", "ordinal", "proportion"]

_SPLITS = ("train", "valid", "test")
_INT_RE = re.compile(r"[+-]?\d+")
# NUL and lone surrogates cannot be stored as text by every database (nor encoded as UTF-8).
_BAD_CHAR_RE = re.compile("[\x00\ud800-\udfff]")
# fail(message, field) -> the InputError to raise for the current file and line.
_Fail = Callable[..., InputError]


def iter_records(
    path: str | Path,
    *,
    format: FileFormat | None = None,
    segment_mode: SegmentMode = "sentences",
    column_map: Mapping[str, str] | None = None,
    label_map: Mapping[str, float] | None = None,
    max_field_chars: int = 1_000_000,
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
        max_field_chars: longest accepted string field (id, context, text, one sentence, all sentences).

    Yields:
        ``(line, record)``, line numbered as described in the module docstring.

    Raises:
        InputError: on the first unreadable file or invalid row, naming file, line and field.
    """
    path = Path(path)
    file = str(path)
    fmt = require_format(path, format)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file", file=file)
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt](path, file)
    rename = dict(column_map or {})
    seen_ids: dict[str, int] = {}
    any_row = False
    for line, row in rows:
        any_row = True
        if rename:
            row = {rename.get(key, key): value for key, value in row.items()}
        try:
            if label_map is not None:
                row = _mapped_label(row, label_map, file, line)
            record = _record_from_row(row, file, line, fmt, segment_mode, max_field_chars)
        except InputError as err:
            raise _located(err, path, fmt, line, rename) from err.__cause__
        if record.id in seen_ids:
            raise InputError(
                f"duplicate id {_short(record.id)} (first on line {seen_ids[record.id]})",
                file=file,
                line=line,
                field="id",
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
            f"response_label {_short(written)} is not one of the mapped values ({known})",
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
    max_field_chars: int = 1_000_000,
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
        )
    ]


def record_from_mapping(
    row: Mapping[str, Any],
    *,
    segment_mode: SegmentMode = "sentences",
    max_field_chars: int = 1_000_000,
) -> ResponseRecord:
    """One record from a mapping in the schema (e.g. an item of an API request), checked and segmented by the
    same rules as a row of a JSONL file.

    Raises:
        InputError: naming the bad ``field`` (no file or line: the caller knows where the mapping came from).
    """
    return _record_from_row(row, None, None, "jsonl", segment_mode, max_field_chars)


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
    label: float | int = record.response_label
    if record.aggregation != "mean" and float(label).is_integer():
        label = int(label)
    return {
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


# --- row sources ----------------------------------------------------------------------------------------


def _decoded_lines(path: Path, file: str) -> Iterator[tuple[int, str]]:
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


def _jsonl_rows(path: Path, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in _decoded_lines(path, file):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
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


def _csv_rows(path: Path, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = _decoded_lines(path, file)
    reader = csv.reader(text for _, text in lines)
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
        raise InputError(f"malformed CSV: {err}", file=file, line=reader.line_num) from err


def _parquet_rows(path: Path, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
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


# --- validation -----------------------------------------------------------------------------------------


def _record_from_row(
    row: Mapping[str, Any],
    file: str | None,
    line: int | None,
    fmt: FileFormat,
    segment_mode: SegmentMode,
    max_chars: int,
) -> ResponseRecord:
    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, file=file, line=line, field=field)

    # Tabular formats carry lists and objects as JSON strings.
    tabular = fmt != "jsonl"

    def check_size(value: str, field: str, limit: int = max_chars) -> None:
        if len(value) > limit:
            raise fail(f"field is {len(value)} characters long; the limit is {limit}", field)
        _check_chars(value, fail, field)

    raw_id = row.get("id")
    if raw_id is None:
        raise fail("missing required field", "id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise fail(f"must be a string or an integer, got {type(raw_id).__name__}", "id")
    record_id = str(raw_id).strip() if tabular else str(raw_id)
    if not record_id:
        raise fail("must not be empty", "id")
    check_size(record_id, "id", min(max_chars, MAX_ID_CHARS))

    context = row.get("context", "")
    if not isinstance(context, str):
        raise fail(f"must be a string, got {type(context).__name__}", "context")
    check_size(context, "context")

    aggregation = row.get("aggregation", "max")
    if tabular and isinstance(aggregation, str):
        aggregation = aggregation.strip()
    if aggregation not in AGGREGATIONS:
        raise fail(
            f"unknown aggregation {_short(aggregation)}; expected one of {', '.join(AGGREGATIONS)}",
            "aggregation",
        )

    text, spans = _spans_from_row(row, tabular, segment_mode, fail, check_size)

    raw_labels = row.get("sentence_labels")
    if tabular and isinstance(raw_labels, str):
        raw_labels = _json_value(raw_labels, fail, "sentence_labels")
    sentence_labels = _sentence_labels(raw_labels, len(spans), aggregation, fail)

    if "response_label" not in row:
        raise fail("missing required field", "response_label")
    response_label = _number(row["response_label"], tabular, fail)
    _check_label_range(response_label, aggregation, fail)
    if sentence_labels is not None:
        _check_consistency(response_label, sentence_labels, aggregation, fail)

    task = row.get("task")
    if task is not None and not isinstance(task, str):
        raise fail(f"must be a string, got {type(task).__name__}", "task")
    if task:
        check_size(task, "task", MAX_TASK_CHARS)

    meta = row.get("meta", {})
    if tabular and isinstance(meta, str):
        meta = _json_value(meta, fail, "meta")
    if not isinstance(meta, dict):
        raise fail(f"must be an object, got {type(meta).__name__}", "meta")
    if meta:
        _check_json_value(meta, fail, "meta")
        check_size(json.dumps(meta, ensure_ascii=False, default=str), "meta")

    return ResponseRecord(
        id=record_id,
        context=context,
        text=text,
        spans=spans,
        response_label=response_label,
        aggregation=aggregation,
        sentence_labels=sentence_labels,
        task=task or None,
        meta=meta,
    )


def _spans_from_row(
    row: Mapping[str, Any],
    tabular: bool,
    segment_mode: SegmentMode,
    fail: _Fail,
    check_size: Callable[[str, str], None],
) -> tuple[str, list[Span]]:
    sentences = row.get("sentences")
    if sentences is None:
        text = row.get("text")
        if text is None:
            raise fail("missing required field: give either sentences (a list) or text", "sentences")
        if not isinstance(text, str):
            raise fail(f"must be a string, got {type(text).__name__}", "text")
        check_size(text, "text")
        spans = segment(text, mode=segment_mode)
        if not spans:
            raise fail("text is empty (no sentence to score)", "text")
        return text, spans

    if tabular and isinstance(sentences, str):
        sentences = _json_value(sentences, fail, "sentences")
    if not isinstance(sentences, list):
        raise fail(f"must be a list of strings, got {type(sentences).__name__}", "sentences")
    if not sentences:
        raise fail("must not be empty", "sentences")
    total = 0
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise fail(f"item {i} must be a string, got {type(sentence).__name__}", "sentences")
        if not sentence.strip():
            raise fail(f"item {i} is empty", "sentences")
        check_size(sentence, "sentences")
        total += len(sentence)
    if total > 0:
        check_size(" " * total, "sentences")  # the joined text must fit too

    raw_spans = row.get("spans")
    if raw_spans is None:
        return spans_from_sentences(sentences)
    # Round trip of write_records_jsonl: offsets into the original text.
    text = row.get("text")
    if not isinstance(text, str):
        raise fail("spans need the text they index into", "text")
    check_size(text, "text")
    if tabular and isinstance(raw_spans, str):
        raw_spans = _json_value(raw_spans, fail, "spans")
    if not isinstance(raw_spans, list) or len(raw_spans) != len(sentences):
        raise fail("must be a list of [start, end] pairs, one per sentence", "spans")
    spans = []
    for i, (pair, sentence) in enumerate(zip(raw_spans, sentences, strict=True)):
        ok = (
            isinstance(pair, list | tuple)
            and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        )
        if not ok or not 0 <= pair[0] <= pair[1] <= len(text) or text[pair[0] : pair[1]] != sentence:
            raise fail(f"item {i} does not locate sentence {i} in text", "spans")
        spans.append(Span(pair[0], pair[1], sentence))
    return text, spans


class _CellJSONError(InputError):
    """Invalid JSON inside a tabular cell; ``offset`` is the 0-based position of the error in the cell."""

    offset: int = 0


def _json_value(value: str, fail: _Fail, field: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        base = fail(f"invalid JSON: {err.msg}", field)
        located = _CellJSONError(base.reason, file=base.file, line=base.line, field=field)
        located.offset = err.pos
        raise located from err
    except RecursionError as err:
        raise fail(f"JSON nested too deeply (at most {MAX_META_DEPTH} levels)", field) from err


# --- error columns (computed only on the error path: the file is read again up to the bad line) -------------


def _located(err: InputError, path: Path, fmt: str, line: int, rename: Mapping[str, str]) -> InputError:
    """``err`` with the column of its field's value in the physical line (message and ``column``) when the
    format has columns and the value can be found; unchanged otherwise."""
    offset = err.offset if isinstance(err, _CellJSONError) else 0
    column = None
    if err.field is not None and fmt in ("jsonl", "csv"):
        source = {field: user for user, field in rename.items()}.get(err.field, err.field)
        with contextlib.suppress(Exception):  # locating is a courtesy: never hide the real error
            text = _physical_line(path, line)
            if fmt == "jsonl":
                column = _jsonl_value_column(text, source, offset)
            else:
                header = _csv_header(path)
                column = _csv_cell_column(text, header.index(source), offset) if source in header else None
    if column is None:
        if isinstance(err, _CellJSONError):
            return InputError(
                f"{err.reason} at character {offset + 1} of the value",
                file=err.file,
                line=err.line,
                field=err.field,
            )
        return err
    reason = (
        f"{err.reason} at column {column}"
        if isinstance(err, _CellJSONError)
        else f"{err.reason} (column {column})"
    )
    return InputError(reason, file=err.file, line=err.line, field=err.field, column=column)


def _physical_line(path: Path, line: int) -> str:
    for number, text in _decoded_lines(path, str(path)):
        if number == line:
            return text
    raise LookupError(line)


def _jsonl_value_column(text: str, key: str, offset: int) -> int | None:
    """1-based column of the value of top-level ``key`` in the JSON object on this line."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "{":
        return None
    pos += 1
    while True:
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != '"':
            return None
        name, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != ":":
            return None
        pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]
        if name == key:
            return pos + offset + 1
        _, pos = decoder.raw_decode(text, pos)
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != ",":
            return None
        pos += 1


def _csv_header(path: Path) -> list[str]:
    for cells in csv.reader(text for _, text in _decoded_lines(path, str(path))):
        if any(cell.strip() for cell in cells):
            return [cell.strip() for cell in cells]
    return []


def _csv_cell_column(text: str, header_cell: int, offset: int) -> int | None:
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


def _check_chars(value: str, fail: _Fail, field: str) -> None:
    bad = _BAD_CHAR_RE.search(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate (not valid Unicode)"
        raise fail(f"contains {what} at character {bad.start() + 1}", field)


def _check_json_value(value: Any, fail: _Fail, field: str, depth: int = 0) -> None:
    """Strings (keys too) without NUL or lone surrogates, nesting at most MAX_META_DEPTH deep."""
    if depth > MAX_META_DEPTH:
        raise fail(f"nested too deeply (at most {MAX_META_DEPTH} levels)", field)
    if isinstance(value, str):
        _check_chars(value, fail, field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise fail(f"holds {value}, which is not valid JSON", field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise fail(f"keys must be strings, got {type(key).__name__}", field)
            _check_chars(key, fail, field)
            _check_json_value(item, fail, field, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json_value(item, fail, field, depth + 1)


def _number(value: Any, tabular: bool, fail: _Fail) -> float:
    if tabular and isinstance(value, str):
        stripped = value.strip()
        try:
            value = int(stripped) if _INT_RE.fullmatch(stripped) else float(stripped)
        except ValueError as err:
            raise fail(f"must be a number, got {_short(value)}", "response_label") from err
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"must be a number, got {type(value).__name__} {_short(value)}", "response_label")
    if not math.isfinite(value):
        raise fail(f"must be a finite number, got {value}", "response_label")
    return float(value)


def _sentence_labels(raw: Any, n_spans: int, aggregation: str, fail: _Fail) -> list[int | None] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise fail(f"must be a list of integers or nulls, got {type(raw).__name__}", "sentence_labels")
    if len(raw) != n_spans:
        raise fail(f"has {len(raw)} labels for {n_spans} sentences", "sentence_labels")
    binary = aggregation in ("min", "mean")
    labels: list[int | None] = []
    for i, value in enumerate(raw):
        if value is None:
            labels.append(None)
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # Parquet/pandas exports write 1.0 for 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"item {i} must be an integer or null, got {_short(value)}", "sentence_labels")
        if value < 0 or value > (1 if binary else MAX_LABEL):
            allowed = "0 or 1" if binary else f"an integer from 0 to {MAX_LABEL}"
            raise fail(f"item {i} is {value}; {aggregation} bags need {allowed}", "sentence_labels")
        labels.append(value)
    return labels if any(v is not None for v in labels) else None


def _check_label_range(label: float, aggregation: str, fail: _Fail) -> None:
    if aggregation == "mean":
        if not 0.0 <= label <= 1.0:
            raise fail(f"is {label:g}; mean bags need a proportion in [0, 1]", "response_label")
    elif not label.is_integer() or label < 0:
        raise fail(f"is {label:g}; {aggregation} bags need a non-negative integer", "response_label")
    elif label > MAX_LABEL:
        raise fail(f"is {label:g}; label levels go up to {MAX_LABEL}", "response_label")
    elif aggregation == "min" and label > 1:
        raise fail(f"is {label:g}; min bags are binary (0 or 1)", "response_label")


def _check_consistency(label: float, labels: list[int | None], aggregation: str, fail: _Fail) -> None:
    # The strict reader: a proportion must match its labels exactly (up to float noise), no rounding slack.
    problem = check_consistency(aggregation, label, labels, mean_slack=0.0)
    if problem is not None:
        raise fail(problem, "response_label")


def max_level(records: Sequence[ResponseRecord]) -> int:
    """Highest level among max bags' response and sentence labels (0 when there is none)."""
    level = 0
    for record in records:
        if record.aggregation != "max":
            continue
        level = max(level, int(record.response_label))
        if record.sentence_labels:
            level = max(level, max((v for v in record.sentence_labels if v is not None), default=0))
    return level


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
