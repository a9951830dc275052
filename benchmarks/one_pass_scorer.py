"""One pass per response vs one sequence per step: the fine-tuning epoch time of the token-level scorer.

On the first ``--responses`` ProcessBench train responses, in the same run and under the same thread count:

- per_step (``FinetuneConfig()``): each step its own sequence with the earlier steps in front, every layer trained;
  sequences built first (timed apart), then one epoch;
- one_pass (``route="one_pass"``): windows built and the frozen lower layers' states computed and cached (timed
  apart, "cache"), then one epoch over the top ``--train-layers`` layers and the head.

It prints both epochs, their ratio and the one-pass epoch projected linearly to the full train split. With
``--auc-train N``, it also trains each of ``--runs`` on N train responses (10% of them keep their gold step
labels): the one-pass scorer with a method of the suite (``one_pass:hazard``, ``one_pass:hybrid``: its objective
unchanged, ``--auc-epochs`` epochs) and the frozen MLP (``frozen:hybrid``), and prints the AUC given the label on
``--auc-valid`` valid responses, then once on ``--auc-test`` test responses with the official F1 (threshold tuned
on valid) and the F key's top-1 (rule chosen on valid), for each of ``--seeds`` (mean +- sd at the end;
``--no-timing`` skips the epoch timing). With ``--score-responses N``, it times scoring the first N test
responses from cold caches (``fractal score``'s work once a model is loaded): the one-pass scorer (windows, the
frozen lower layers and the trained top, no state cached) against the frozen MLP (sentence embeddings, none
cached) in the same run, each trained first on the ``--responses`` train responses. ``--binary`` reads every
level >= 1 as 1 (DelucionQA's binary view; the figures need max bags with two levels).

    nice .venv/bin/python benchmarks/one_pass_scorer.py --data /path/to/processbench [--responses 60] [--peer-responses 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fractal_core.data.io import read_records
from fractal_core.data.records import ResponseRecord
from fractal_core.experimental.finetune import FinetuneConfig, finetune, load_encoder
from fractal_core.experimental.one_pass_finetune import finetune_one_pass, prepare
from fractal_core.experimental.one_pass_scorer import OnePassScorer
from fractal_core.experimental.one_pass_windows import causal_mode
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


def binary_view(records: list[ResponseRecord]) -> list[ResponseRecord]:
    """Every level >= 1 read as 1, response and sentence labels alike (``fractal evaluate --label-view binary``
    does the same on embedded bags)."""

    def level(v: Any) -> Any:
        return v if v is None or v < 1 else type(v)(1)

    return [
        replace(
            r,
            response_label=level(r.response_label),
            sentence_labels=None if r.sentence_labels is None else [level(v) for v in r.sentence_labels],
        )
        for r in records
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ProcessBench directory (train/valid.jsonl)")
    parser.add_argument("--responses", type=int, default=60)
    parser.add_argument(
        "--peer-responses",
        type=int,
        help="per_step peer on only the first N of them (default: all); figures compared per response",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--auc-train", type=int, default=0, help="0: timing only")
    parser.add_argument("--auc-valid", type=int, default=150)
    parser.add_argument("--auc-test", type=int, default=150, help="test responses scored once per seed")
    parser.add_argument("--auc-epochs", type=int, default=3)
    parser.add_argument(
        "--runs",
        default="one_pass:hazard,one_pass:hybrid,frozen:hybrid",
        help="comma-separated scorer:method of the quality comparison (scorer: one_pass or frozen)",
    )
    parser.add_argument("--window-tokens", type=int, default=384)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the quality comparison")
    parser.add_argument("--no-timing", action="store_true", help="skip the per-step / one-pass epoch timing")
    parser.add_argument(
        "--state-cache", type=Path, help="keep the frozen states here (default: a temporary dir)"
    )
    parser.add_argument(
        "--binary", action="store_true", help="read every level >= 1 as 1 (DelucionQA's binary view)"
    )
    parser.add_argument(
        "--score-responses", type=int, default=0, help="time scoring N test responses (0: no)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = read_records(args.data / "train.jsonl")
    if args.binary:
        train = binary_view(train)
    records = train[: args.responses]
    base = FinetuneConfig(device="cpu", epochs=1, patience=1, calibrate=False, gold_weight=0.0)
    print(
        f"# {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}, {args.threads} threads"
    )
    with tempfile.TemporaryDirectory() as temporary:
        cache_dir = str(args.state_cache or temporary)
        one = replace(
            base, route="one_pass", train_layers=args.train_layers, state_cache=cache_dir,
            window_tokens=args.window_tokens,
        )  # fmt: skip
        if not args.no_timing:
            print(f"# {len(records)} responses, {sum(len(r.spans) for r in records)} steps")
            timing(records, base, one, args.peer_responses)
        if args.score_responses:
            test = read_records(args.data / "test.jsonl")[: args.score_responses]
            score_timing(records, test, one, Path(temporary))
        if args.auc_train:
            seeds = [int(s) for s in args.seeds.split(",")]
            quality(
                args.data, train[: args.auc_train], one, seeds, args.auc_valid, args.auc_test, args.auc_epochs,
                args.runs.split(","), binary=args.binary,
            )  # fmt: skip


def timing(
    records: list[ResponseRecord], base: FinetuneConfig, one: FinetuneConfig, peer: int | None = None
) -> None:
    """One epoch of each route on ``records`` (the per_step peer on the first ``peer`` of them, when given:
    its epoch over the whole split is hours on a CPU), their ratio per response and the projection to the full
    train split."""
    cached, one_epoch, windows = one_pass_epoch(records, one)
    peer_records = records[:peer] if peer else records
    built, step_epoch, sequences = per_step_epoch(peer_records, base)
    print(
        f"per_step ({len(peer_records)} responses): {sequences} sequences built in {built[0]:.1f}s; "
        f"epoch {step_epoch[0]:.1f}s wall, {step_epoch[1]:.1f}s CPU"
    )
    print(
        f"one_pass ({len(records)} responses): {windows} windows, lower states cached in {cached[0]:.1f}s wall, "
        f"{cached[1]:.1f}s CPU; epoch {one_epoch[0]:.1f}s wall, {one_epoch[1]:.1f}s CPU"
    )
    ratio = (step_epoch / len(peer_records)) / (one_epoch / len(records))
    print(f"epoch ratio per response, per_step / one_pass: {ratio[0]:.1f}x wall, {ratio[1]:.1f}x CPU")
    for name, k in (("wall", 0), ("CPU", 1)):
        one_min = one_epoch[k] * FULL_TRAIN / len(records) / 60
        step_min = step_epoch[k] * FULL_TRAIN / len(peer_records) / 60
        cache_min = cached[k] * FULL_TRAIN / len(records) / 60
        print(
            f"projected over {FULL_TRAIN} responses ({name}): one_pass epoch {one_min:.1f} min "
            f"(+ cache once {cache_min:.1f} min), per_step epoch {step_min:.1f} min"
        )


def score_timing(
    train: list[ResponseRecord], test: list[ResponseRecord], one: FinetuneConfig, home: Path
) -> None:
    """Seconds (wall, CPU) to score ``test`` from cold caches with a one-pass scorer and with the frozen MLP, both
    trained on ``train`` (one epoch of bagloss for the one-pass scorer: the method does not change scoring)."""
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.estimator import FractalModel

    # Sentence embeddings start cold: none of ``test`` is cached.
    os.environ["FRACTAL_HOME"] = str(home / "fresh")
    config = replace(one, state_cache=str(home / "train-states"), method="bagloss")
    one_pass = finetune(train, None, aggregation="max", n_classes=2, config=config, seed=0)
    frozen = FractalModel("bagloss", config=TrainConfig(device="cpu"), seed=0).fit(train)
    one_pass.config = replace(one_pass.config, state_cache=str(home / "score-states"))  # cold frozen states
    started = clocks()
    one_pass.predict(test)
    one_cost = clocks() - started
    frozen.predict(test)
    frozen_cost = clocks() - started - one_cost
    steps = sum(len(r.spans) for r in test)
    print(
        f"scoring {len(test)} test responses ({steps} steps) from cold caches: one_pass {one_cost[0]:.1f}s wall, "
        f"{one_cost[1]:.1f}s CPU; frozen MLP {frozen_cost[0]:.1f}s wall, {frozen_cost[1]:.1f}s CPU; "
        f"ratio one_pass / frozen {one_cost[0] / frozen_cost[0]:.1f}x wall, {one_cost[1] / frozen_cost[1]:.1f}x CPU",
        flush=True,
    )


def split_figures(
    valid: list[ResponseRecord],
    test: list[ResponseRecord],
    valid_scores: list[np.ndarray],
    test_scores: list[np.ndarray],
    method: str,
) -> list[float]:
    """[AUC given the label on valid, and on test; on test, the official F1 (threshold tuned on valid) and the
    F key's top-1 (rule chosen on valid)]: ``fractal evaluate``'s rules on any scorer's step scores."""
    from fractal_core.evaluation.comparison import first_error_figures
    from fractal_core.experimental.one_pass_pipeline import gold_metrics
    from fractal_core.experimental.one_pass_windows import record_bags
    from fractal_core.fitting.first_error import default_rule

    v_bags, t_bags = record_bags(valid), record_bags(test)
    v_score = torch.from_numpy(np.concatenate(valid_scores))
    t_score = torch.from_numpy(np.concatenate(test_scores))
    first = first_error_figures(v_score, v_bags, t_score, t_bags, default=default_rule(method))
    return [
        gold_metrics(v_score, v_bags, "max", 2)["posterior_auc_roc"],
        gold_metrics(t_score, t_bags, "max", 2)["posterior_auc_roc"],
        float(first.get("first_error_f1", float("nan"))),
        float(first.get("fkey_top1", float("nan"))),
    ]


def quality(
    data: Path,
    train: list[ResponseRecord],
    one: FinetuneConfig,
    seeds: list[int],
    n_valid: int,
    n_test: int,
    epochs: int,
    runs: list[str],
    *,
    binary: bool = False,
) -> None:
    """Per seed: each of ``runs`` ("one_pass:<method>" for the one-pass scorer trained with that method, its
    objective unchanged; "frozen:<method>" for the frozen MLP) trained on ``train`` with a seeded 10% of its gold
    step labels; the AUC given the label on valid, then (once, the configuration fixed beforehand) on test with
    the official F1 and the F key's top-1, and each fit's (wall, CPU) seconds; then mean +- sd over the seeds."""
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.estimator import FractalModel

    valid = read_records(data / "valid.jsonl")[:n_valid]
    test = read_records(data / "test.jsonl")[:n_test]
    if binary:
        valid, test = binary_view(valid), binary_view(test)
    config = replace(one, epochs=epochs, patience=epochs, gold_weight=0.0, calibrate=True)
    print(
        f"# quality: {len(train)} train responses (10% gold), {len(valid)} valid, {len(test)} test, "
        f"one_pass {epochs} epoch(s), top {config.train_layers} layers trained, window {config.window_tokens}"
    )
    rows: dict[str, list[list[float]]] = {run: [] for run in runs}
    for seed in seeds:
        fit_on = with_gold_share(train, 0.1, seed=seed)
        for run in runs:
            scorer, method = run.split(":")
            started = clocks()
            model: Any
            if scorer == "one_pass":
                model = finetune(
                    fit_on,
                    valid,
                    aggregation="max",
                    n_classes=2,
                    config=replace(config, method=method),
                    seed=seed,
                )
            else:
                model = FractalModel(method, config=TrainConfig(device="cpu"), seed=seed).fit(
                    fit_on, valid=valid
                )
            clock = clocks() - started
            row = split_figures(valid, test, model.predict(valid), model.predict(test), method)
            rows[run].append([*row, *clock])
            print(
                f"seed {seed} {run}: valid AUC given the label {row[0]:.3f}; test AUC {row[1]:.3f}, official F1 "
                f"{row[2]:.3f}, F-key top-1 {row[3]:.3f}; fit {clock[0]:.0f}s wall, {clock[1]:.0f}s CPU",
                flush=True,
            )
    for run, values in rows.items():
        a = np.array(values)
        mean, sd = a.mean(axis=0), a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        cells = ", ".join(
            f"{name} {m:.3f} +- {d:.3f}"
            for name, m, d in zip(
                ("valid AUC", "test AUC", "test F1", "test F-key top-1"), mean[:4], sd[:4], strict=True
            )
        )
        print(f"{run} over {len(a)} seeds: {cells}; fit {mean[4]:.0f}s wall, {mean[5]:.0f}s CPU")


if __name__ == "__main__":
    main()
