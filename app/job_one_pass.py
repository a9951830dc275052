"""The token-level (one-pass) scorer in the app: its training settings, its cost before a job starts, the
training job that stores it as a model version, and loading any version's model (frozen or one-pass)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.job_payloads import TrainPayload
from app.job_publish import evidence_metrics, publish
from app.settings import AppSettings
from db import artifacts
from db import repository as repo

if TYPE_CHECKING:  # torch and transformers load only inside the jobs
    from fractal_core import FractalModel
    from fractal_core.data.records import ResponseRecord
    from fractal_core.experimental.finetune import FinetuneConfig, FinetuneResult
    from fractal_core.experimental.one_pass_pipeline import OnePassCost
    from fractal_core.fitting.config import TrainConfig

RUN_KEY = "one_pass_run"
"""The key of a one-pass version's metrics holding what its job measured (windows, seconds, layer choice)."""


def one_pass_config(
    encoder: str | None, method: str, train_layers: int, bag: TrainConfig | None = None
) -> FinetuneConfig:
    """The fine-tuning settings of a one-pass job (and of its cost estimate): the route's defaults, the app's
    encoder, the method (its own objective: no extra gold term) and the job's training settings (loss weights,
    bag variant, validation share)."""
    from fractal_core.experimental.finetune import FinetuneConfig
    from fractal_core.fitting.config import TrainConfig

    return FinetuneConfig(
        encoder=encoder, route="one_pass", train_layers=train_layers, method=method, gold_weight=0.0,
        bag=bag or TrainConfig(),
    )  # fmt: skip


def last_measured_run(engine: Engine, dataset_ids: list[int]) -> tuple[dict[str, Any], int] | None:
    """What the newest ready one-pass version of these datasets measured, and the version whose training job
    measured it (a re-scored version carries its parent's figures)."""
    for dataset_id in dataset_ids:
        for mv in repo.list_model_versions(engine, dataset_id):  # newest first
            metrics = mv.metrics or {}
            run = metrics.get(RUN_KEY)
            if mv.status == "ready" and run:
                return run, int(metrics.get("rescored_from_version") or mv.version)
    return None


def estimate(
    engine: Engine, records: list[ResponseRecord], config: FinetuneConfig, dataset_ids: list[int]
) -> OnePassCost:
    """The cost of a one-pass job on ``records``: their windows at the rate the newest one-pass job of this
    store measured, else at the benchmark's reference rate (``one_pass_pipeline.REFERENCE_RATE``)."""
    from fractal_core.experimental.one_pass_pipeline import REFERENCE_RATE, estimate_cost, measured_rate

    found = last_measured_run(engine, dataset_ids)
    rate = measured_rate(found[0]) if found else None
    if rate is not None and found is not None:
        rate = type(rate)(rate.cache_s, rate.epoch_s, f"measured by model version {found[1]}'s training job")
    return estimate_cost(records, config, rate or REFERENCE_RATE)


def load_version_model(
    engine: Engine, settings: AppSettings, version: repo.ModelVersionRow
) -> FractalModel | FinetuneResult:
    """The model of a stored version: a one-pass scorer (``finetune.json``) or a ``FractalModel``."""
    directory = artifacts.model_dir(engine, version, settings.models_dir)
    if (Path(directory) / "finetune.json").is_file():
        from fractal_core.experimental.finetune import FinetuneResult

        return FinetuneResult.load(directory)
    from fractal_core import FractalModel

    return FractalModel.load(directory)


def previous_frozen_model(
    engine: Engine, settings: AppSettings, parent: repo.ModelVersionRow | None
) -> FractalModel | None:
    """The active version's model to compare a new one with on the same gold embeddings: None when there is
    none, its files are gone (a pre-store local model), or it is a one-pass scorer (it reads tokens, not these
    embeddings: its gold comparison is left to activation)."""
    from fractal_core import FractalModel

    if parent is None or not parent.artifact_path:
        return None
    with contextlib.suppress(FileNotFoundError):
        directory = artifacts.model_dir(engine, parent, settings.models_dir)
        if not (directory / "finetune.json").is_file():
            return FractalModel.load(directory)
    return None


