"""The ``train`` and ``score`` jobs: their results stored as a new model version, activated on evidence."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.job_embed import embed_on_ray, encoder_config, scratch_dir
from app.job_payloads import TrainPayload
from app.job_train_pairs import run_train_pairs
from app.settings import AppSettings
from db import artifacts
from db import repository as repo
from db.pairs_read import count_pairs
from db.repository import model_versions
from fractal_core.fitting import registry

if TYPE_CHECKING:  # the library's models load torch: only the job functions import them
    from fractal_core import FractalModel
    from fractal_core.fitting.pipeline import ScoredResponses


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN: keep the key (the chart shows a gap) with a null value.
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}


GOLD_QUEUE_SIZE = 200
"""Responses proposed per selection strategy and stored with each model version (the Gold queue page)."""


def _publish(
    engine: Engine,
    settings: AppSettings,
    ctx: JobContext,
    *,
    dataset_id: int,
    model: FractalModel,
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
    the previously active version in place.
    """
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
            model.save(tmp)
            artifact = artifacts.save_model_files(engine, mv.id, Path(tmp))
        ctx.set(lo + (1 - lo) * 0.8, "publishing the new version", force=True)
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
        reason = "cancelled" if isinstance(exc, JobCancelled) else f"{type(exc).__name__}: {exc}"
        # The version may already be closed; the job's own error still says what happened.
        with contextlib.suppress(Exception):
            repo.finish_model_version(engine, mv.id, status="failed", error=reason)
        raise
    ctx.log(
        f"model version {row.version} is {'active' if activated else 'waiting'} ({len(scored.scores)} sentence "
        f"scores): {why}"
    )
    return {
        "model_version_id": mv.id,
        "version": row.version,
        "activated": activated,
        "activation_reason": why,
        "n_scores": len(scored.scores),
        "metrics": metrics,
    }


def run_train(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel
    from fractal_core.fitting.pipeline import train_and_score
    from fractal_core.fitting.train import TrainingCancelled

    parsed = TrainPayload.parse(payload)
    dataset_id, method, config, seed = parsed.dataset_id, parsed.method, parsed.config, parsed.seed
    ctx.set(0.0, "loading responses and gold labels", force=True)
    data = repo.load_training_set(engine, dataset_id)
    if not data.records:
        raise ValueError("the dataset has no responses to train on")
    if count_pairs(engine, dataset_id):  # a dataset of preference pairs trains from its pairs
        trained, pair_metrics = run_train_pairs(engine, settings, parsed, data, ctx)
        pair_metrics["gold_after"] = _finite(trained.gold_metrics)
        return _publish(
            engine, settings, ctx, dataset_id=dataset_id, model=trained.model, scored=trained.scored,
            method="preference", config={"train": config.to_dict(), "seed": seed},
            parent=repo.active_model_version(engine, dataset_id), metrics=pair_metrics, lo=0.8,
        )  # fmt: skip
    has_gold = any(r.sentence_labels is not None for r in data.records)
    stages = registry.training_stages(
        method, has_gold=has_gold, aggregation=data.records[0].aggregation, config=config
    )
    ctx.log(f"training {method!r} on {len(data.records)} responses: stages {', '.join(stages) or 'none'}")
    parent = repo.active_model_version(engine, dataset_id)
    previous = None
    if parent is not None and parent.artifact_path:
        with contextlib.suppress(FileNotFoundError):  # a pre-store local model that is gone: no comparison
            previous = FractalModel.load(artifacts.model_dir(engine, parent, settings.models_dir))
    try:
        result = train_and_score(
            data.records,
            sentence_ids=data.sentence_ids,
            response_ids=data.response_ids,
            method=method,
            config=config,
            seed=seed,
            previous=previous,
            file_labels=data.file_labels,
            queue_size=GOLD_QUEUE_SIZE,
            progress=ctx.training_callback(stages, 0.02, 0.8),
            encoder=encoder_config(settings),
            scratch=scratch_dir(settings),
        )
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    ctx.log(f"{result.n_gold_responses} responses with gold labels ({result.n_gold_sentences} sentences)")
    metrics: dict[str, Any] = {
        "gold_before": _finite(result.previous_gold_metrics),
        "gold_after": _finite(result.gold_metrics),
        # Labels that came with the file (source "imported") are not gold, but they are the best check a user
        # has before correcting anything: reported separately.
        "file_labels_after": _finite(result.file_label_metrics),
        "gold_responses": result.n_gold_responses,
        "gold_sentences": result.n_gold_sentences,
        "responses": len(data.records),
        "resolved_method": result.model.resolved_method_,
        # auto / fractal: the candidate chosen, the criterion and every candidate's figures (Models page).
        **({"method_choice": result.model.selection_} if getattr(result.model, "selection_", None) else {}),
        "compared_with_version": parent.version if parent is not None else None,
        # The F key's rule and what it was chosen by (fractal_core.fitting.first_error), read by Review.
        "first_error_rule": result.model.first_error_rule_.rule,
        "first_error_rule_figures": result.model.first_error_rule_.figures(),
        # The step calibration, applied by the given-label view (Review, Gold queue, exports) when chosen on valid.
        "step_calibration": result.model.step_calibration_.to_dict(),
        **_finite(dict(result.model.metrics_ or {})),
    }
    return _publish(
        engine, settings, ctx, dataset_id=dataset_id, model=result.model, scored=result.scored, method=method,
        config={"train": config.to_dict(), "seed": seed}, parent=parent, metrics=metrics, lo=0.8,
    )  # fmt: skip


def run_score(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel
    from fractal_core.fitting.pipeline import score_records

    dataset_id = int(payload["dataset_id"])
    parent = repo.active_model_version(engine, dataset_id)
    if parent is None or not parent.artifact_path:
        raise ValueError("the dataset has no active model to score with; start a training job instead")
    data = repo.load_training_set(engine, dataset_id)
    model = FractalModel.load(artifacts.model_dir(engine, parent, settings.models_dir))
    if settings.ray_address:
        from fractal_core.embedding.encoder import EncoderConfig

        embed_on_ray(data.records, model.encoder or EncoderConfig(), settings.ray_address, ctx, hi=0.05)
    ctx.set(0.05, f"scoring {len(data.sentence_ids)} sentences", force=True)
    scored = score_records(
        model,
        data.records,
        sentence_ids=data.sentence_ids,
        response_ids=data.response_ids,
        queue_size=GOLD_QUEUE_SIZE,
        progress=ctx.training_callback((), 0.05, 0.6),
        scratch=scratch_dir(settings),
    )
    metrics = {**parent.metrics, "rescored_from_version": parent.version}
    return _publish(
        engine, settings, ctx, dataset_id=dataset_id, model=model, scored=scored, method=parent.method,
        config={**parent.config, "rescored_from_version": parent.version}, parent=parent, metrics=metrics,
        lo=0.6, same_model=True,
    )  # fmt: skip
