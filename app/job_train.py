"""The ``train`` and ``score`` jobs: their results stored as a new model version, activated on evidence
(``app.job_publish``); the token-level scorer's training in ``app.job_one_pass``, the joint fit of a group of
criteria in ``app.job_train_joint``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.job_embed import embed_on_ray, encoder_config, scratch_dir
from app.job_one_pass import load_version_model, previous_frozen_model, run_train_one_pass, stage_progress
from app.job_payloads import TrainPayload
from app.job_publish import GOLD_QUEUE_SIZE, evidence_metrics, finite, publish
from app.job_train_joint import run_train_joint
from app.job_train_pairs import run_train_pairs
from app.settings import AppSettings
from db import repository as repo
from db.pairs_read import count_pairs
from fractal_core.fitting import registry


def run_train(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core.fitting.pipeline import train_and_score
    from fractal_core.fitting.train import TrainingCancelled

    parsed = TrainPayload.parse(payload)
    if parsed.joint:  # every criterion of the dataset's group in one model
        return run_train_joint(engine, settings, parsed, ctx)
    if parsed.scorer == "one_pass":
        if count_pairs(engine, parsed.dataset_id):
            raise ValueError(
                "the token-level scorer learns from response labels; this dataset holds preference pairs, "
                "which the frozen scorer trains from"
            )
        return run_train_one_pass(engine, settings, parsed, ctx)
    dataset_id, method, config, seed = parsed.dataset_id, parsed.method, parsed.config, parsed.seed
    ctx.set(0.0, "loading responses and gold labels", force=True)
    data = repo.load_training_set(engine, dataset_id)
    if not data.records:
        raise ValueError("the dataset has no responses to train on")
    if count_pairs(engine, dataset_id):  # a dataset of preference pairs trains from its pairs
        trained, pair_metrics = run_train_pairs(engine, settings, parsed, data, ctx)
        pair_metrics["gold_after"] = finite(trained.gold_metrics)
        return publish(
            engine, settings, ctx, dataset_id=dataset_id, save=trained.model.save, scored=trained.scored,
            method="preference", config={"train": config.to_dict(), "seed": seed},
            parent=repo.active_model_version(engine, dataset_id), metrics=pair_metrics, lo=0.8,
        )  # fmt: skip
    has_gold = any(r.sentence_labels is not None for r in data.records)
    stages = registry.training_stages(
        method, has_gold=has_gold, aggregation=data.records[0].aggregation, config=config
    )
    ctx.log(f"training {method!r} on {len(data.records)} responses: stages {', '.join(stages) or 'none'}")
    parent = repo.active_model_version(engine, dataset_id)
    previous = previous_frozen_model(engine, settings, parent)
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
        **evidence_metrics(result, len(data.records), parent),
        "resolved_method": result.model.resolved_method_,
        # auto / fractal: the candidate chosen, the criterion and every candidate's figures (Models page).
        **({"method_choice": result.model.selection_} if getattr(result.model, "selection_", None) else {}),
        # The F key's rule and what it was chosen by (fractal_core.fitting.first_error), read by Review.
        "first_error_rule": result.model.first_error_rule_.rule,
        "first_error_rule_figures": result.model.first_error_rule_.figures(),
        # The step calibration, applied by the given-label view (Review, Gold queue, exports) when chosen on valid.
        "step_calibration": result.model.step_calibration_.to_dict(),
        **finite(dict(result.model.metrics_ or {})),
    }
    return publish(
        engine, settings, ctx, dataset_id=dataset_id, save=result.model.save, scored=result.scored, method=method,
        config={"train": config.to_dict(), "seed": seed}, parent=parent, metrics=metrics, lo=0.8,
    )  # fmt: skip


def run_score(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel
    from fractal_core.experimental.one_pass_pipeline import score_records_one_pass
    from fractal_core.fitting.pipeline import ScoredResponses, score_records

    dataset_id = int(payload["dataset_id"])
    parent = repo.active_model_version(engine, dataset_id)
    if parent is None or not parent.artifact_path:
        raise ValueError("the dataset has no active model to score with; start a training job instead")
    data = repo.load_training_set(engine, dataset_id)
    model = load_version_model(engine, settings, parent)
    ctx.set(0.05, f"scoring {len(data.sentence_ids)} sentences", force=True)
    scored: ScoredResponses
    if isinstance(model, FractalModel):
        if settings.ray_address:
            from fractal_core.embedding.encoder import EncoderConfig

            embed_on_ray(data.records, model.encoder or EncoderConfig(), settings.ray_address, ctx, hi=0.05)
        scored = score_records(
            model,
            data.records,
            sentence_ids=data.sentence_ids,
            response_ids=data.response_ids,
            queue_size=GOLD_QUEUE_SIZE,
            progress=ctx.training_callback((), 0.05, 0.6),
            scratch=scratch_dir(settings),
        )
        save: Callable[[Path], object] = model.save
    else:  # the token-level scorer reads the text itself: no embeddings
        scored = score_records_one_pass(
            model, data.records, sentence_ids=data.sentence_ids, response_ids=data.response_ids,
            queue_size=GOLD_QUEUE_SIZE, progress=stage_progress(ctx, 0.05, 0.6),
        )  # fmt: skip
        one_pass = model

        def save_compact(directory: Path) -> object:
            return one_pass.save(directory, encoder_files=False)

        save = save_compact

    metrics = {**parent.metrics, "rescored_from_version": parent.version}
    return publish(
        engine, settings, ctx, dataset_id=dataset_id, save=save, scored=scored, method=parent.method,
        config={**parent.config, "rescored_from_version": parent.version}, parent=parent, metrics=metrics,
        lo=0.6, same_model=True,
    )  # fmt: skip
