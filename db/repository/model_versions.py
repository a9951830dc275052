"""Model versions: register a training run, store its scores, finish, activate and roll back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
from sqlalchemy import Engine, Table, and_, case, delete, func, insert, literal, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import Dataset, ModelVersion, Response, ResponseScore, Sentence, SentenceScore, utcnow
from db.rows import ModelVersionRow
from fractal_core.errors import InputError


def _version_rows(session: Session, where: object) -> list[ModelVersionRow]:
    counts = (
        select(SentenceScore.model_version_id, func.count().label("n"))
        .group_by(SentenceScore.model_version_id)
        .subquery()
    )
    rows = session.execute(
        select(ModelVersion, Dataset.active_model_version_id, counts.c.n)
        .join(Dataset, Dataset.id == ModelVersion.dataset_id)
        .outerjoin(counts, counts.c.model_version_id == ModelVersion.id)
        .where(where)  # type: ignore[arg-type]
        .order_by(ModelVersion.version.desc())
    ).all()
    return [
        ModelVersionRow(
            id=m.id,
            dataset_id=m.dataset_id,
            version=m.version,
            method=m.method,
            status=m.status,
            config=dict(m.config or {}),
            metrics=dict(m.metrics or {}),
            artifact_path=m.artifact_path,
            error=m.error,
            parent_id=m.parent_id,
            replaced_id=m.replaced_id,
            is_active=active == m.id,
            n_scores=int(n or 0),
            created_at=m.created_at,
            finished_at=m.finished_at,
            activated_at=m.activated_at,
        )
        for m, active, n in rows
    ]


def get_model_version(engine: Engine, model_version_id: int) -> ModelVersionRow | None:
    rows = run_read(engine, lambda s: _version_rows(s, ModelVersion.id == model_version_id))
    return rows[0] if rows else None


def find_model_version(engine: Engine, dataset_id: int, version: int) -> ModelVersionRow | None:
    """A model version by its per-dataset number (the ``--model`` of ``fractal export``)."""
    rows = run_read(
        engine,
        lambda s: _version_rows(
            s, and_(ModelVersion.dataset_id == dataset_id, ModelVersion.version == version)
        ),
    )
    return rows[0] if rows else None


def list_model_versions(engine: Engine, dataset_id: int) -> list[ModelVersionRow]:
    """A dataset's model versions, newest first, with status, metrics and whether each is active."""
    return run_read(engine, lambda s: _version_rows(s, ModelVersion.dataset_id == dataset_id))


def active_model_version(engine: Engine, dataset_id: int) -> ModelVersionRow | None:
    rows = run_read(
        engine,
        lambda s: _version_rows(
            s,
            ModelVersion.id
            == select(Dataset.active_model_version_id).where(Dataset.id == dataset_id).scalar_subquery(),
        ),
    )
    return rows[0] if rows else None


def active_model_version_id(engine: Engine, dataset_id: int) -> int | None:
    """Just the id of the dataset's active version (one indexed read): cheap enough to poll for a page that
    must notice when a training job activates a new version."""
    return run_read(
        engine, lambda s: s.scalar(select(Dataset.active_model_version_id).where(Dataset.id == dataset_id))
    )


def create_model_version(
    engine: Engine,
    dataset_id: int,
    *,
    method: str,
    config: Mapping[str, object] | None = None,
    parent_id: int | None = None,
    status: str = "training",
) -> ModelVersionRow:
    """Register a training run; its number is the dataset's next version (1, 2, ...)."""

    def work(session: Session) -> int:
        if session.get(Dataset, dataset_id) is None:
            raise InputError(f"no dataset with id {dataset_id}", field="dataset")
        version = (
            session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.dataset_id == dataset_id)
            )
            or 0
        ) + 1
        mv = ModelVersion(
            dataset_id=dataset_id,
            version=version,
            method=method,
            config=dict(config or {}),
            metrics={},
            status=status,
            parent_id=parent_id,
        )
        session.add(mv)
        session.flush()
        return mv.id

    row = get_model_version(engine, run_write(engine, work))
    assert row is not None
    return row


