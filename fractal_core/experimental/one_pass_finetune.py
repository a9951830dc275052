"""Fine-tuning on a CPU in one pass per response (``FinetuneConfig(route="one_pass")``).

The windows are built once (``one_pass_windows``), the frozen lower layers run once per window and their states
are cached on disk beside the embedding cache (``one_pass_scorer.TokenStateCache``), so an epoch runs only the
top ``train_layers`` layers and the head, on the stages and objective of ``config.method``
(``one_pass_methods``: every trained method of the suite, its objective code unchanged). The epochs, early
stopping, calibration and storage are the per-step route's: ``fitting.train.run_epochs``, ``objectives.logp_validator``, ``calibration.fit_calibration`` and
``FinetuneResult``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig, resolve_device, resolve_model_path
from fractal_core.embedding.model_files import compute_encoder_id, default_cache_dir
from fractal_core.experimental.finetune_config import (
    DEFAULT_TRAIN_LAYERS,
    TRAIN_LAYER_GRID,
    FinetuneConfig,
    training_precision,
)
from fractal_core.experimental.one_pass_methods import (
    bag_stage_objective,
    frozen_targets,
    one_pass_plan,
    pseudo_bags,
)
from fractal_core.experimental.one_pass_scorer import (
    OnePassScorer,
    PackedStates,
    TokenStateCache,
    lower_states,
    one_pass_loss,
    score_windows,
)
from fractal_core.experimental.one_pass_windows import (
    PassWindows,
    build_pass_windows,
    causal_mode,
    record_bags,
)
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import fit_calibration
from fractal_core.fitting.methods import gold_bag_ids
from fractal_core.fitting.objectives import LogpObjective, instance_terms, logp_validator
from fractal_core.fitting.train import ProgressFn, Schedule, run_epochs, seeded_dropout
from fractal_core.mil.pslab import pseudo_labels

STAGE_CACHE = "cache"
"""The progress stage of computing (or reading) the frozen layers' token states."""
STAGE_SCORE = "score"
"""The progress stage of scoring responses with a trained one-pass scorer."""


def state_cache(config: FinetuneConfig) -> tuple[TokenStateCache | None, str | None]:
    """The disk cache of lower states and the encoder id keying it (``(None, None)``: memory only).

    A fine-tuned model keeps its lower layers as loaded, so its states share the original encoder's entries."""
    if config.state_cache == "":
        return None, None
    model_dir = resolve_model_path(config.encoder)
    directory = Path(config.state_cache) if config.state_cache else default_cache_dir() / "token_states"
    return TokenStateCache(directory), compute_encoder_id(model_dir, max_length=config.window_tokens)


def prepare(
    model: OnePassScorer,
    records: Sequence[ResponseRecord],
    tokenizer: Any,
    config: FinetuneConfig,
    *,
    causal: bool,
    device: torch.device,
    progress: ProgressFn | None = None,
) -> tuple[PassWindows, PackedStates]:
    """Windows of ``records`` and their lower states (from the disk cache when there); ``progress`` gets stage
    ``STAGE_CACHE`` after each chunk of windows computed."""
    data = build_pass_windows(records, tokenizer, config, causal=causal)
    cache, encoder_id = state_cache(config)
    on_chunk = None
    if progress is not None:
        report = progress

        def on_chunk(done: int, total: int) -> None:
            report(STAGE_CACHE, done / max(total, 1), f"{done}/{total} windows through the frozen layers")

    states = lower_states(
        model, data, device=device, batch=config.score_batch, cache=cache, encoder_id=encoder_id,
        progress=on_chunk,
    )  # fmt: skip
    return data, states


