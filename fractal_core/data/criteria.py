"""Label fields of a row, and the ``criteria`` field that carries several of them (the one home of their rules).

A response judged on several criteria gives, instead of ``response_label`` / ``aggregation`` /
``sentence_labels``, one object::

    "criteria": {"correct": {"response_label": 1, "aggregation": "max", "sentence_labels": [0, 1, null]},
                 "grounded": {"response_label": 0.5, "aggregation": "mean"}}

Each criterion obeys the rules of the top-level fields (``aggregation`` defaults to ``max``; labels as the
aggregation allows; sentence labels consistent with the response label). Names are non-empty strings of at most
:data:`MAX_CRITERION_CHARS` characters, at most :data:`MAX_CRITERIA` per response. Every row of a file declares
the same criteria in the same order with the same aggregations (:func:`criteria_signature`), so a file is one
set of tasks; a criterion's label kind (binary, ordinal, proportion) then follows from its labels as for a
single-label file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from fractal_core.data.records import (
    AGGREGATIONS,
    Aggregation,
    CriterionLabels,
    ResponseRecord,
    criterion_view,
    kind_of_aggregation,
    response_label_problem,
    sentence_label_problem,
)
from fractal_core.errors import InputError
from fractal_core.mil.semantics import check_consistency

MAX_CRITERIA = 16
"""Most criteria one response may carry."""
MAX_CRITERION_CHARS = 64
"""Longest criterion name."""
CRITERION_FIELDS: tuple[str, ...] = ("response_label", "aggregation", "sentence_labels")
"""The fields of one criterion's object."""

_INT_RE = re.compile(r"[+-]?\d+")
# NUL and lone surrogates cannot be stored as text by every database (nor encoded as UTF-8).
_BAD_CHAR_RE = re.compile("[\x00\ud800-\udfff]")
MISSING: Any = object()
"""Stands for a required label field the row does not have."""
Fail = Callable[..., InputError]  # fail(message, field) -> the InputError to raise for the current row


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_chars(value: str, fail: Fail, field: str) -> None:
    """Refuse text no store engine keeps: a NUL character or a lone surrogate."""
    bad = _BAD_CHAR_RE.search(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate (not valid Unicode)"
        raise fail(f"contains {what} at character {bad.start() + 1}", field)


def parse_response_label(value: Any, tabular: bool, fail: Fail, field: str = "response_label") -> float:
    """A response label as a finite float (CSV/Parquet cells may hold it as text); booleans are refused."""
    if tabular and isinstance(value, str):
        stripped = value.strip()
        try:
            value = int(stripped) if _INT_RE.fullmatch(stripped) else float(stripped)
        except ValueError as err:
            raise fail(f"must be a number, got {short(value)}", field) from err
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"must be a number, got {type(value).__name__} {short(value)}", field)
    if not math.isfinite(value):
        raise fail(f"must be a finite number, got {value}", field)
    return float(value)


