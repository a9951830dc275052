"""Preference pairs in a file (JSONL, CSV, Parquet): a prompt, two responses, which one is preferred.

Schema (one row per pair; :data:`PAIR_FIELDS` lists every field, any other is refused):
``id`` (the pair's), ``context`` (the prompt, optional), ``task`` and ``meta`` (optional, as for responses),
``strength`` (optional number in [0, 1], default 1: P(the preferred one is better) = (1 + strength) / 2) and the
two responses in one of two layouts:

- ``a_*`` and ``b_*`` with ``preferred`` = ``"a"`` or ``"b"``;
- ``chosen_*`` and ``rejected_*`` (no ``preferred``).

Each response gives ``<side>_sentences`` (a list) or ``<side>_text`` (raw text, segmented as on ingest), an
optional ``<side>_id`` (default ``<pair id>:<side>``) and an optional ``<side>_response_label`` (its own label,
trained beside the preference when present) under the pair's ``aggregation`` (default ``max``). A response
given in several pairs (same id) must be the same every time. Each response is checked by the responses' own
reader (:func:`fractal_core.data.validate.record_from_row`), so sizes, characters and labels follow the same
rules; errors name the pair's field (e.g. ``b_text``). A response without its own label holds ``NaN``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fractal_core.data.criteria import short
from fractal_core.data.files import FileFormat
from fractal_core.data.locate import located
from fractal_core.data.records import MAX_FIELD_CHARS, ResponseRecord
from fractal_core.data.rows import file_rows
from fractal_core.data.validate import SegmentMode, record_from_row
from fractal_core.errors import InputError

SIDES: tuple[str, ...] = ("a", "b", "chosen", "rejected")
RESPONSE_PARTS: tuple[str, ...] = ("id", "sentences", "text", "response_label")
PAIR_FIELDS: tuple[str, ...] = (
    "id",
    "context",
    "preferred",
    "strength",
    "aggregation",
    "task",
    "meta",
    *(f"{side}_{part}" for side in SIDES for part in RESPONSE_PARTS),
)
"""Every field a pair row may have."""


@dataclass(frozen=True, slots=True)
class PairRecord:
    """One preference: ``chosen`` is better than ``rejected`` with P = (1 + strength) / 2. Each response is a
    :class:`ResponseRecord` whose ``response_label`` is ``NaN`` when the file gave it none."""

    id: str
    chosen: ResponseRecord
    rejected: ResponseRecord
    strength: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)


def _sides(row: dict[str, Any], fail: Any) -> tuple[str, str]:
    """(chosen side, rejected side) of a row by its layout."""
    given = {side for side in SIDES if any(f"{side}_{part}" in row for part in RESPONSE_PARTS)}
    if given & {"a", "b"} and given & {"chosen", "rejected"}:
        raise fail("mixes the a/b and chosen/rejected layouts; use one", "preferred")
    if given & {"chosen", "rejected"}:
        if "preferred" in row:
            raise fail(
                "chosen/rejected rows say which is preferred already; leave preferred out", "preferred"
            )
        return "chosen", "rejected"
    preferred = row.get("preferred")
    if isinstance(preferred, str):
        preferred = preferred.strip().lower()
    if preferred not in ("a", "b"):
        raise fail(f'must be "a" or "b", got {short(preferred)}', "preferred")
    return ("a", "b") if preferred == "a" else ("b", "a")


def _strength(row: dict[str, Any], tabular: bool, fail: Any) -> float:
    value = row.get("strength")
    if value is None or (tabular and isinstance(value, str) and not value.strip()):
        return 1.0
    if tabular and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError as err:
            raise fail(f"must be a number in [0, 1], got {short(value)}", "strength") from err
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise fail(f"must be a number in [0, 1], got {short(value)}", "strength")
    return float(value)


def pair_from_row(
    row: dict[str, Any],
    file: str | None,
    line: int | None,
    *,
    tabular: bool,
    segment_mode: SegmentMode = "sentences",
    max_chars: int = MAX_FIELD_CHARS,
) -> PairRecord:
    """Validate one pair row into a :class:`PairRecord`; InputError naming file, line and the pair's field."""

    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, file=file, line=line, field=field)

    for name in row:
        if name not in PAIR_FIELDS:
            raise fail(
                f"unknown field (the pair fields are {', '.join(PAIR_FIELDS[:7])} and <side>_id, "
                "<side>_sentences, <side>_text, <side>_response_label for sides a/b or chosen/rejected)",
                name,
            )
    shared: dict[str, Any] = {k: row[k] for k in ("id", "context", "aggregation", "task", "meta") if k in row}
    pair = record_from_row(
        {**shared, "sentences": ["-"], "response_label": 0},
        file,
        line,
        tabular=tabular,
        segment_mode=segment_mode,
        max_chars=max_chars,
    )  # the pair's own fields, by the responses' rules (the placeholder response is dropped)
    chosen_side, rejected_side = _sides(row, fail)
    responses = []
    for side in (chosen_side, rejected_side):
        part = {k: row[f"{side}_{k}"] for k in RESPONSE_PARTS if f"{side}_{k}" in row}
        if tabular:
            part = {
                k: v for k, v in part.items() if not (isinstance(v, str) and not v.strip() and k != "text")
            }
        part.setdefault("id", f"{pair.id}:{side}")
        labelled = "response_label" in part
        try:
            record = record_from_row(
                {
                    **shared,
                    **part,
                    "id": part["id"],
                    "response_label": part.get("response_label", 0),
                    "meta": {},
                },
                file,
                line,
                tabular=tabular,
                segment_mode=segment_mode,
                max_chars=max_chars,
            )
        except InputError as err:
            field = f"{side}_{err.field}" if err.field in RESPONSE_PARTS else err.field
            raise fail(err.reason, field) from err
        responses.append(record if labelled else replace(record, response_label=math.nan))
    if responses[0].id == responses[1].id:
        raise fail("the two responses of a pair must be different responses", f"{rejected_side}_id")
    return PairRecord(pair.id, responses[0], responses[1], _strength(row, tabular, fail), pair.meta)