def finetune_one_pass(
    train: Sequence[ResponseRecord],
    valid: Sequence[ResponseRecord] | None,
    *,
    aggregation: str,
    n_classes: int,
    config: FinetuneConfig,
    seed: int,
    encoder: tuple[nn.Module, Any],
    progress: ProgressFn | None = None,
) -> tuple[OnePassScorer, dict[str, Any] | None, list[Any], bool, float, str]:
    """Train the top layers and the head with ``config.method``'s stages (``one_pass_methods``); returns (model,
    calibration, each one-pass stage's result in order (the model's the last), causal, cache seconds, validation mode: ``objectives.logp_validator``'s
    "sentence" / "bag" / "first_error", or "train_loss" without valid)."""
    plan = one_pass_plan(config.method, record_bags(train), aggregation=aggregation, config=config.bag)
    device = resolve_device(config.device)
    dtype, needs_scaler = training_precision(device, config.precision)
    generator = torch.Generator().manual_seed(seed)
    module, tokenizer = encoder
    pristine = copy.deepcopy(module) if plan.runs(registry.STAGE_PSLAB) else None  # PsLab's fresh scorer
    model = OnePassScorer(module, n_classes, train_layers=config.train_layers, generator=generator).to(device)
    causal = causal_mode(config, list(train) + list(valid or []))
    started = time.perf_counter()
    train_data, train_states = prepare(
        model, train, tokenizer, config, causal=causal, device=device, progress=progress
    )
    valid_set = (
        prepare(model, valid, tokenizer, config, causal=causal, device=device, progress=progress)
        if valid
        else None
    )
    cache_seconds = time.perf_counter() - started
    targets, _ = frozen_targets(
        plan, train_data.bagset(), train, valid, n_classes=n_classes, seed=seed,
        encoder=EncoderConfig(
            model_path=config.encoder, device=config.device, cache_dir="" if config.state_cache == "" else None
        ),
        progress=progress,
    )  # fmt: skip
    rule, mode = logp_validator(
        valid_set[0].bagset() if valid_set else None, aggregation=aggregation, config=plan.config
    )

    def scores(target: tuple[PassWindows, PackedStates]) -> torch.Tensor:
        return score_windows(model, *target, device=device, batch_bags=config.batch_bags, autocast=dtype)

    def validate() -> float:
        assert rule is not None and valid_set is not None
        return rule(scores(valid_set))

    def fit(name: str, objective: LogpObjective, data: BagSet, bags: torch.Tensor | None = None) -> Any:
        """One stage on ``model``: ``objective`` over ``bags`` (default: every training response)."""
        optimiser = torch.optim.AdamW(
            [
                {"params": model.trainable(), "lr": config.learning_rate},
                {"params": model.head.parameters(), "lr": config.head_learning_rate},
            ],
            weight_decay=config.weight_decay,
        )

        def step_loss(batch: torch.Tensor) -> torch.Tensor:
            ids = batch if bags is None else bags[batch]
            return one_pass_loss(
                model, train_data, train_states, ids, objective, data, device=device, autocast=dtype
            )

        with seeded_dropout(seed, device):
            return run_epochs(
                model,
                train_data.n_bags if bags is None else len(bags),
                step_loss,
                optimiser=optimiser,
                schedule=Schedule(config.batch_bags, config.epochs, config.patience, report_steps=True),
                generator=generator,
                validate=validate if rule is not None else None,
                stage="finetune" if name == registry.STAGE_BAG else f"finetune ({name})",
                progress=progress,
                scaler=torch.amp.GradScaler("cuda") if needs_scaler else None,
            )

    if plan.runs(registry.STAGE_SUPERVISED):
        stages = [fit(registry.STAGE_SUPERVISED, instance_terms, targets, gold_bag_ids(targets))]
    else:
        stages = [fit(registry.STAGE_BAG, bag_stage_objective(plan, config.gold_weight), targets)]
    if pristine is not None:
        labels = pseudo_labels(
            scores((train_data, train_states)), targets.bag_index, targets.labels, aggregation=aggregation,
            gold=targets.gold,
        )  # fmt: skip
        model = OnePassScorer(pristine, n_classes, train_layers=config.train_layers, generator=generator)
        model = model.to(device)
        stages.append(fit(registry.STAGE_PSLAB, instance_terms, pseudo_bags(targets, labels)))
    calibration = None
    if config.calibrate and n_classes == 2 and aggregation in ("max", "min"):
        target = valid_set if valid_set is not None and valid_set[0].n_bags else (train_data, train_states)
        calibration = fit_calibration(
            scores(target), target[0].bagset(), aggregation=aggregation, n_classes=2, kind="logit"
        ).to_dict()
    return model, calibration, stages, causal, cache_seconds, mode