def parse_sentence_labels(
    raw: Any, n_spans: int, aggregation: str, fail: Fail, field: str = "sentence_labels"
) -> list[int | None] | None:
    """One label (or null) per sentence, each one the aggregation allows; None when none is given."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise fail(f"must be a list of integers or nulls, got {type(raw).__name__}", field)
    if len(raw) != n_spans:
        raise fail(f"has {len(raw)} labels for {n_spans} sentences", field)
    kind, top = kind_of_aggregation(aggregation)
    labels: list[int | None] = []
    for i, value in enumerate(raw):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # Parquet/pandas exports write 1.0 for 1
        problem = sentence_label_problem(value, kind, top)
        if problem is not None:
            raise fail(f"item {i}: {problem} ({aggregation} bags)", field)
        labels.append(value)
    return labels if any(v is not None for v in labels) else None


def parse_aggregation(value: Any, tabular: bool, fail: Fail, field: str = "aggregation") -> Aggregation:
    if tabular and isinstance(value, str):
        value = value.strip()
    if value not in AGGREGATIONS:
        raise fail(f"unknown aggregation {short(value)}; expected one of {', '.join(AGGREGATIONS)}", field)
    return cast(Aggregation, value)


def checked_labels(
    raw_label: Any,
    aggregation: Aggregation,
    raw_sentence_labels: Any,
    n_spans: int,
    *,
    tabular: bool,
    fail: Fail,
) -> CriterionLabels:
    """A response label and its sentence labels under ``aggregation``, checked against each other (the strict
    reader: a proportion must match its labels up to float noise). ``fail(message, field)`` locates errors."""
    kind, top = kind_of_aggregation(aggregation)
    sentence_labels = parse_sentence_labels(raw_sentence_labels, n_spans, aggregation, fail)
    if raw_label is MISSING:
        raise fail("missing required field", "response_label")
    response_label = parse_response_label(raw_label, tabular, fail)
    problem = response_label_problem(response_label, kind, top)
    if problem is not None:
        raise fail(f"{problem} ({aggregation} bags)", "response_label")
    if sentence_labels is not None:
        problem = check_consistency(aggregation, response_label, sentence_labels, mean_slack=0.0)
        if problem is not None:
            raise fail(problem, "response_label")
    return CriterionLabels(response_label, aggregation, sentence_labels)


def parse_criteria(raw: Any, n_spans: int, *, tabular: bool, fail: Fail) -> dict[str, CriterionLabels]:
    """The ``criteria`` object of a row -> ``{name: labels}`` in the order written; every error names the
    ``criteria`` field and, in its message, the criterion and its inner field."""
    if not isinstance(raw, dict):
        raise fail(f"must be an object of criteria, got {type(raw).__name__}", "criteria")
    if not raw:
        raise fail("must name at least one criterion", "criteria")
    if len(raw) > MAX_CRITERIA:
        raise fail(f"has {len(raw)} criteria; at most {MAX_CRITERIA}", "criteria")
    out: dict[str, CriterionLabels] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_CRITERION_CHARS:
            raise fail(
                f"criterion name {short(name)} must be non-empty text of at most {MAX_CRITERION_CHARS} characters",
                "criteria",
            )
        check_chars(name, fail, "criteria")

        def inner(message: str, field: str | None = None, _name: str = name) -> InputError:
            where = f"criterion {_name!r}" + (f", {field}" if field else "")
            return fail(f"{where}: {message}", "criteria")

        if not isinstance(spec, dict):
            raise inner(f"must be an object with {', '.join(CRITERION_FIELDS)}, got {type(spec).__name__}")
        unknown = [k for k in spec if k not in CRITERION_FIELDS]
        if unknown:
            raise inner(f"unknown field {short(unknown[0])}; a criterion has {', '.join(CRITERION_FIELDS)}")
        aggregation = parse_aggregation(spec.get("aggregation", "max"), tabular, inner)
        out[name] = checked_labels(
            spec.get("response_label", MISSING),
            aggregation,
            spec.get("sentence_labels"),
            n_spans,
            tabular=tabular,
            fail=inner,
        )
    return out


def criteria_signature(record: ResponseRecord) -> tuple[tuple[str, str], ...] | None:
    """``((name, aggregation), ...)`` of a record's criteria in order; None for a single-label record. Every
    row of one file must have the same signature."""
    if record.criteria is None:
        return None
    return tuple((name, c.aggregation) for name, c in record.criteria.items())


def signature_text(signature: tuple[tuple[str, str], ...] | None) -> str:
    if signature is None:
        return "no criteria (a single response_label)"
    return ", ".join(f"{name} ({aggregation})" for name, aggregation in signature)


def criterion_names(records: Sequence[ResponseRecord]) -> list[str]:
    """The criteria the records declare (all records share them: :func:`criteria_signature`); [] for none."""
    if not records or records[0].criteria is None:
        return []
    names = list(records[0].criteria)
    for record in records:
        if record.criteria is None or list(record.criteria) != names:
            raise ValueError(
                f"response {record.id!r} declares {signature_text(criteria_signature(record))}, "
                f"the first one {', '.join(names)}: every response must declare the same criteria"
            )
    return names


def criterion_records(records: Sequence[ResponseRecord], name: str) -> list[ResponseRecord]:
    """The records as single-label responses judged on criterion ``name``."""
    if name not in criterion_names(records):
        raise ValueError(
            f"no criterion {name!r}; the data declare {', '.join(criterion_names(records)) or 'none'}"
        )
    return [criterion_view(r, name) for r in records]


def criteria_to_dict(criteria: Mapping[str, CriterionLabels]) -> dict[str, dict[str, Any]]:
    """The ``criteria`` object as a file writes it (integer labels as integers)."""
    out: dict[str, dict[str, Any]] = {}
    for name, c in criteria.items():
        label: float | int = c.response_label
        if c.aggregation != "mean" and float(label).is_integer():
            label = int(label)
        out[name] = {
            "response_label": label,
            "aggregation": c.aggregation,
            "sentence_labels": c.sentence_labels,
        }
    return out