def stage_progress(ctx: JobContext, lo: float, hi: float) -> Callable[[str, float, str], None]:
    """Progress of the one-pass stages (cache, finetune, score; per ``train_layers`` candidate) onto [lo, hi]:
    each new stage takes the next share of the bar, the bar never goes back, and a cancel raises at once."""
    seen: list[str] = []
    last_log = [0.0]

    def callback(stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        if not seen or seen[-1] != stage:
            seen.append(stage)
            last_log[0] = now
            ctx.log(f"[{stage}] {message}")
        elif now - last_log[0] >= 1.0:
            last_log[0] = now
            ctx.log(f"[{stage}] {message}")
        # Shares halve as stages come (cache, finetune, score, ... for each candidate): monotone, never 1.
        done = 1 - 0.5 ** (len(seen) - 1)
        overall = done + 0.5 ** len(seen) * min(max(fraction, 0.0), 1.0)
        ctx.set(lo + (hi - lo) * overall, f"{stage}: {message}")

    return callback


def run_train_one_pass(
    engine: Engine, settings: AppSettings, parsed: TrainPayload, ctx: JobContext
) -> dict[str, Any]:
    """Train the one-pass scorer on the dataset, score every response with it, store it as a new version
    (files: the trained top layers and the head, not the encoder) and activate it on evidence."""
    from fractal_core.experimental.one_pass_pipeline import train_and_score_one_pass
    from fractal_core.fitting.train import TrainingCancelled

    ctx.set(0.0, "loading responses and gold labels", force=True)
    data = repo.load_training_set(engine, parsed.dataset_id)
    if not data.records:
        raise ValueError("the dataset has no responses to train on")
    config = one_pass_config(settings.encoder, parsed.method, parsed.train_layers, parsed.config)
    layers = parsed.train_layers or "chosen on valid"
    ctx.log(
        f"training the one-pass scorer ({parsed.method}, top layers: {layers}) on {len(data.records)} responses"
    )
    parent = repo.active_model_version(engine, parsed.dataset_id)
    previous = None
    if parent is not None and parent.artifact_path:
        try:
            previous = load_version_model(engine, settings, parent)
        except (FileNotFoundError, ValueError):  # gone, or trained from another encoder: no comparison
            previous = None
    try:
        result = train_and_score_one_pass(
            data.records, sentence_ids=data.sentence_ids, response_ids=data.response_ids, config=config,
            seed=parsed.seed, previous=previous, file_labels=data.file_labels,
            progress=stage_progress(ctx, 0.02, 0.8),
        )  # fmt: skip
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    ctx.log(f"{result.n_gold_responses} responses with gold labels ({result.n_gold_sentences} sentences)")
    metrics: dict[str, Any] = {
        **evidence_metrics(result, len(data.records), parent),
        "resolved_method": f"one_pass:{parsed.method}",
        RUN_KEY: result.run,
    }
    model = result.model

    def save(directory: Path) -> object:
        return model.save(directory, encoder_files=False)  # the top layers and the head, not the encoder

    return publish(
        engine, settings, ctx, dataset_id=parsed.dataset_id, save=save, scored=result.scored,
        method=f"one_pass:{parsed.method}",
        config={"train": parsed.config.to_dict(), "seed": parsed.seed, "scorer": "one_pass",
                "finetune": result.model.config.to_dict()},
        parent=parent, metrics=metrics, lo=0.8,
    )  # fmt: skip


__all__ = [
    "RUN_KEY",
    "estimate",
    "last_measured_run",
    "load_version_model",
    "previous_frozen_model",
    "one_pass_config",
    "run_train_one_pass",
    "stage_progress",
]
