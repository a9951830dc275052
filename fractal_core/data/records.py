"""The in-memory form of one response (a *bag*) in the shared JSONL schema.

Schema (one JSON object per line; :data:`FIELDS` lists every field, any other is refused):
``id``, ``context``, ``sentences`` (list[str], optional when ``text`` is given), ``sentence_labels``
(list[int | None], optional), ``response_label`` (int or float), ``aggregation`` ("max" | "min" | "mean"),
``task`` (optional), ``meta`` (optional object). Raw responses give ``text`` instead of ``sentences`` and
are segmented on load; ``spans`` (offsets of the sentences in ``text``) comes from a lossless export.

Several criteria per response: ``criteria`` (an object ``{name: {"response_label", "aggregation",
"sentence_labels"}}``) replaces the three top-level label fields; every row of a file declares the same criteria
with the same aggregations (:mod:`fractal_core.data.criteria`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fractal_core.errors import InputError

Aggregation = Literal["max", "min", "mean"]
AGGREGATIONS: tuple[str, ...] = ("max", "min", "mean")
LABEL_KINDS: tuple[str, ...] = ("binary", "ordinal", "proportion")

# Bounds every reader enforces (and the store's columns and CHECK constraints repeat), so that every engine
# accepts and refuses exactly the same input.
MAX_LABEL = 100
"""Highest label level: ordinal responses and sentences take integer levels 0..MAX_LABEL."""
MAX_ID_CHARS = 512
"""Longest response id."""
MAX_TASK_CHARS = 128
"""Longest task name."""
MAX_META_DEPTH = 32
"""Deepest nesting of lists and objects inside ``meta`` (and any JSON value in a file)."""
MAX_FIELD_CHARS = 1_000_000
"""Longest text in one field, in every format (JSONL value, CSV cell, Parquet cell): the context, the text, one
sentence, all sentences together, or ``meta`` written as JSON."""

FIELDS: tuple[str, ...] = (
    "id",
    "context",
    "sentences",
    "text",
    "spans",
    "sentence_labels",
    "response_label",
    "aggregation",
    "task",
    "meta",
    "criteria",
)
"""Every field a row may have; any other is refused (free-form extras go in ``meta``)."""


@dataclass(frozen=True, slots=True)
class Span:
    """A sentence or step: ``text == source[start:end]`` for the response text it came from."""

    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class CriterionLabels:
    """One criterion's labels of a response: its aggregate label, how it aggregates, its gold sentence labels
    (``None`` as a whole when none is annotated, ``None`` items for unlabelled sentences)."""

    response_label: float
    aggregation: Aggregation = "max"
    sentence_labels: list[int | None] | None = None


@dataclass(slots=True)
class ResponseRecord:
    """One bag: a response, its sentences and its aggregate label.

    ``text`` is the response as the user gave it; when the input was pre-split, ``text`` is the sentences
    joined by a single space and ``spans`` index into that join. ``sentence_labels`` holds ``None`` for
    sentences without a gold label; it is ``None`` as a whole when no sentence is annotated.
    """

    id: str
    context: str
    text: str
    spans: list[Span]
    response_label: float
    aggregation: Aggregation = "max"
    sentence_labels: list[int | None] | None = None
    task: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    criteria: dict[str, CriterionLabels] | None = None

    @property
    def sentences(self) -> list[str]:
        return [s.text for s in self.spans]


def criterion_view(record: ResponseRecord, name: str) -> ResponseRecord:
    """``record`` as a single-label response judged on criterion ``name`` (KeyError when it has no such one)."""
    if record.criteria is None:
        raise KeyError(f"response {record.id!r} declares no criteria")
    labels = record.criteria[name]
    return replace(
        record,
        response_label=labels.response_label,
        aggregation=labels.aggregation,
        sentence_labels=labels.sentence_labels,
        criteria=None,
    )


# --- label kinds: the one rule of which labels a dataset's kind allows --------------------------------------


def parse_label_kind(spec: str) -> tuple[str, float | None]:
    """``binary`` | ``proportion`` | ``ordinal`` | ``ordinal:C`` -> (kind, highest level or None if unknown).

    A dataset's label kind is fixed when it is created: binary (levels 0/1), proportion (mean bags, labels in
    [0, 1]) or ordinal with C levels 0..C-1 (C from 3 to ``MAX_LABEL`` + 1; plain ``ordinal`` takes C from the
    first file)."""
    kind, _, levels = str(spec).strip().partition(":")
    if kind not in LABEL_KINDS or (levels and kind != "ordinal"):
        raise InputError(
            f"label kind must be binary, proportion, ordinal or ordinal:C (C levels), got {spec!r}",
            field="label_kind",
        )
    if kind != "ordinal":
        return kind, 1.0
    if not levels:
        return kind, None
    if not levels.isdigit() or not 3 <= int(levels) <= MAX_LABEL + 1:
        raise InputError(
            f"ordinal levels must be an integer from 3 to {MAX_LABEL + 1}, got {levels!r}", field="label_kind"
        )
    return kind, float(int(levels) - 1)


def _a(label_kind: str) -> str:
    return f"an {label_kind}" if label_kind[:1] in "aeiou" else f"a {label_kind}"


def top_level(label_kind: str, max_label: float) -> int:
    """The highest sentence label a dataset of this kind allows: its top level if ordinal, else 1."""
    return int(max_label) if label_kind == "ordinal" else 1


def sentence_label_problem(label: object, label_kind: str, max_label: float) -> str | None:
    """Why ``label`` (an int, or None to clear) cannot be a sentence label of such a dataset; None if it can."""
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):  # numpy integers are Integral
        return f"sentence label must be an integer or None, got {label!r}"
    top = top_level(label_kind, max_label)
    if not 0 <= int(label) <= top:
        return f"sentence label {label} is outside 0..{top} for {_a(label_kind)} dataset"
    return None


def response_label_problem(label: float, label_kind: str, max_label: float) -> str | None:
    """Why ``label`` cannot be a response label of such a dataset (a proportion in [0, 1] for proportion data,
    else an integer level up to its top); None if it can."""
    if label_kind == "proportion":
        return (
            None
            if 0.0 <= label <= 1.0
            else f"response label {label:g} is outside [0, 1] for a proportion dataset"
        )
    top = top_level(label_kind, max_label)
    if not float(label).is_integer() or not 0 <= label <= top:
        return f"response label {label:g} is not an integer in 0..{top} for {_a(label_kind)} dataset"
    return None


def kind_of_aggregation(aggregation: str) -> tuple[str, float]:
    """``(kind, max_label)`` a bag of this aggregation may hold before a dataset narrows it: mean bags are
    proportions, min bags binary, max bags ordinal up to ``MAX_LABEL``."""
    if aggregation == "mean":
        return "proportion", 1.0
    if aggregation == "min":
        return "binary", 1.0
    return "ordinal", float(MAX_LABEL)


def kind_mismatch(record: ResponseRecord, label_kind: str, max_label: float) -> tuple[str, str] | None:
    """(what does not fit, field) when ``record`` does not fit a dataset of this kind (``max_label``: its
    highest level); None when it fits. Proportion datasets hold mean bags only, and only they do."""
    if (label_kind == "proportion") != (record.aggregation == "mean"):
        return f"aggregation is {record.aggregation}", "aggregation"
    if label_kind == "proportion":
        return None
    if record.response_label > max_label:
        return f"response_label is {record.response_label:g}", "response_label"
    above = [v for v in record.sentence_labels or [] if v is not None and v > max_label]
    if above:
        return f"a sentence label is {above[0]}", "sentence_labels"
    return None
