"""Publishing a job's results: a new model version with its scores and files, activated on evidence."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.settings import AppSettings
from db import artifacts
from db import repository as repo
from db.repository import model_versions

if TYPE_CHECKING:  # the library's models load torch: only the job functions import them
    from fractal_core.fitting.pipeline import ScoredResponses


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN: keep the key (the chart shows a gap) with a null value.
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}


def evidence_metrics(result: Any, responses: int, parent: repo.ModelVersionRow | None) -> dict[str, Any]:
    """What every train job stores about the evidence it was judged by: the gold figures before and after, the
    figures against the labels that came with the file, the gold counts and the version compared with."""
    return {
        "gold_before": finite(result.previous_gold_metrics),
        "gold_after": finite(result.gold_metrics),
        # Labels that came with the file (source "imported") are not gold, but they are the best check a user
        # has before correcting anything: reported separately.
        "file_labels_after": finite(result.file_label_metrics),
        "gold_responses": result.n_gold_responses,
        "gold_sentences": result.n_gold_sentences,
        "responses": responses,
        "compared_with_version": parent.version if parent is not None else None,
    }


GOLD_QUEUE_SIZE = 200
"""Responses proposed per selection strategy and stored with each model version (the Gold queue page)."""


def stage_version(
    engine: Engine,
    ctx: JobContext,
    *,
    dataset_id: int,
    save: Callable[[Path], object],
    scored: ScoredResponses,
    method: str,
    config: dict[str, Any],
    parent: repo.ModelVersionRow | None,
    metrics: dict[str, Any],
    lo: float,
) -> tuple[repo.ModelVersionRow, str, dict[str, Any]]:
    """The first half of :func:`publish`: a new version in status ``training`` holding the scores, response
    figures and model files (nobody reads it yet). Returns it, its artifact URI and its metrics with the gold
    queue. Any failure (a cancel included) marks it ``failed`` and re-raises."""
    mv = repo.create_model_version(
        engine, dataset_id, method=method, config=config, parent_id=parent.id if parent else None
    )
    queue = {name: [int(i) for i in ids] for name, ids in scored.gold_proposals.items()}
    if queue:
        metrics = {**metrics, "gold_queue": queue, "gold_queue_reasons": scored.gold_reasons}
    try:
        ctx.set(lo, f"storing {len(scored.scores)} sentence scores", force=True)
        repo.store_scores(engine, mv.id, scored.sentence_ids, scored.scores, scored.uncertainty)
        repo.store_response_summaries(engine, mv.id, scored.response_ids, scored.summaries)
        # The model's files go into the store (keyed by store id and version id), not a local directory.
        with tempfile.TemporaryDirectory(prefix="fractal-model-") as tmp:
            save(Path(tmp))
            artifact = artifacts.save_model_files(engine, mv.id, Path(tmp))
    except BaseException as exc:
        fail_version(engine, mv.id, exc)
        raise
    return mv, artifact, metrics


def fail_version(engine: Engine, model_version_id: int, exc: BaseException) -> None:
    """Close a version its job could not finish as ``failed`` with why (cancelled, or the error)."""
    reason = "cancelled" if isinstance(exc, JobCancelled) else f"{type(exc).__name__}: {exc}"
    # The version may already be closed; the job's own error still says what happened.
    with contextlib.suppress(Exception):
        repo.finish_model_version(engine, model_version_id, status="failed", error=reason)


def open_version(
    engine: Engine,
    ctx: JobContext,
    staged: tuple[repo.ModelVersionRow, str, dict[str, Any]],
    *,
    parent: repo.ModelVersionRow | None,
    n_scores: int,
    same_model: bool = False,
) -> dict[str, Any]:
    """The second half of :func:`publish`: mark a staged version ``ready`` and activate it on evidence (or at
    once when ``same_model``); no cancel is taken here. A failure marks it ``failed`` and re-raises."""
    mv, artifact, metrics = staged
    try:
        row = repo.finish_model_version(
            engine, mv.id, status="ready", metrics=metrics, artifact_path=artifact
        )
        if same_model:
            repo.activate_model_version(engine, mv.id)
            activated, why = True, f"the model of version {parent.version if parent else '?'}, re-scored"
        else:  # a new model replaces the active one only on evidence from the gold labels
            decision = model_versions.activate_if_not_worse(engine, mv.id)
            activated, why = decision.activated, decision.reason
    except BaseException as exc:
        fail_version(engine, mv.id, exc)
        raise
    ctx.log(
        f"model version {row.version} is {'active' if activated else 'waiting'} ({n_scores} sentence "
        f"scores): {why}"
    )
    return {
        "model_version_id": mv.id,
        "version": row.version,
        "activated": activated,
        "activation_reason": why,
        "n_scores": n_scores,
        "metrics": metrics,
    }


def publish(
    engine: Engine,
    settings: AppSettings,
    ctx: JobContext,
    *,
    dataset_id: int,
    save: Callable[[Path], object],
    scored: ScoredResponses,
    method: str,
    config: dict[str, Any],
    parent: repo.ModelVersionRow | None,
    metrics: dict[str, Any],
    lo: float,
    same_model: bool = False,
) -> dict[str, Any]:
    """Store what the library computed as a new model version and activate it when the evidence allows.

    The version is created in status ``training``; sentence scores and response figures are written in
    chunks; the version is marked ``ready`` and considered for activation only after everything is stored. A new
    model becomes active only when it is not worse than the active one on the current gold set beyond noise
    (``db.repository.model_versions.activate_if_not_worse``), else it waits for a person; ``same_model`` (the
    active model re-scoring new responses) is activated directly. Any failure marks it ``failed`` and leaves
    the previously active version in place. ``save(directory)`` writes the model's files (``FractalModel.save``,
    or a one-pass scorer's compact ``save``).
    """
    staged = stage_version(
        engine, ctx, dataset_id=dataset_id, save=save, scored=scored, method=method, config=config,
        parent=parent, metrics=metrics, lo=lo,
    )  # fmt: skip
    try:
        ctx.set(lo + (1 - lo) * 0.8, "publishing the new version", force=True)
    except BaseException as exc:
        fail_version(engine, staged[0].id, exc)
        raise
    return open_version(
        engine, ctx, staged, parent=parent, n_scores=len(scored.scores), same_model=same_model
    )


__all__ = [
    "GOLD_QUEUE_SIZE",
    "evidence_metrics",
    "fail_version",
    "finite",
    "open_version",
    "publish",
    "stage_version",
]
