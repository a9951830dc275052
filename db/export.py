"""Exports of a dataset, each written atomically (:func:`fractal_core.data.files.atomic_write`: a temp file in the
target directory, renamed only onto a regular file or a new name; devices, directories and special files are
refused with InputError).

Formats (``fractal export --format F``):

- ``native`` (JSONL, lossless): the shared schema as written by :func:`fractal_core.data.io.record_to_dict` (``text``
  and ``spans`` keep the offsets) plus ``meta.fractal``: ``labels`` (per sentence ``{label, source, annotator,
  at}`` or null: every current label, whatever its source, so the adjudicated gold of an overlap response too),
  ``annotations`` (overlap responses: ``{annotator: [label or null per sentence]}``, each annotator's own
  labels), ``adjudicated`` (``{reviewer, at}`` of the latest adjudication, or null), ``scores`` / ``uncertainties`` (per sentence, from
  the model version, null when unscored), ``model_version`` (``{version, method, status}`` or null), ``split``
  and ``provenance`` (dataset, source file and its sha256, segmenter version, export time). Top-level
  ``sentence_labels`` holds the current labels when they are consistent with the response label (the reader
  refuses contradictions), else null; the labels themselves are always in ``meta.fractal.labels``, which
  ingest restores, so native export -> ingest reproduces responses, sentences and labels.
- ``stepwise-jsonl`` / ``stepwise-parquet``: TRL's stepwise supervision, ``{id, prompt, completions, labels}``
  with ``labels[i]`` True when step i is *good* (ordinal levels: good below half the top level, so with
  DelucionQA's 0 supported / 1 neither / 2 conflicted only "supported" is good).
- ``prm800k``: PRM800K-style step ratings, ``{id, question: {problem}, label: {steps: [{completions: [{text,
  rating, source}], chosen_completion: 0}], finish_reason}}`` with rating +1 good, 0 neutral, -1 bad.
- ``kto``: response level ``{id, prompt, completion, label}``, label True when the response is desirable.

What "positive" means: with ``max`` bags a positive sentence is a defect (the bag is bad iff some sentence
is), with ``min`` bags a positive sentence is good (the bag is good iff every sentence is); ``mean`` bags count
positives as defects. ``positive_is`` overrides this.

Step labels, in order of preference: the current label (any source), else the model version's score
(defect probability >= 0.5 -> bad); a response with a step that has neither is left out of ``stepwise`` (its
format needs every label) and gets rating null in ``prm800k``. Ratings from labels: binary defect -> -1, fine
-> +1; ordinal levels 0 / middle / top -> +1 / 0 / -1. Ratings from scores: defect probability < 1/3 -> +1,
> 2/3 -> -1, else 0. KTO: a response is desirable when its label (divided by the top level for ordinal)
is below 0.5 under defect semantics, at or above 0.5 under good semantics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
from fractal_core.data.files import atomic_write, check_output_file
from fractal_core.data.io import record_to_dict
from fractal_core.data.records import ResponseRecord, Span
from fractal_core.data.segment import SEGMENTER_VERSION
from fractal_core.errors import InputError
from fractal_core.mil.semantics import check_consistency

ExportFormat = Literal["native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto"]
FORMATS: tuple[str, ...] = ("native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto")
_BATCH = 2000


@dataclass(frozen=True, slots=True)
class ExportSummary:
    path: str
    format: str
    n_rows: int  # lines / rows written
    n_skipped: int  # responses left out (stepwise: a step with neither label nor score)
    model_version: int | None  # per-dataset version number whose scores were used


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
    labels: list[dict[str, Any] | None]
    scores: list[float | None]
    uncertainties: list[float | None]
    annotations: dict[str, list[int | None]]  # overlap responses: each annotator's own label per sentence
    adjudication: dict[str, str] | None  # {"reviewer", "at"} of the latest adjudication, else None


def _iter_items(session: Session, dataset_id: int, model_version_id: int | None) -> Iterator[_Item]:
    """Responses in id order, read in batches inside one read transaction (a consistent snapshot)."""
    last = 0
    while True:
        responses = session.execute(
            select(Response, IngestedFile.filename, IngestedFile.sha256)
            .outerjoin(IngestedFile, IngestedFile.id == Response.file_id)
            .where(Response.dataset_id == dataset_id, Response.id > last)
            .order_by(Response.id)
            .limit(_BATCH)
        ).all()
        if not responses:
            return
        ids = [r.id for r, _, _ in responses]
        last = ids[-1]
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
        for r, filename, sha in responses:
            sents = by_response[r.id]
            yield _Item(
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
                spans=[Span(s[1], s[2], s[3]) for s in sents],
                labels=[
                    None
                    if s[4] is None
                    else {"label": s[4], "source": s[5], "annotator": s[6], "at": s[7].isoformat()}
                    for s in sents
                ],
                scores=[s[8] for s in sents],
                uncertainties=[s[9] for s in sents],
                annotations=annotations[r.id],
                adjudication=adjudicated.get(r.id),
            )


def _positive_is_bad(aggregation: str, positive_is: str | None) -> bool:
    if positive_is is not None:
        return positive_is == "bad"
    return aggregation != "min"


def _step_defects(item: _Item, max_label: float, positive_is: str | None) -> list[tuple[float | None, str]]:
    """Per step: (defect level in [0, 1] or None, where it came from: the label source or "model")."""
    bad = _positive_is_bad(item.aggregation, positive_is)
    top = max(float(max_label), 1.0)
    out: list[tuple[float | None, str]] = []
    for label, score in zip(item.labels, item.scores, strict=True):
        if label is not None:
            level = label["label"] / top
            out.append((level if bad else 1.0 - level, label["source"]))
        elif score is not None:
            out.append((score if bad else 1.0 - score, "model"))
        else:
            out.append((None, "none"))
    return out


def _native_row(item: _Item, dataset: str, mv: ModelVersion | None, exported_at: str) -> dict[str, Any]:
    current = [None if lab is None else int(lab["label"]) for lab in item.labels]
    consistent = check_consistency(item.aggregation, item.response_label, current, mean_slack=0.0) is None
    record = ResponseRecord(
        id=item.external_id,
        context=item.context,
        text=item.text,
        spans=item.spans,
        response_label=item.response_label,
        aggregation=item.aggregation,  # type: ignore[arg-type]
        sentence_labels=current if consistent and any(v is not None for v in current) else None,
        task=item.task,
        meta={
            **item.meta,
            "fractal": {
                "labels": item.labels,
                "annotations": item.annotations,
                "adjudicated": item.adjudication,
                "scores": item.scores if mv else None,
                "uncertainties": item.uncertainties if mv else None,
                "model_version": None
                if mv is None
                else {"version": mv.version, "method": mv.method, "status": mv.status},
                "split": item.split,
                "provenance": {
                    "dataset": dataset,
                    "response_db_id": item.id,
                    "file": item.file,
                    "sha256": item.sha256,
                    "segmenter_version": SEGMENTER_VERSION,
                    "exported_at": exported_at,
                },
            },
        },
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
) -> ExportSummary:
    """Write ``dataset`` to ``out`` in ``format`` (see the module docstring); returns what was written.

    ``model_version`` is the per-dataset version number (``fractal export --model 3``); default: the active
    version, if any. Raises InputError for an unknown dataset, version or format.
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
        mv_id = mv.id if mv else None
        items = _iter_items(session, ds.id, mv_id)
        exported_at = utcnow().isoformat()

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
            writer = jsonl(_native_row(it, ds.name, mv, exported_at) for it in items)
        elif format == "stepwise-jsonl":
            writer = jsonl(_stepwise_row(it, ds.max_label, positive_is) for it in items)
        elif format == "stepwise-parquet":
            writer = _parquet_writer((_stepwise_row(it, ds.max_label, positive_is) for it in items), counts)
        elif format == "prm800k":
            writer = jsonl(_prm800k_row(it, ds.max_label, positive_is) for it in items)
        else:
            writer = jsonl(_kto_row(it, ds.max_label, positive_is) for it in items)
        atomic_write(out_path, writer)
    return ExportSummary(str(out_path), format, counts["rows"], counts["skipped"], mv.version if mv else None)


