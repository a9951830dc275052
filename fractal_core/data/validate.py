"""One row of a file -> a validated :class:`~fractal_core.data.records.ResponseRecord`, or the reason it is refused.

Rules (why: a wrong label silently poisons training, so it is refused with a precise message):

- Fields: only those in :data:`~fractal_core.data.records.FIELDS`; any other (an *extra column*) is refused with
  the closest known name suggested (a misspelt ``sentencelabels`` would otherwise drop the labels), unless the
  reader asks to keep extra columns in ``meta`` or leave them out (:mod:`fractal_core.data.extras`, the rule).
- ``id`` (string or integer, not blank, unique within the file), ``response_label`` (a number; booleans are
  refused) and either ``sentences`` (non-empty list of non-empty strings) or ``text`` (segmented with
  :func:`fractal_core.data.segment.segment`) are required. ``context`` defaults to ``""``, ``aggregation`` to
  ``"max"``, ``meta`` to ``{}``.
- Labels: what a bag's aggregation allows (:func:`fractal_core.data.records.kind_of_aggregation`, checked by
  the same rule as a dataset's label kind): ``max`` ->
  integer levels 0..``MAX_LABEL`` (levels above 1 make the data ordinal); ``min`` -> binary; ``mean`` -> a
  response label in [0, 1] over binary sentence labels.
- Text: no NUL character and no lone surrogate in any string (ids, text, sentences, context, task, ``meta``
  keys and values); every field at most ``max_chars`` characters (default
  :data:`~fractal_core.data.records.MAX_FIELD_CHARS`, the same in every format), ids at most ``MAX_ID_CHARS``,
  tasks at most ``MAX_TASK_CHARS``; JSON values nested at most ``MAX_META_DEPTH`` deep and without a key
  written twice. So every store engine accepts exactly what the reader accepts.
- Several criteria: ``criteria`` replaces the three label fields (:mod:`fractal_core.data.criteria`); giving
  both is refused.
- Consistency: with every sentence labelled, ``aggregation(sentence_labels)`` must equal ``response_label``
  (``mean``: within 1e-6). With some labels missing, the known ones must not already contradict it.
- A record written by :func:`fractal_core.data.io.write_records_jsonl` also carries ``text`` and ``spans``
  (``[[start, end], ...]``) so that offsets into the original text survive a round trip; they are checked
  against ``sentences``.

Tabular formats (CSV, Parquet) carry lists and objects as JSON text in a cell; such a cell's JSON errors raise
:class:`CellJSONError`, whose ``offset`` lets :mod:`fractal_core.data.locate` point at the bad character.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from fractal_core.data.criteria import (
    MISSING,
    check_chars,
    checked_labels,
    parse_aggregation,
    parse_criteria,
)
from fractal_core.data.extras import (
    ColumnError,
    ExtraColumns,
    check_mode,
    displaced_message,
    meta_with_extras,
    split_row,
)
from fractal_core.data.records import (
    FIELDS,
    MAX_ID_CHARS,
    MAX_META_DEPTH,
    MAX_TASK_CHARS,
    ResponseRecord,
    Span,
)
from fractal_core.data.rows import DuplicateKeyError, duplicate_key_message, loads_strict
from fractal_core.data.segment import segment, spans_from_sentences
from fractal_core.errors import InputError

SegmentMode = Literal["sentences", "steps"]

# fail(message, field) -> the InputError to raise for the current file and line.
_Fail = Callable[..., InputError]


class CellJSONError(InputError):
    """Invalid JSON inside a tabular cell; ``offset`` is the 0-based position of the error in the cell."""

    offset: int = 0


def closest_field(name: str) -> str | None:
    """The schema field ``name`` is most likely a misspelling of, or None when none is close."""
    close = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_field_message(name: str) -> str:
    """Why ``name`` is refused, with the closest schema field when one is close."""
    close = closest_field(name)
    hint = f"did you mean `{close}`?" if close else f"the fields are {', '.join(FIELDS)};"
    return f"unknown field ({hint} free-form extras go in `meta`, or read extra columns into meta or leave them out)"


def record_from_row(
    row: Mapping[str, Any],
    file: str | None,
    line: int | None,
    *,
    tabular: bool,
    segment_mode: SegmentMode,
    max_chars: int,
    extras: Mapping[str, Any] | None = None,
    extra_columns: ExtraColumns = "refuse",
) -> ResponseRecord:
    """Validate one row (field names already renamed to the schema's) into a record; InputError otherwise.

    ``tabular``: the row comes from CSV or Parquet (lists and objects as JSON text, strings stripped).
    ``extras``: extra columns already split off the row (:func:`fractal_core.data.extras.split_row`); any other
    name of ``row`` outside the schema is one too. ``extra_columns``: what happens to them (refuse, meta, drop).
    """

    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, file=file, line=line, field=field)

    def column_fail(message: str, column: str) -> InputError:
        return ColumnError(message, file=file, line=line, field=column)

    def check_size(value: str, field: str, limit: int = max_chars) -> None:
        if len(value) > limit:
            raise fail(f"field is {len(value)} characters long; the limit is {limit}", field)
        check_chars(value, fail, field)

    check_mode(extra_columns)
    row, own_extras = split_row(row)
    extras = {**(extras or {}), **own_extras}
    if extras and extra_columns == "refuse":
        name = str(next(iter(extras)))
        raise column_fail(displaced_message(name) if name in FIELDS else unknown_field_message(name), name)

    raw_id = row.get("id")
    if raw_id is None:
        raise fail("missing required field", "id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise fail(f"must be a string or an integer, got {type(raw_id).__name__}", "id")
    record_id = str(raw_id).strip() if tabular else str(raw_id)
    if not record_id.strip():
        raise fail("must not be empty or only spaces", "id")
    check_size(record_id, "id", min(max_chars, MAX_ID_CHARS))

    context = row.get("context", "")
    if not isinstance(context, str):
        raise fail(f"must be a string, got {type(context).__name__}", "context")
    check_size(context, "context")

    if "criteria" not in row:
        aggregation = parse_aggregation(row.get("aggregation", "max"), tabular, fail)
    text, spans = _spans_from_row(row, tabular, segment_mode, fail, check_size)

    criteria = None
    if "criteria" in row:
        given = [f for f in ("response_label", "aggregation", "sentence_labels") if f in row]
        if given:
            raise fail("is given per criterion in `criteria`; leave it out of the row", given[0])
        raw_criteria = row["criteria"]
        if tabular and isinstance(raw_criteria, str):
            raw_criteria = json_cell(raw_criteria, fail, "criteria")
        criteria = parse_criteria(raw_criteria, len(spans), tabular=tabular, fail=fail)
        first = next(iter(criteria.values()))
    else:
        raw_labels = row.get("sentence_labels")
        if tabular and isinstance(raw_labels, str):
            raw_labels = json_cell(raw_labels, fail, "sentence_labels")
        first = checked_labels(
            row.get("response_label", MISSING),
            aggregation,
            raw_labels,
            len(spans),
            tabular=tabular,
            fail=fail,
        )

    task = row.get("task")
    if task is not None and not isinstance(task, str):
        raise fail(f"must be a string, got {type(task).__name__}", "task")
    if task:
        check_size(task, "task", MAX_TASK_CHARS)

    meta = row.get("meta", {})
    if tabular and isinstance(meta, str):
        meta = json_cell(meta, fail, "meta")
    if not isinstance(meta, dict):
        raise fail(f"must be an object, got {type(meta).__name__}", "meta")
    if extras and extra_columns == "meta":
        meta = meta_with_extras(meta, extras, column_fail)
        for name in extras:  # checked under the column's name, so the error points at it
            _check_json_value({name: meta[name]}, column_fail, name)
    if meta:
        _check_json_value(meta, fail, "meta")
        check_size(json.dumps(meta, ensure_ascii=False, default=str), "meta")

    return ResponseRecord(
        id=record_id,
        context=context,
        text=text,
        spans=spans,
        response_label=first.response_label,
        aggregation=first.aggregation,
        sentence_labels=first.sentence_labels,
        task=task or None,
        meta=meta,
        criteria=criteria,
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
        sentences = json_cell(sentences, fail, "sentences")
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
        raw_spans = json_cell(raw_spans, fail, "spans")
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


def json_cell(value: str, fail: _Fail, field: str) -> Any:
    """The JSON value in a tabular cell (a key written twice in one object is refused)."""
    try:
        return loads_strict(value)
    except DuplicateKeyError as err:
        raise fail(duplicate_key_message(err.key), field) from err
    except json.JSONDecodeError as err:
        base = fail(f"invalid JSON: {err.msg}", field)
        located = CellJSONError(base.reason, file=base.file, line=base.line, field=field)
        located.offset = err.pos
        raise located from err
    except RecursionError as err:
        raise fail(f"JSON nested too deeply (at most {MAX_META_DEPTH} levels)", field) from err


def _check_json_value(value: Any, fail: _Fail, field: str, depth: int = 0) -> None:
    """Strings (keys too) without NUL or lone surrogates, nesting at most MAX_META_DEPTH deep."""
    if depth > MAX_META_DEPTH:
        raise fail(f"nested too deeply (at most {MAX_META_DEPTH} levels)", field)
    if isinstance(value, str):
        check_chars(value, fail, field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise fail(f"holds {value}, which is not valid JSON", field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise fail(f"keys must be strings, got {type(key).__name__}", field)
            check_chars(key, fail, field)
            _check_json_value(item, fail, field, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json_value(item, fail, field, depth + 1)
