"""What an export reads from the store: a dataset's responses in id order, batch by batch, with their
sentences, exported labels, scores, overlap annotations, adjudication and given-label probabilities."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

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
    live_sentence,
)
from db.sources import HUMAN_SOURCES
from fractal_core.data.records import Span, top_level
from fractal_core.errors import InputError
from fractal_core.mil.reviewer import calibrate, label_conditioned_flat, view_map

_BATCH = 2000


@dataclass(slots=True)
class _Item:
    """One response as the exporters see it."""

    id: int
    external_id: str
    context: str
    text: str
    response_label: float | None  # None: no label of its own (a response of a preference pair)
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
        .where(Sentence.response_id.in_(ids), live_sentence())
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


def _given_label(
    items: Sequence[_Item], max_label: float, label_kind: str, calibration: dict[str, Any] | None = None
) -> None:
    """Fill ``given_label`` of a batch: the reviewer view (scores given the response label and the exported
    labels) for every response whose unlabelled sentences are all scored, one vectorised call per
    aggregation; the scores go through the version's step calibration where the view uses it
    (``reviewer.view_map``)."""
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
        scores = calibrate(scores, view_map(calibration))  # NaN stays NaN
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
    version = session.get(ModelVersion, model_version_id) if model_version_id is not None else None
    calibration = (version.metrics or {}).get("step_calibration") if version is not None else None
    while True:
        batch = _read_batch(session, dataset_id, model_version_id, last, human_only)
        if not batch:
            return
        last = batch[-1].id
        if model_version_id is not None:
            _given_label(batch, max_label, label_kind, calibration)
        else:
            for item in batch:
                item.given_label = [None] * len(item.spans)
        yield from batch


def export_model_version(session: Session, ds: Dataset, model_version: int | None) -> ModelVersion | None:
    """The model version an export reads scores from: ``model_version`` of ``ds`` (``InputError`` on the
    ``model`` field when it has none such), else the dataset's active version (None before any training)."""
    if model_version is None:
        return session.get(ModelVersion, ds.active_model_version_id) if ds.active_model_version_id else None
    mv = session.scalars(
        select(ModelVersion).where(ModelVersion.dataset_id == ds.id, ModelVersion.version == model_version)
    ).first()
    if mv is None:
        raise InputError(f"dataset {ds.name!r} has no model version {model_version}", field="model")
    return mv
