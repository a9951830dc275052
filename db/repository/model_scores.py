"""A model version's scores: sentence scores, per-response summaries, and the scores of labelled sentences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from sqlalchemy import Engine, Table, and_, case, delete, func, insert, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import (
    GOLD_SOURCES,
    CurrentLabel,
    ModelVersion,
    Response,
    ResponseScore,
    Sentence,
    SentenceScore,
    live_sentence,
)
from db.rows import LabelledScores
from fractal_core.errors import InputError
from fractal_core.mil import semantics


def store_scores(
    engine: Engine,
    model_version_id: int,
    sentence_ids: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    uncertainties: Sequence[float] | np.ndarray | None = None,
    *,
    chunk_size: int = 20_000,
) -> int:
    """Bulk-write sentence scores of a version that is still training; returns the rows written.

    Shapes: ``sentence_ids``, ``scores`` and ``uncertainties`` are (n,); scores and uncertainties in [0, 1]
    (default uncertainty: ``fractal_core.mil.semantics.uncertainty``). Rows go in chunks, each its own short transaction, so
    annotators saving corrections meanwhile wait at most one chunk; the version's scores are only used once
    :func:`~db.repository.model_registry.finish_model_version` marks it ready.
    """
    ids = np.asarray(sentence_ids, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    unc = (
        semantics.uncertainty(values)
        if uncertainties is None
        else np.asarray(uncertainties, dtype=np.float64)
    )
    if not (ids.ndim == values.ndim == unc.ndim == 1 and len(ids) == len(values) == len(unc)):
        raise ValueError(
            f"sentence_ids, scores and uncertainties must be (n,) each: {ids.shape} {values.shape} {unc.shape}"
        )
    for name, arr in (("scores", values), ("uncertainties", unc)):
        if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
            raise ValueError(f"{name} must be finite and in [0, 1]")
    status = run_read(
        engine, lambda s: s.scalar(select(ModelVersion.status).where(ModelVersion.id == model_version_id))
    )
    if status != "training":
        raise ValueError(
            f"model version {model_version_id} is {status or 'missing'}; scores go to a training version"
        )
    table = cast(Table, SentenceScore.__table__)
    for lo in range(0, len(ids), chunk_size):
        hi = lo + chunk_size
        rows = [
            {"model_version_id": model_version_id, "sentence_id": i, "score": s, "uncertainty": u}
            for i, s, u in zip(ids[lo:hi].tolist(), values[lo:hi].tolist(), unc[lo:hi].tolist(), strict=True)
        ]
        _insert_rows(engine, table, rows)
    return len(ids)


def _insert_rows(engine: Engine, table: Table, rows: list[dict[str, Any]]) -> None:
    run_write(engine, lambda session: session.execute(insert(table), rows))


def _check_training(session: Session, model_version_id: int) -> ModelVersion:
    mv = session.get(ModelVersion, model_version_id)
    if mv is None:
        raise InputError(f"no model version with id {model_version_id}", field="model")
    if mv.status != "training":
        raise ValueError(f"model version {mv.version} is {mv.status}; scores go to a training version")
    return mv


def store_response_summaries(
    engine: Engine,
    model_version_id: int,
    response_ids: Sequence[int] | np.ndarray,
    summaries: semantics.ResponseSummaries,
    *,
    chunk_size: int = 20_000,
) -> int:
    """Write the per-response figures the library computed (``fractal_core.mil.semantics.summarise``) for a
    version that is still training; returns the rows written. ``response_ids`` (B,) is aligned with every
    array of ``summaries``. Replaces what the version had;
    :func:`~db.repository.model_registry.finish_model_version` keeps them."""
    ids = np.asarray(response_ids, dtype=np.int64)
    columns = {
        "score": summaries.score,
        "uncertainty": summaries.uncertainty,
        "disagreement": summaries.disagreement,
    }
    if ids.ndim != 1 or any(np.shape(v) != ids.shape for v in (*columns.values(), summaries.consistent)):
        raise ValueError("response_ids and every summary array must be (B,) and aligned")
    for name, values in columns.items():
        finite = values[np.isfinite(values)]
        if finite.min(initial=0.0) < 0.0 or finite.max(initial=0.0) > 1.0:
            raise ValueError(f"response {name} must lie in [0, 1]")

    def clear(session: Session) -> None:
        _check_training(session, model_version_id)
        session.execute(delete(ResponseScore).where(ResponseScore.model_version_id == model_version_id))

    run_write(engine, clear)
    table = cast(Table, ResponseScore.__table__)
    for lo in range(0, len(ids), chunk_size):
        part = semantics.ResponseSummaries(
            *(
                getattr(summaries, f)[lo : lo + chunk_size]
                for f in semantics.ResponseSummaries.__dataclass_fields__
            )
        )
        _insert_rows(engine, table, _summary_rows(model_version_id, ids[lo : lo + chunk_size], part))
    return len(ids)


def _summary_rows(
    model_version_id: int, ids: np.ndarray, summaries: semantics.ResponseSummaries
) -> list[dict[str, Any]]:
    def clean(values: np.ndarray) -> list[float | None]:
        return [v if math.isfinite(v) else None for v in values.tolist()]  # undefined -> NULL

    return [
        {
            "model_version_id": model_version_id,
            "response_id": r,
            "score": s,
            "uncertainty": u,
            "disagreement": d,
            "consistent": None if c < 0 else c,
        }
        for r, s, u, d, c in zip(
            ids.tolist(),
            clean(summaries.score),
            clean(summaries.uncertainty),
            clean(summaries.disagreement),
            summaries.consistent.tolist(),
            strict=True,
        )
    ]


def summarise_scores(session: Session, mv: ModelVersion) -> None:
    """Per-response figures from the version's stored sentence scores, when the caller stored none itself
    (``fractal_core.mil.semantics.summarise`` with the version's bag variant and the current gold labels); run
    by :func:`~db.repository.model_registry.finish_model_version` in its transaction."""
    if session.scalar(select(func.count()).where(ResponseScore.model_version_id == mv.id)):
        return
    foreign = session.scalar(
        select(func.count())
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .where(SentenceScore.model_version_id == mv.id, Response.dataset_id != mv.dataset_id)
    )
    if foreign:
        raise ValueError(f"{foreign} scores of model version {mv.id} belong to sentences of another dataset")
    rows = session.execute(
        select(
            Sentence.response_id,
            SentenceScore.score,
            Response.response_label,
            Response.aggregation,
            case((CurrentLabel.source.in_(GOLD_SOURCES), CurrentLabel.label), else_=-1),
        )
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .outerjoin(CurrentLabel, CurrentLabel.sentence_id == Sentence.id)
        .where(SentenceScore.model_version_id == mv.id, live_sentence())
        .order_by(Sentence.response_id)
    ).all()
    if not rows:
        return
    response, score, label, aggregation, gold = (np.asarray(c) for c in zip(*rows, strict=True))
    response_ids, bag_index = np.unique(response.astype(np.int64), return_inverse=True)
    first = np.unique(bag_index, return_index=True)[1]
    labels, aggregations = label.astype(np.float64)[first], aggregation[first]
    train = (mv.config or {}).get("train") or {}
    variant = str(train.get("bag_variant", "hard"))
    temperature = float(train.get("lse_temperature", 0.1))
    gold = gold.astype(np.int64)
    for agg in np.unique(aggregations).tolist():  # at most max, min, mean: not a loop over responses
        bags = np.flatnonzero(aggregations == agg)
        keep = np.isin(bag_index, bags)
        local = np.searchsorted(bags, bag_index[keep])
        summary = semantics.summarise(
            score[keep].astype(np.float64),
            local,
            labels[bags],
            aggregation=agg,
            variant=variant,
            temperature=temperature,
            gold=gold[keep],
        )
        summary_rows = _summary_rows(mv.id, response_ids[bags], summary)
        if summary_rows:
            session.execute(insert(ResponseScore), summary_rows)


def labelled_scores(engine: Engine, dataset_id: int, model_version_id: int) -> LabelledScores:
    """Every labelled sentence of the dataset that ``model_version_id`` scored: its score, its current label
    and whether that label is gold (one read; e.g. the Models page's calibration chart)."""

    def work(session: Session) -> list[tuple[float, int, str]]:
        rows = session.execute(
            select(SentenceScore.score, CurrentLabel.label, CurrentLabel.source)
            .join(CurrentLabel, CurrentLabel.sentence_id == SentenceScore.sentence_id)
            .join(Sentence, Sentence.id == SentenceScore.sentence_id)
            .join(Response, and_(Response.id == Sentence.response_id, Response.dataset_id == dataset_id))
            .where(SentenceScore.model_version_id == model_version_id)
        ).all()
        return [(float(s), int(label), str(src)) for s, label, src in rows]

    rows = run_read(engine, work)
    if not rows:
        empty = np.zeros(0)
        return LabelledScores(empty, empty.astype(np.int64), empty.astype(bool))
    scores, labels, sources = zip(*rows, strict=True)
    return LabelledScores(
        np.asarray(scores, dtype=np.float64),
        np.asarray(labels, dtype=np.int64),
        np.isin(np.asarray(sources, dtype=object), GOLD_SOURCES),
    )
