"""Exports of a dataset, each written atomically (:func:`fractal_core.data.files.atomic_write`: a temp file in
the target directory, renamed only onto a regular file or a new name; devices, directories and special files
are refused with InputError).

Every format carries, per sentence or step, the label's **source** (:mod:`db.sources`: ``human``,
``adjudicated``, ``model``, ``imported``, ``imported_gold``; ``none`` when unlabelled) and who set it, and
all formats agree with native on both.

Formats (``fractal export --format F``):

- ``native`` (JSONL, lossless): the shared schema as written by :func:`fractal_core.data.io.record_to_dict`
  (``text`` and ``spans`` keep the offsets) plus ``meta.fractal``: ``labels`` (per sentence ``{label, source,
  annotator, at}`` or null: every current label), ``annotations`` (overlap responses: ``{annotator: [label or
  null per sentence]}``, each annotator's own labels), ``adjudicated`` (``{reviewer, at}`` of the latest
  adjudication, or null), ``scores`` / ``uncertainties`` (per sentence, from the model version, null when
  unscored), ``soft_labels`` (with ``soft_labels=True``, below), ``model_version`` (``{version, method,
  status}`` or null), ``split``, ``consistent`` (whether the labels fit the response label) and
  ``provenance`` (dataset, source file and its sha256, segmenter version, export time). Top-level
  ``sentence_labels`` holds the current labels when they are consistent with the response label (the reader
  refuses contradictions), else null. ``fractal ingest`` of a native export reproduces responses, sentences
  and the consistent labels (as the ingesting user's ``imported`` labels: provenance is never restored).
- ``stepwise-jsonl`` / ``stepwise-parquet``: TRL's stepwise supervision, ``{id, prompt, completions, labels,
  sources, annotators, soft_labels}`` with ``labels[i]`` True when step i is *good* (ordinal levels: good
  below half the top level, so with DelucionQA's 0 supported / 1 neither / 2 conflicted only "supported" is
  good).
- ``prm800k``: PRM800K-style step ratings, ``{id, question: {problem}, label: {steps: [{completions: [{text,
  rating, source, annotator, soft_label}], chosen_completion: 0}], finish_reason}}`` with rating +1 good, 0
  neutral, -1 bad, null unlabelled.
- ``kto``: response level ``{id, prompt, completion, label, sentence_labels, sources, annotators}``, label
  True when the response is desirable.

Which steps a step format writes, per response:

- every step labelled: all of them;
- **first-error data** (a ``max`` response whose labels are a run of 0s ending at its first positive label,
  the rest unlabelled, as ProcessBench and PRM800K annotate): the steps up to and including the first error,
  which is where such a solution ends as process-reward data (never dropped);
- labels that contradict the response label: the response is left out of the step formats (native holds
  them in ``meta.fractal.labels`` only), so no format states labels another says are not usable;
- other steps without a label: left out (counted, with the reason), unless ``scores_as_labels=True`` (CLI
  ``--scores-as-labels``) fills them from the model's score given the response label (problem probability
  >= 0.5 -> bad; ratings: < 1/3 -> +1, > 2/3 -> -1, else 0), with source ``score``. A score never becomes a
  hard label otherwise. With ``soft_labels=True`` such steps are written with label null.

Options: ``human_only=True`` (CLI ``--human-only``) keeps only labels a person set in the tool (``human``,
``adjudicated``); other labels are exported as unlabelled. ``soft_labels=True`` (``--soft-labels``) adds, for
every unlabelled sentence, the model's probability given the response label and the labels exported
(:func:`fractal_core.mil.reviewer.label_conditioned_flat`): ``meta.fractal.soft_labels`` is P(level >= 1) per
sentence (null where labelled or unscored); the step formats write P(step is good) in the direction of
their ``labels``.

What "positive" means: with ``max`` bags a positive sentence is a defect (the bag is bad iff some sentence
is), with ``min`` bags a positive sentence is good (the bag is good iff every sentence is); ``mean`` bags count
positives as defects. ``positive_is`` overrides this. Ratings from labels: binary defect -> -1, fine -> +1;
ordinal levels 0 / middle / top -> +1 / 0 / -1. KTO: a response is desirable when its label (divided by the
top level for ordinal) is below 0.5 under defect semantics, at or above 0.5 under good semantics.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, and_, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import (
    Adjudication,
    Annotation,
    CurrentLabel,
    Dataset,
    IngestedFile,
    ModelVersion,
    Response,
    Sentence,
    SentenceScore,
    utcnow,
)
from db.repository import require_dataset
from db.sources import HUMAN_SOURCES, NONE
from fractal_core.data.files import atomic_write, check_output_file
from fractal_core.data.io import record_to_dict
from fractal_core.data.records import ResponseRecord, Span, top_level
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.errors import InputError
from fractal_core.mil.reviewer import label_conditioned_flat
from fractal_core.mil.semantics import check_consistency

ExportFormat = Literal["native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto"]
FORMATS: tuple[str, ...] = ("native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto")
SCORE = "score"
"""Source of a step label filled from the model's score (only with ``scores_as_labels``)."""
_BATCH = 2000