@dataclass(frozen=True)
class OnePassFit:
    """What :func:`choose_train_layers` kept: the model, its config (``train_layers`` as trained), calibration,
    epoch history, mask mode, and the choice (``None`` when ``train_layers`` was given)."""

    model: OnePassScorer
    config: FinetuneConfig
    calibration: dict[str, Any] | None
    stage: Any
    causal: bool
    choice: dict[str, Any] | None
    cache_seconds: float = 0.0  # computing (or reading) the frozen states, over every candidate
    epochs_run: int = 0  # training epochs run, over every candidate


def _staged(progress: ProgressFn, k: int) -> ProgressFn:
    """``progress`` with each stage named after the candidate ``train_layers`` it belongs to."""

    def report(stage: str, fraction: float, message: str) -> None:
        progress(f"{stage}, top {k} layer{'s' if k > 1 else ''}", fraction, message)

    return report


def choose_train_layers(
    train: Sequence[ResponseRecord],
    valid: Sequence[ResponseRecord] | None,
    *,
    aggregation: str,
    n_classes: int,
    config: FinetuneConfig,
    seed: int,
    encoder: tuple[nn.Module, Any],
    progress: ProgressFn | None = None,
) -> OnePassFit:
    """:func:`finetune_one_pass` with ``config.train_layers``; with 0, once per count of ``TRAIN_LAYER_GRID``
    the encoder has (each from a fresh copy of it), keeping the best by the validation rule (sentence AUC on
    valid gold, else the likelihood of the valid response labels: the early-stopping rule, so every candidate is
    measured the same way). Without validation responses nothing is chosen: ``DEFAULT_TRAIN_LAYERS``."""
    module, tokenizer = encoder
    n_layers = len(getattr(getattr(module, "encoder", None), "layer", []))
    if config.train_layers:
        candidates = [config.train_layers]
    elif not valid:
        candidates = [min(DEFAULT_TRAIN_LAYERS, max(n_layers, 1))]
    else:
        candidates = [k for k in TRAIN_LAYER_GRID if k <= n_layers] or [max(n_layers, 1)]
    scores: dict[str, float] = {}
    best: OnePassFit | None = None
    best_score = -math.inf
    mode = "train_loss"
    cache_seconds, epochs_run = 0.0, 0
    for k in candidates:  # a handful of whole trainings, not a hot path
        own = module if len(candidates) == 1 else copy.deepcopy(module)
        staged = _staged(progress, k) if progress is not None and len(candidates) > 1 else progress
        model, calibration, stages, causal, cached, mode = finetune_one_pass(
            train, valid, aggregation=aggregation, n_classes=n_classes,
            config=replace(config, train_layers=k), seed=seed, encoder=(own, tokenizer),
            progress=staged,
        )  # fmt: skip
        stage = stages[-1]
        score = stage.valid_score[stage.best_epoch] if stage.valid_score else -math.inf
        cache_seconds = cache_seconds + cached
        epochs_run = epochs_run + sum(len(s.train_loss) for s in stages)
        scores[str(k)] = float(score)
        if best is None or score > best_score:
            best_score = score
            best = OnePassFit(model, replace(config, train_layers=k), calibration, stage, causal, None)
    assert best is not None
    best = replace(best, cache_seconds=cache_seconds, epochs_run=epochs_run)
    if config.train_layers or not valid:
        return best
    choice = {"mode": mode, "valid_score": scores, "chosen": best.config.train_layers}
    return replace(best, choice=choice)


def predict_logp(
    model: OnePassScorer,
    records: Sequence[ResponseRecord],
    tokenizer: Any,
    config: FinetuneConfig,
    *,
    causal: bool,
    device: torch.device,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Uncalibrated log-probabilities (N, C) of every step of ``records`` (``progress``: the cache stage, then
    ``STAGE_SCORE`` after each chunk of responses; it may raise to cancel)."""
    dtype, _ = training_precision(device, config.precision)
    data, states = prepare(model, records, tokenizer, config, causal=causal, device=device, progress=progress)
    on_chunk = None
    if progress is not None:
        report = progress

        def on_chunk(done: int, total: int) -> None:
            report(STAGE_SCORE, done / max(total, 1), f"{done}/{total} responses scored")

    return score_windows(
        model, data, states, device=device, batch_bags=config.batch_bags, autocast=dtype, progress=on_chunk
    )


__all__ = [
    "STAGE_CACHE",
    "STAGE_SCORE",
    "OnePassFit",
    "choose_train_layers",
    "finetune_one_pass",
    "predict_logp",
    "prepare",
    "state_cache",
]