def _stepwise_row(item: _Item, max_label: float, positive_is: str | None) -> dict[str, Any] | None:
    defects = _step_defects(item, max_label, positive_is)
    if not defects or any(level is None for level, _ in defects):
        return None
    return {
        "id": item.external_id,
        "prompt": item.context,
        "completions": [s.text for s in item.spans],
        "labels": [bool(level is not None and level < 0.5) for level, _ in defects],
    }


def _rating(level: float | None, source: str) -> int | None:
    if level is None:
        return None
    if source == "model":
        return 1 if level < 1 / 3 else (-1 if level > 2 / 3 else 0)
    return 1 if level == 0 else (-1 if level == 1 else 0)


def _prm800k_row(item: _Item, max_label: float, positive_is: str | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    ratings: list[int | None] = []
    for span, (level, source) in zip(item.spans, _step_defects(item, max_label, positive_is), strict=True):
        ratings.append(_rating(level, source))
        steps.append(
            {
                "completions": [{"text": span.text, "rating": ratings[-1], "source": source}],
                "human_completion": None,
                "chosen_completion": 0,
            }
        )
    found_error = -1 in ratings
    return {
        "id": item.external_id,
        "question": {"problem": item.context},
        "label": {"steps": steps, "finish_reason": "found_error" if found_error else "solution"},
    }


def _kto_row(item: _Item, max_label: float, positive_is: str | None) -> dict[str, Any]:
    level = item.response_label / max(float(max_label), 1.0)
    bad = _positive_is_bad(item.aggregation, positive_is)
    return {
        "id": item.external_id,
        "prompt": item.context,
        "completion": item.text,
        "label": bool(level < 0.5) if bad else bool(level >= 0.5),
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