LEFT_OUT_CONTRADICTS = "its labels contradict the response label"
LEFT_OUT_UNLABELLED = "a step without a label (--scores-as-labels or --soft-labels write it)"
LEFT_OUT_UNSCORED = "a step with neither label nor score"


@dataclass(frozen=True, slots=True)
class ExportSummary:
    path: str
    format: str
    n_rows: int  # lines / rows written
    n_skipped: int  # responses left out of a step format (reasons in ``left_out``)
    model_version: int | None  # per-dataset version number whose scores were used
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> responses


@dataclass(slots=True)
class _Item:
    """One response as the exporters see it."""

    id: int
    external_id: str
    context: str
    text: str
    response_label: float
    aggregation: str
    split: str | None
    task: str | None
    meta: dict[str, Any]
    file: str | None
    sha256: str | None
    spans: list[Span]
    labels: list[dict[str, Any] | None]  # the exported label per sentence: {label, source, annotator, at}
    scores: list[float | None]
    uncertainties: list[float | None]
    annotations: dict[str, list[int | None]]  # overlap responses: each annotator's own label per sentence
    adjudication: dict[str, str] | None  # {"reviewer", "at"} of the latest adjudication, else None
    # P(level >= 1 | response label, exported labels) per unlabelled scored sentence, else None
    given_label: list[float | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Options:
    max_label: float
    positive_is: str | None
    soft_labels: bool
    scores_as_labels: bool


def _read_batch(
    session: Session, dataset_id: int, model_version_id: int | None, after: int, human_only: bool
) -> list[_Item]:
    responses = session.execute(
        select(Response, IngestedFile.filename, IngestedFile.sha256)
        .outerjoin(IngestedFile, IngestedFile.id == Response.file_id)
        .where(Response.dataset_id == dataset_id, Response.id > after)
        .order_by(Response.id)
        .limit(_BATCH)
    ).all()
    if not responses:
        return []
    ids = [r.id for r, _, _ in responses]
    rows = session.execute(
        select(
            Sentence.response_id,
            Sentence.start,
            Sentence.end,
            Sentence.text,
            CurrentLabel.label,
            CurrentLabel.source,
            CurrentLabel.annotator,
            CurrentLabel.updated_at,
            SentenceScore.score,
            SentenceScore.uncertainty,
            Sentence.id,
        )
        .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
        .outerjoin(
            SentenceScore,
            and_(
                SentenceScore.sentence_id == Sentence.id,
                SentenceScore.model_version_id == (model_version_id or -1),
            ),
        )
        .where(Sentence.response_id.in_(ids))
        .order_by(Sentence.response_id, Sentence.position)
    ).all()
    by_response: dict[int, list[Any]] = {rid: [] for rid in ids}
    for row in rows:
        by_response[row[0]].append(row)
    slot = {row[10]: i for sents in by_response.values() for i, row in enumerate(sents)}
    annotations: dict[int, dict[str, list[int | None]]] = {rid: {} for rid in ids}
    for rid, sid, who, label in session.execute(
        select(Annotation.response_id, Annotation.sentence_id, Annotation.annotator, Annotation.label)
        .where(Annotation.response_id.in_(ids))
        .order_by(Annotation.annotator)
    ):
        per = annotations[rid].setdefault(who, [None] * len(by_response[rid]))
        per[slot[sid]] = label
    adjudicated: dict[int, dict[str, str]] = {}
    for rid, reviewer, at in session.execute(
        select(Adjudication.response_id, Adjudication.reviewer, Adjudication.created_at)
        .where(Adjudication.response_id.in_(ids))
        .order_by(Adjudication.id)
    ):
        adjudicated[rid] = {"reviewer": reviewer, "at": at.isoformat()}

    def kept(s: Any) -> dict[str, Any] | None:
        if s[4] is None or (human_only and s[5] not in HUMAN_SOURCES):
            return None
        return {"label": s[4], "source": s[5], "annotator": s[6], "at": s[7].isoformat()}

    return [
        _Item(
            id=r.id,
            external_id=r.external_id,
            context=r.context,
            text=r.text,
            response_label=r.response_label,
            aggregation=r.aggregation,
            split=r.split,
            task=r.task,
            meta=dict(r.meta or {}),
            file=filename,
            sha256=sha,
            spans=[Span(s[1], s[2], s[3]) for s in by_response[r.id]],
            labels=[kept(s) for s in by_response[r.id]],
            scores=[s[8] for s in by_response[r.id]],
            uncertainties=[s[9] for s in by_response[r.id]],
            annotations=annotations[r.id],
            adjudication=adjudicated.get(r.id),
        )
        for r, filename, sha in responses
    ]


def _given_label(items: Sequence[_Item], max_label: float, label_kind: str) -> None:
    """Fill ``given_label`` of a batch: the reviewer view (scores given the response label and the exported
    labels) for every response whose unlabelled sentences are all scored, one vectorised call per
    aggregation."""
    n_levels = top_level(label_kind, max_label) + 1
    for item in items:
        item.given_label = [None] * len(item.spans)
    for aggregation in sorted({it.aggregation for it in items}):
        group = [
            it
            for it in items
            if it.aggregation == aggregation
            and all(s is not None for s, lab in zip(it.scores, it.labels, strict=True) if lab is None)
        ]
        if not group:
            continue
        sizes = np.array([len(it.spans) for it in group], dtype=np.int64)  # (B,)
        scores = np.array([np.nan if v is None else v for it in group for v in it.scores])  # (N,)
        entered = np.array(
            [np.nan if lab is None else float(lab["label"]) for it in group for lab in it.labels]
        )  # (N,)
        view = label_conditioned_flat(
            np.where(np.isnan(scores), 0.5, scores),  # scored wherever unlabelled (above)
            entered,
            np.repeat(np.arange(len(group)), sizes),
            np.array([it.response_label for it in group], dtype=np.float64),
            aggregation=aggregation,
            n_levels=n_levels,
        )
        values = np.where(np.isnan(entered), view, np.nan).tolist()
        start = 0
        for it, n in zip(group, sizes.tolist(), strict=True):
            it.given_label = [None if v != v else float(v) for v in values[start : start + n]]
            start += n


def _iter_items(
    session: Session,
    dataset_id: int,
    model_version_id: int | None,
    *,
    human_only: bool = False,
    max_label: float = 1.0,
    label_kind: str = "binary",
) -> Iterator[_Item]:
    """Responses in id order, read in batches inside one read transaction (a consistent snapshot)."""
    last = 0
    while True:
        batch = _read_batch(session, dataset_id, model_version_id, last, human_only)
        if not batch:
            return
        last = batch[-1].id
        if model_version_id is not None:
            _given_label(batch, max_label, label_kind)
        else:
            for item in batch:
                item.given_label = [None] * len(item.spans)
        yield from batch


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
    """The steps a step format writes for ``item`` and, when it is left out, why (module docstring)."""
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
        response_label=item.response_label,
        aggregation=item.aggregation,  # type: ignore[arg-type]
        sentence_labels=current if consistent and any(v is not None for v in current) else None,
        task=item.task,
        meta={**item.meta, "fractal": fractal},
    )
    return record_to_dict(record)