def default_uncertainty(scores: np.ndarray) -> np.ndarray:
    """Binary uncertainty 1 - |2p - 1|: 1 at p = 0.5, 0 at p in {0, 1}. Shape (n,) -> (n,)."""
    return 1.0 - np.abs(2.0 * scores - 1.0)


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
    (default uncertainty: :func:`default_uncertainty`). Rows go in chunks, each its own short transaction, so
    annotators saving corrections meanwhile wait at most one chunk; the version's scores are only used once
    :func:`finish_model_version` marks it ready.
    """
    ids = np.asarray(sentence_ids, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    unc = (
        default_uncertainty(values) if uncertainties is None else np.asarray(uncertainties, dtype=np.float64)
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


def finish_model_version(
    engine: Engine,
    model_version_id: int,
    *,
    status: Literal["ready", "failed"] = "ready",
    metrics: Mapping[str, object] | None = None,
    artifact_path: str | None = None,
    error: str | None = None,
) -> ModelVersionRow:
    """Close a training run. ``ready`` also summarises its scores per response (aggregate score by the
    response's aggregation, max sentence uncertainty, disagreement with the bag label) for the list pages."""

    def work(session: Session) -> None:
        mv = session.get(ModelVersion, model_version_id)
        if mv is None:
            raise InputError(f"no model version with id {model_version_id}", field="model")
        if mv.status != "training":
            raise ValueError(f"model version {mv.version} is already {mv.status}")
        mv.status = status
        mv.finished_at = utcnow()
        mv.metrics = dict(metrics or {})
        mv.artifact_path = artifact_path
        mv.error = error
        if status == "ready":
            _summarise_scores(session, mv)

    run_write(engine, work)
    row = get_model_version(engine, model_version_id)
    assert row is not None
    return row


def _summarise_scores(session: Session, mv: ModelVersion) -> None:
    foreign = session.scalar(
        select(func.count())
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .where(SentenceScore.model_version_id == mv.id, Response.dataset_id != mv.dataset_id)
    )
    if foreign:
        raise ValueError(f"{foreign} scores of model version {mv.id} belong to sentences of another dataset")
    # Ordinal labels are compared with scores in [0, 1] after dividing by the top level; binary and
    # proportion labels already live in [0, 1].
    top = session.scalar(select(Dataset.max_label).where(Dataset.id == mv.dataset_id)) or 1.0
    label = Response.response_label / max(float(top), 1.0)
    agg = case(
        (Response.aggregation == "max", func.max(SentenceScore.score)),
        (Response.aggregation == "min", func.min(SentenceScore.score)),
        else_=func.avg(SentenceScore.score),
    )
    summary = (
        select(
            literal(mv.id),
            Response.id,
            agg,
            func.max(SentenceScore.uncertainty),
            func.abs(agg - label),
        )
        .select_from(SentenceScore)
        .join(Sentence, Sentence.id == SentenceScore.sentence_id)
        .join(Response, Response.id == Sentence.response_id)
        .where(SentenceScore.model_version_id == mv.id)
        .group_by(Response.id, Response.aggregation, Response.response_label)
    )
    session.execute(delete(ResponseScore).where(ResponseScore.model_version_id == mv.id))
    session.execute(
        insert(ResponseScore).from_select(
            ["model_version_id", "response_id", "score", "uncertainty", "disagreement"], summary
        )
    )


def activate_model_version(engine: Engine, model_version_id: int) -> ModelVersionRow:
    """Make a ready version the one the list pages and exports use; remembers the one it replaces."""

    def work(session: Session) -> None:
        mv = session.get(ModelVersion, model_version_id)
        if mv is None:
            raise InputError(f"no model version with id {model_version_id}", field="model")
        if mv.status != "ready":
            raise InputError(
                f"model version {mv.version} is {mv.status}; only a ready version can be activated",
                field="model",
            )
        dataset = session.get(Dataset, mv.dataset_id)
        assert dataset is not None
        if dataset.active_model_version_id == mv.id:
            return
        mv.replaced_id = dataset.active_model_version_id
        mv.activated_at = utcnow()
        dataset.active_model_version_id = mv.id

    run_write(engine, work)
    row = get_model_version(engine, model_version_id)
    assert row is not None
    return row


def rollback_model_version(engine: Engine, dataset_id: int) -> ModelVersionRow | None:
    """Re-activate the version the active one replaced; returns it (None if there was none: then no
    version is active any more only if the active one replaced nothing, which raises instead)."""

    def work(session: Session) -> int:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise InputError(f"no dataset with id {dataset_id}", field="dataset")
        if dataset.active_model_version_id is None:
            raise InputError("no active model version to roll back", field="model")
        current = session.get(ModelVersion, dataset.active_model_version_id)
        assert current is not None
        if current.replaced_id is None:
            raise InputError(f"model version {current.version} replaced no earlier version", field="model")
        dataset.active_model_version_id = current.replaced_id
        return current.replaced_id

    return get_model_version(engine, run_write(engine, work))
