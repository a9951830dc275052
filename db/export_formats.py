"""The row each export format writes for one response, and which steps a step format writes (the rules are
in :mod:`db.export`'s docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from db.export_read import _Item
from db.models import ModelVersion
from db.sources import NONE
from fractal_core.data.extras import PROVENANCE_META_KEY
from fractal_core.data.io import record_to_dict
from fractal_core.data.records import ResponseRecord
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.mil.semantics import check_consistency

SCORE = "score"
"""Source of a step label filled from the model's score (only with ``scores_as_labels``)."""

LEFT_OUT_CONTRADICTS = "its labels contradict the response label"
LEFT_OUT_UNLABELLED = "a step without a label (--scores-as-labels or --soft-labels write it)"
LEFT_OUT_UNSCORED = "a step with neither label nor score"


@dataclass(frozen=True, slots=True)
class _Options:
    max_label: float
    positive_is: str | None
    soft_labels: bool
    scores_as_labels: bool


def _positive_is_bad(aggregation: str, positive_is: str | None) -> bool:
    if positive_is is not None:
        return positive_is == "bad"
    return aggregation != "min"


def _current(item: _Item) -> list[int | None]:
    return [None if lab is None else int(lab["label"]) for lab in item.labels]


def _consistent(item: _Item) -> bool:
    return check_consistency(item.aggregation, item.response_label, _current(item), mean_slack=0.0) is None


def _first_error_end(item: _Item) -> int | None:
    """For first-error data (a ``max`` response labelled 0, 0, ..., positive, then nothing): the number of
    steps up to and including the first error; None for any other labelling."""
    if item.aggregation != "max":
        return None
    labels = _current(item)
    first = next((i for i, v in enumerate(labels) if v is None or v > 0), None)
    if first is None or labels[first] is None:
        return None
    if any(v is not None for v in labels[first + 1 :]):
        return None
    return first + 1


@dataclass(frozen=True, slots=True)
class _Step:
    defect: (
        float | None
    )  # defect level in [0, 1] (labels: level / top; scores: probability), None: unlabelled
    source: str
    annotator: str | None
    soft_good: float | None  # P(step is good) given the response label, for unlabelled steps


def _steps(item: _Item, opts: _Options) -> tuple[list[_Step] | None, str | None]:
    """The steps a step format writes for ``item`` and, when it is left out, why (:mod:`db.export`'s
    docstring)."""
    if not _consistent(item):
        return None, LEFT_OUT_CONTRADICTS
    bad = _positive_is_bad(item.aggregation, opts.positive_is)
    top = max(float(opts.max_label), 1.0)
    end = _first_error_end(item)
    steps = []
    for label, given in list(zip(item.labels, item.given_label, strict=True))[:end]:
        soft = None
        if given is not None and label is None:
            soft = 1.0 - given if bad else given
        if label is not None:
            level = label["label"] / top
            steps.append(_Step(level if bad else 1.0 - level, label["source"], label["annotator"], None))
        elif opts.scores_as_labels and given is not None:
            steps.append(
                _Step(given if bad else 1.0 - given, SCORE, None, soft if opts.soft_labels else None)
            )
        else:
            steps.append(_Step(None, NONE, None, soft if opts.soft_labels else None))
    if any(s.defect is None for s in steps) and not opts.soft_labels:
        unscored = any(g is None for g, lab in zip(item.given_label, item.labels, strict=True) if lab is None)
        return None, LEFT_OUT_UNSCORED if opts.scores_as_labels and unscored else LEFT_OUT_UNLABELLED
    return steps, None


def _native_row(
    item: _Item, dataset: str, mv: ModelVersion | None, exported_at: str, soft_labels: bool
) -> dict[str, Any]:
    current = _current(item)
    consistent = _consistent(item)
    fractal: dict[str, Any] = {
        "labels": item.labels,
        "annotations": item.annotations,
        "adjudicated": item.adjudication,
        "scores": item.scores if mv else None,
        "uncertainties": item.uncertainties if mv else None,
        "model_version": None
        if mv is None
        else {"version": mv.version, "method": mv.method, "status": mv.status},
        "split": item.split,
        "consistent": consistent,
        "provenance": {
            "dataset": dataset,
            "response_db_id": item.id,
            "file": item.file,
            "sha256": item.sha256,
            "segmenter_version": SEGMENTER_VERSION,
            "exported_at": exported_at,
        },
    }
    if soft_labels:
        fractal["soft_labels"] = item.given_label
    record = ResponseRecord(
        id=item.external_id,
        context=item.context,
        text=item.text,
        spans=item.spans,
        response_label=math.nan if item.response_label is None else item.response_label,
        aggregation=item.aggregation,  # type: ignore[arg-type]
        sentence_labels=current if consistent and any(v is not None for v in current) else None,
        task=item.task,
        meta={**item.meta, PROVENANCE_META_KEY: fractal},
    )
    return record_to_dict(record)


def _stepwise_row(item: _Item, steps: list[_Step], opts: _Options) -> dict[str, Any]:
    return {
        "id": item.external_id,
        "prompt": item.context,
        "completions": [s.text for s in item.spans[: len(steps)]],
        "labels": [None if s.defect is None else bool(s.defect < 0.5) for s in steps],
        "sources": [s.source for s in steps],
        "annotators": [s.annotator for s in steps],
        "soft_labels": [s.soft_good for s in steps] if opts.soft_labels else None,
    }


def _rating(level: float | None, source: str) -> int | None:
    if level is None:
        return None
    if source == SCORE:
        return 1 if level < 1 / 3 else (-1 if level > 2 / 3 else 0)
    return 1 if level == 0 else (-1 if level == 1 else 0)


def _prm800k_row(item: _Item, steps: list[_Step], opts: _Options) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    ratings: list[int | None] = []
    for span, step in zip(item.spans, steps, strict=False):
        ratings.append(_rating(step.defect, step.source))
        completion: dict[str, Any] = {
            "text": span.text,
            "rating": ratings[-1],
            "source": step.source,
            "annotator": step.annotator,
        }
        if opts.soft_labels:
            completion["soft_label"] = step.soft_good
        rows.append({"completions": [completion], "human_completion": None, "chosen_completion": 0})
    found_error = -1 in ratings
    return {
        "id": item.external_id,
        "question": {"problem": item.context},
        "label": {"steps": rows, "finish_reason": "found_error" if found_error else "solution"},
    }


def _kto_row(item: _Item, opts: _Options) -> dict[str, Any]:
    """One KTO row; ``item`` has a response label (the export leaves out responses without one)."""
    assert item.response_label is not None
    level = item.response_label / max(float(opts.max_label), 1.0)
    bad = _positive_is_bad(item.aggregation, opts.positive_is)
    return {
        "id": item.external_id,
        "prompt": item.context,
        "completion": item.text,
        "label": bool(level < 0.5) if bad else bool(level >= 0.5),
        "sentence_labels": _current(item),
        "sources": [NONE if lab is None else lab["source"] for lab in item.labels],
        "annotators": [None if lab is None else lab["annotator"] for lab in item.labels],
    }