def _same(first: ResponseRecord, other: ResponseRecord) -> bool:
    labels = (first.response_label, other.response_label)
    same_label = labels[0] == labels[1] or all(math.isnan(v) for v in labels)
    return (
        first.text == other.text
        and first.spans == other.spans
        and same_label
        and first.context == other.context
    )


def iter_pairs(
    path: str | Path,
    *,
    format: FileFormat | None = None,
    segment_mode: SegmentMode = "sentences",
    max_field_chars: int = MAX_FIELD_CHARS,
) -> Iterator[tuple[int, PairRecord]]:
    """Stream validated pairs from a JSONL, CSV or Parquet file (lines numbered as for responses); InputError
    naming file, line and field on the first bad row (duplicate pair ids, a response id reused for another
    response, an empty file)."""
    path = Path(path)
    file, fmt, rows = file_rows(path, format, max_field_chars)
    pair_lines: dict[str, int] = {}
    responses: dict[str, tuple[ResponseRecord, int]] = {}
    any_row = False
    for line, row in rows:
        any_row = True
        try:
            pair = pair_from_row(
                row, file, line, tabular=fmt != "jsonl", segment_mode=segment_mode, max_chars=max_field_chars
            )
        except InputError as err:
            raise located(err, path, fmt, line, {}) from err.__cause__
        if pair.id in pair_lines:
            raise InputError(
                f"duplicate pair id {short(pair.id)} (first on line {pair_lines[pair.id]})",
                file=file,
                line=line,
                field="id",
            )
        pair_lines[pair.id] = line
        for record, side in ((pair.chosen, "chosen"), (pair.rejected, "rejected")):
            seen = responses.setdefault(record.id, (record, line))
            if seen[0] is not record and not _same(seen[0], record):
                raise InputError(
                    f"response id {short(record.id)} was given on line {seen[1]} with another text, context "
                    "or label",
                    file=file,
                    line=line,
                    field=f"{side} response id",
                )
        yield line, pair
    if not any_row:
        raise InputError("file is empty", file=file)


def read_pairs(path: str | Path, **options: Any) -> list[PairRecord]:
    """Read and validate a whole pairs file (options of :func:`iter_pairs`); nothing is returned on error."""
    return [pair for _, pair in iter_pairs(path, **options)]


def pair_table(pairs: list[PairRecord]) -> tuple[list[ResponseRecord], list[tuple[int, int, float]]]:
    """The distinct responses of ``pairs`` (first appearance order) and each pair as (chosen index, rejected
    index, strength) into them."""
    index: dict[str, int] = {}
    responses: list[ResponseRecord] = []
    out = []
    for pair in pairs:
        ids = []
        for record in (pair.chosen, pair.rejected):
            if record.id not in index:
                index[record.id] = len(responses)
                responses.append(record)
            ids.append(index[record.id])
        out.append((ids[0], ids[1], pair.strength))
    return responses, out


__all__ = ["PAIR_FIELDS", "PairRecord", "iter_pairs", "pair_from_row", "pair_table", "read_pairs"]
