"""One pass per response vs one sequence per step: the fine-tuning epoch time of the token-level scorer.

On the first ``--responses`` ProcessBench train responses, in the same run and under the same thread count:

- per_step (``FinetuneConfig()``): each step its own sequence with the earlier steps in front, every layer trained;
  sequences built first (timed apart), then one epoch;
- one_pass (``route="one_pass"``): windows built and the frozen lower layers' states computed and cached (timed
  apart, "cache"), then one epoch over the top ``--train-layers`` layers and the head.

It prints both epochs, their ratio and the one-pass epoch projected linearly to the full train split. With
``--auc-train N``, it also trains the one-pass scorer for ``--auc-epochs`` epochs on N train responses (10% of
them keep their gold step labels, hybrid-style) and the frozen MLP (``hybrid``) on the same responses, and
prints the AUC given the label on ``--auc-valid`` valid responses (one seed).

    nice .venv/bin/python benchmarks/one_pass_scorer.py --data /path/to/processbench [--responses 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fractal_core.data.io import read_records
from fractal_core.data.records import ResponseRecord
from fractal_core.evaluation.scorer_metrics import evaluation_metrics
from fractal_core.experimental.finetune import FinetuneConfig, finetune, load_encoder
from fractal_core.experimental.one_pass_finetune import finetune_one_pass, prepare
from fractal_core.experimental.one_pass_scorer import OnePassScorer
from fractal_core.experimental.one_pass_windows import build_pass_windows, causal_mode
from fractal_core.experimental.token_bags import build_token_bags

FULL_TRAIN = 2366  # responses in the ProcessBench train split


def clocks() -> np.ndarray:
    """(wall, CPU) seconds now: on a shared, loaded machine the CPU seconds of this process are the steadier."""
    return np.array([time.perf_counter(), time.process_time()])


def per_step_epoch(
    records: list[ResponseRecord], config: FinetuneConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """((wall, CPU) seconds to build the sequences, (wall, CPU) seconds of one epoch, sequences)."""
    encoder = load_encoder(config)
    started = clocks()
    data = build_token_bags(records, encoder[1], config)
    built = clocks()
    finetune(data, None, aggregation="max", n_classes=2, config=config, encoder=encoder)
    return built - started, clocks() - built, data.n_sentences


def one_pass_epoch(
    records: list[ResponseRecord], config: FinetuneConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """((wall, CPU) seconds to build the windows and cache the lower states, (wall, CPU) seconds of one epoch,
    windows). The epoch excludes reading the cache back (measured and taken off)."""
    encoder = load_encoder(config)
    model = OnePassScorer(encoder[0], 2, train_layers=config.train_layers)
    causal = causal_mode(config, records)
    cpu = torch.device("cpu")
    started = clocks()
    data, _ = prepare(model, records, encoder[1], config, causal=causal, device=cpu)
    cached = clocks()
    prepare(model, records, encoder[1], config, causal=causal, device=cpu)  # a cache hit: the read cost
    read = clocks()
    finetune_one_pass(
        records, None, aggregation="max", n_classes=2, config=config, seed=0, encoder=load_encoder(config)
    )
    return cached - started, clocks() - read - (read - cached), data.n_windows


def with_gold_share(records: list[ResponseRecord], share: float, seed: int) -> list[ResponseRecord]:
    """Copies of ``records`` where only a seeded ``share`` keep their gold step labels."""
    keep = np.random.default_rng(seed).random(len(records)) < share
    return [r if k else replace(r, sentence_labels=None) for r, k in zip(records, keep, strict=True)]


def given_label_auc(records: list[ResponseRecord], scores: list[np.ndarray], config: FinetuneConfig) -> float:
    """AUC of the step scores given each response's label (``evaluation_metrics``' posterior view)."""
    _, tokenizer = load_encoder(config)
    bags = build_pass_windows(records, tokenizer, config, causal=False).bagset()
    p = torch.from_numpy(np.concatenate(scores)).float().clamp(1e-6, 1 - 1e-6)
    proba = torch.stack([1 - p, p], dim=1)
    return evaluation_metrics(proba, bags, aggregation="max", n_classes=2)["posterior_auc_roc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ProcessBench directory (train/valid.jsonl)")
    parser.add_argument("--responses", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--auc-train", type=int, default=0, help="0: timing only")
    parser.add_argument("--auc-valid", type=int, default=150)
    parser.add_argument("--auc-epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = read_records(args.data / "train.jsonl")
    records = train[: args.responses]
    base = FinetuneConfig(device="cpu", epochs=1, patience=1, calibrate=False, gold_weight=0.0)
    print(
        f"# {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}, {args.threads} threads"
    )
    print(f"# {len(records)} responses, {sum(len(r.spans) for r in records)} steps")
    with tempfile.TemporaryDirectory() as cache_dir:
        one = replace(base, route="one_pass", train_layers=args.train_layers, state_cache=cache_dir)
        cached, one_epoch, windows = one_pass_epoch(records, one)
        built, step_epoch, sequences = per_step_epoch(records, base)
        print(
            f"per_step: {sequences} sequences built in {built[0]:.1f}s; epoch {step_epoch[0]:.1f}s wall, {step_epoch[1]:.1f}s CPU"
        )
        print(
            f"one_pass: {windows} windows, lower states cached in {cached[0]:.1f}s wall, {cached[1]:.1f}s CPU; epoch {one_epoch[0]:.1f}s wall, {one_epoch[1]:.1f}s CPU"
        )
        ratio = step_epoch / one_epoch
        print(f"epoch ratio per_step / one_pass: {ratio[0]:.1f}x wall, {ratio[1]:.1f}x CPU")
        scale = FULL_TRAIN / len(records) / 60
        for name, k in (("wall", 0), ("CPU", 1)):
            print(
                f"projected over {FULL_TRAIN} responses ({name}): one_pass epoch {one_epoch[k] * scale:.1f} min "
                f"(+ cache once {cached[k] * scale:.1f} min), per_step epoch {step_epoch[k] * scale:.1f} min"
            )
        if args.auc_train:
            from fractal_core.fitting.config import TrainConfig
            from fractal_core.fitting.estimator import FractalModel

            fit_on = with_gold_share(train[: args.auc_train], 0.1, seed=0)
            valid = read_records(args.data / "valid.jsonl")[: args.auc_valid]
            config = replace(
                one, epochs=args.auc_epochs, patience=args.auc_epochs, gold_weight=1.0, calibrate=True
            )
            started = time.perf_counter()
            tuned = finetune(fit_on, valid, aggregation="max", n_classes=2, config=config, seed=0)
            tuned_seconds = time.perf_counter() - started
            frozen = FractalModel("hybrid", config=TrainConfig(device="cpu"), seed=0).fit(fit_on, valid=valid)
            print(
                f"AUC given the label on {len(valid)} valid responses (trained on {len(fit_on)}, 10% gold, seed 0): "
                f"one_pass {given_label_auc(valid, tuned.predict(valid), one):.3f} "
                f"({tuned_seconds / 60:.1f} min, best epoch {tuned.best_epoch + 1}), "
                f"frozen MLP hybrid {given_label_auc(valid, frozen.predict(valid), one):.3f}"
            )


if __name__ == "__main__":
    main()
