"""Model versions: register a training run, read versions, finish a run, activate a version and roll back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session

from db.engine import run_read, run_write
from db.models import MODEL_STATUSES, Dataset, ModelVersion, SentenceScore, utcnow
from db.repository.model_scores import summarise_scores
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
    if status not in MODEL_STATUSES:
        raise InputError(f"status must be one of {', '.join(MODEL_STATUSES)}, got {status!r}", field="status")

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


def finish_model_version(
    engine: Engine,
    model_version_id: int,
    *,
    status: Literal["ready", "failed"] = "ready",
    metrics: Mapping[str, object] | None = None,
    artifact_path: str | None = None,
    error: str | None = None,
) -> ModelVersionRow:
    """Close a training run. ``ready`` keeps the per-response figures stored with
    :func:`~db.repository.model_scores.store_response_summaries`, or computes them from the stored sentence
    scores when there are none
    (``fractal_core.mil.semantics``: aggregate score, uncertainty, disagreement, consistency of the gold labels)."""
    if status not in ("ready", "failed"):
        raise InputError(f"a training run finishes as ready or failed, not {status!r}", field="status")

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
            summarise_scores(session, mv)

    run_write(engine, work)
    row = get_model_version(engine, model_version_id)
    assert row is not None
    return row


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