def export_dataset(
    engine: Engine,
    dataset: str | int,
    out: str | Path,
    *,
    format: ExportFormat,
    model_version: int | None = None,
    positive_is: Literal["bad", "good"] | None = None,
    human_only: bool = False,
    soft_labels: bool = False,
    scores_as_labels: bool = False,
) -> ExportSummary:
    """Write ``dataset`` to ``out`` in ``format`` (see the module docstring); returns what was written.

    ``model_version`` is the per-dataset version number (``fractal export --model 3``); default: the active
    version, if any. ``human_only``: only labels a person set in the tool; ``soft_labels``: the model's
    given-label probability of every unlabelled sentence; ``scores_as_labels``: step formats fill unlabelled
    steps from that probability (source ``score``). Raises InputError for an unknown dataset, version or
    format.
    """
    if format not in FORMATS:
        raise InputError(
            f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}", field="format"
        )
    if positive_is is not None and positive_is not in ("bad", "good"):
        raise InputError("positive_is must be 'bad' or 'good'", field="positive_is")
    ds_row = require_dataset(engine, dataset)
    out_path = check_output_file(out)
    counts = {"rows": 0, "skipped": 0}
    reasons: Counter[str] = Counter()

    with session_scope(engine, write=False) as session:
        ds = session.get(Dataset, ds_row.id)
        assert ds is not None
        mv: ModelVersion | None
        if model_version is not None:
            mv = session.scalars(
                select(ModelVersion).where(
                    ModelVersion.dataset_id == ds.id, ModelVersion.version == model_version
                )
            ).first()
            if mv is None:
                raise InputError(f"dataset {ds.name!r} has no model version {model_version}", field="model")
        else:
            mv = session.get(ModelVersion, ds.active_model_version_id) if ds.active_model_version_id else None
        items = _iter_items(
            session,
            ds.id,
            mv.id if mv else None,
            human_only=human_only,
            max_label=ds.max_label,
            label_kind=ds.label_kind,
        )
        exported_at = utcnow().isoformat()
        opts = _Options(ds.max_label, positive_is, soft_labels, scores_as_labels)

        def stepped(row: Any) -> Iterator[dict[str, Any] | None]:
            for it in items:
                steps, why = _steps(it, opts)
                if steps is None:
                    reasons[why or ""] += 1
                    yield None
                else:
                    yield row(it, steps, opts)

        def jsonl(rows: Iterator[dict[str, Any] | None]) -> Any:
            def write(tmp: Path) -> None:
                with tmp.open("w", encoding="utf-8", newline="\n") as handle:
                    for row in rows:
                        if row is None:
                            counts["skipped"] += 1
                            continue
                        handle.write(json.dumps(row, ensure_ascii=False))
                        handle.write("\n")
                        counts["rows"] += 1
                    handle.flush()
                    os.fsync(handle.fileno())

            return write

        if format == "native":
            writer = jsonl(_native_row(it, ds.name, mv, exported_at, soft_labels) for it in items)
        elif format == "stepwise-jsonl":
            writer = jsonl(stepped(_stepwise_row))
        elif format == "stepwise-parquet":
            writer = _parquet_writer(stepped(_stepwise_row), counts)
        elif format == "prm800k":
            writer = jsonl(stepped(_prm800k_row))
        else:
            writer = jsonl(_kto_row(it, opts) for it in items)
        atomic_write(out_path, writer)
    return ExportSummary(
        str(out_path), format, counts["rows"], counts["skipped"], mv.version if mv else None, dict(reasons)
    )


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


def _parquet_writer(rows: Iterator[dict[str, Any] | None], counts: dict[str, int]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("completions", pa.list_(pa.string())),
            ("labels", pa.list_(pa.bool_())),
            ("sources", pa.list_(pa.string())),
            ("annotators", pa.list_(pa.string())),
            ("soft_labels", pa.list_(pa.float64())),
        ]
    )

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as parquet:
            batch: list[dict[str, Any]] = []
            for row in rows:
                if row is None:
                    counts["skipped"] += 1
                    continue
                batch.append(row)
                counts["rows"] += 1
                if len(batch) >= _BATCH:
                    parquet.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch or counts["rows"] == 0:
                parquet.write_table(pa.Table.from_pylist(batch, schema=schema))

    return write
