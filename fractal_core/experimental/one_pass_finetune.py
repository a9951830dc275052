"""Fine-tuning on a CPU in one pass per response (``FinetuneConfig(route="one_pass")``).

The windows are built once (``one_pass_windows``), the frozen lower layers run once per window and their states
are cached on disk beside the embedding cache (``one_pass_scorer.TokenStateCache``), so an epoch runs only the
top ``train_layers`` layers and the head. The epochs, early stopping, calibration and storage are the per-step
route's: ``fitting.train.run_epochs``, ``objectives.logp_validator``, ``calibration.fit_calibration`` and
``FinetuneResult``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import resolve_device, resolve_model_path
from fractal_core.embedding.model_files import compute_encoder_id, default_cache_dir
from fractal_core.experimental.finetune_config import FinetuneConfig, training_precision
from fractal_core.experimental.one_pass_scorer import (
    OnePassScorer,
    PackedStates,
    TokenStateCache,
    lower_states,
    one_pass_loss,
    score_windows,
)
from fractal_core.experimental.one_pass_windows import PassWindows, build_pass_windows, causal_mode
from fractal_core.fitting.calibration import fit_calibration
from fractal_core.fitting.objectives import logp_validator
from fractal_core.fitting.train import ProgressFn, Schedule, run_epochs, seeded_dropout


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
) -> tuple[PassWindows, PackedStates]:
    """Windows of ``records`` and their lower states (from the disk cache when there)."""
    data = build_pass_windows(records, tokenizer, config, causal=causal)
    cache, encoder_id = state_cache(config)
    states = lower_states(
        model, data, device=device, batch=config.score_batch, cache=cache, encoder_id=encoder_id
    )
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
) -> tuple[OnePassScorer, dict[str, Any] | None, Any, bool, float]:
    """Train the top layers and the head; returns (model, calibration, stage result, causal, cache seconds)."""
    device = resolve_device(config.device)
    dtype, needs_scaler = training_precision(device, config.precision)
    generator = torch.Generator().manual_seed(seed)
    module, tokenizer = encoder
    model = OnePassScorer(module, n_classes, train_layers=config.train_layers, generator=generator).to(device)
    causal = causal_mode(config, list(train) + list(valid or []))
    started = time.perf_counter()
    train_data, train_states = prepare(model, train, tokenizer, config, causal=causal, device=device)
    valid_set = prepare(model, valid, tokenizer, config, causal=causal, device=device) if valid else None
    cache_seconds = time.perf_counter() - started
    optimiser = torch.optim.AdamW(
        [
            {"params": model.trainable(), "lr": config.learning_rate},
            {"params": model.head.parameters(), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    rule, _ = logp_validator(
        valid_set[0].bagset() if valid_set else None, aggregation=aggregation, config=config.bag
    )

    def step_loss(bags: torch.Tensor) -> torch.Tensor:
        return one_pass_loss(
            model, train_data, train_states, bags, aggregation=aggregation, variant=config.bag.bag_variant,
            temperature=config.bag.lse_temperature, proportion=config.bag.proportion_loss,
            gold_weight=config.gold_weight, device=device, autocast=dtype,
        )  # fmt: skip

    def scores(target: tuple[PassWindows, PackedStates]) -> torch.Tensor:
        return score_windows(model, *target, device=device, batch_bags=config.batch_bags, autocast=dtype)

    def validate() -> float:
        assert rule is not None and valid_set is not None
        return rule(scores(valid_set))

    with seeded_dropout(seed, device):
        stage = run_epochs(
            model,
            train_data.n_bags,
            step_loss,
            optimiser=optimiser,
            schedule=Schedule(config.batch_bags, config.epochs, config.patience, report_steps=True),
            generator=generator,
            validate=validate if rule is not None else None,
            stage="finetune",
            progress=progress,
            scaler=torch.amp.GradScaler("cuda") if needs_scaler else None,
        )
    calibration = None
    if config.calibrate and n_classes == 2 and aggregation in ("max", "min"):
        target = valid_set if valid_set is not None and valid_set[0].n_bags else (train_data, train_states)
        calibration = fit_calibration(
            scores(target), target[0].bagset(), aggregation=aggregation, n_classes=2, kind="logit"
        ).to_dict()
    return model, calibration, stage, causal, cache_seconds


def predict_logp(
    model: OnePassScorer,
    records: Sequence[ResponseRecord],
    tokenizer: Any,
    config: FinetuneConfig,
    *,
    causal: bool,
    device: torch.device,
) -> torch.Tensor:
    """Uncalibrated log-probabilities (N, C) of every step of ``records``."""
    dtype, _ = training_precision(device, config.precision)
    data, states = prepare(model, records, tokenizer, config, causal=causal, device=device)
    return score_windows(model, data, states, device=device, batch_bags=config.batch_bags, autocast=dtype)


__all__ = ["finetune_one_pass", "predict_logp", "prepare", "state_cache"]
