"""Quality floors on small ProcessBench slices, and why the one-pass scorer has none yet.

- Step calibration (``fitting.step_calibration``), fitted on the validation split, lowers the step ECE of a frozen
  BagLoss fit on test (``step_ece_calibrated`` against ``step_ece``, as ``fractal evaluate`` reports them):
  BagLoss's hard max makes its probabilities sharp. The same model with its step calibration switched off (the
  identity map) fails the same assertions, so the test can fail.
- The one-pass scorer (``hybrid``, 20% gold, MiniLM in float32, top 2 layers, four epochs on the first
  ``ONE_PASS_SLICE`` solutions) ranks the steps of each response the right way round: its AUC given the label on
  the valid slice beats that of its own scores reversed by ``ONE_PASS_GAP`` and is not below constant scores, and
  its bag-blind AUC is above chance. The AUC given the label alone cannot be the floor at this size: one constant
  probability reaches 0.820 from each response's label and length, and a one-epoch, top-layer fit scored
  0.809-0.829 (seeds 0-4), its reversal as much (seed 0: 0.827). The reversed and constant scores are scored
  through the same assertions and fail them, so the test can fail.

Floors are set from seeds other than the test's (comments give min / mean / max; ``python -m
tests.fractal_core.test_slice_floors calibration`` prints them), with margin for a shared CPU.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.shared_data import shared

ONE_PASS_SLICE = {"train": 60, "valid": 40}
CALIBRATION_SLICE = {"train": 120, "valid": 60, "test": 80}
GOLD = 0.2
TEST_SEED = 0


def _lines(split: str, n: int) -> list[str]:
    return (shared("processbench") / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]


def _records(home: Path, split: str, n: int):
    from fractal_core.data.io import read_records

    path = home / f"{split}.jsonl"
    path.write_text("\n".join(_lines(split, n)) + "\n", encoding="utf-8")
    return read_records(path)


def _with_gold_share(records, share: float, seed: int):
    keep = np.random.default_rng(seed).random(len(records)) < share
    return [r if k else replace(r, sentence_labels=None) for r, k in zip(records, keep, strict=True)]


def _one_pass_figures(home: Path, seed: int) -> dict[str, dict[str, float]]:
    """On the valid slice: the AUC given the label, the bag-blind AUC and the first-error top-1 of the trained
    one-pass scorer ("trained"), of its scores reversed ("reversed": a scorer ranking every step backwards) and of
    one constant probability ("constant")."""
    os.environ["FRACTAL_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from fractal_core.experimental.finetune import FinetuneConfig, finetune
    from fractal_core.experimental.one_pass_pipeline import gold_metrics
    from fractal_core.experimental.one_pass_windows import record_bags

    train = _with_gold_share(_records(home, "train", ONE_PASS_SLICE["train"]), GOLD, seed)
    valid = _records(home, "valid", ONE_PASS_SLICE["valid"])
    config = FinetuneConfig(
        device="cpu", precision="float32", route="one_pass", method="hybrid", gold_weight=0.0,
        train_layers=2, epochs=ONE_PASS_EPOCHS, patience=ONE_PASS_EPOCHS, window_tokens=256,
        state_cache=str(home / "states"),
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = finetune(train, valid, aggregation="max", n_classes=2, config=config, seed=seed)
    finally:
        torch.set_num_threads(threads)
    bags = record_bags(valid)
    score = torch.from_numpy(np.concatenate(model.predict(valid)))
    flat = torch.full((bags.n_sentences,), 0.5, dtype=torch.float64)
    keys = ("posterior_auc_roc", "instance_auc_roc", "first_error_acc")
    out = {}
    for name, scores in (("trained", score), ("reversed", 1 - score), ("constant", flat)):
        metrics = gold_metrics(scores, bags, "max", 2)  # once per scorer, then the figures the floor reads
        out[name] = {k: metrics[k] for k in keys}
    return out


def _one_pass_floor(got: dict[str, dict[str, float]], name: str) -> list[str]:
    """What ``got[name]`` misses of the one-pass floor (empty: it passes). A scorer's reversal: the trained and
    reversed scores are each other's, constant scores their own."""
    reversal = {"trained": "reversed", "reversed": "trained", "constant": "constant"}[name]
    this, back, flat = got[name], got[reversal], got["constant"]
    missed = []
    if this["posterior_auc_roc"] < back["posterior_auc_roc"] + ONE_PASS_GAP:
        missed.append("given the label, not ahead of its reversal")
    if this["posterior_auc_roc"] < flat["posterior_auc_roc"]:
        missed.append("given the label, below constant scores")
    if this["instance_auc_roc"] <= 0.5:
        missed.append("bag-blind AUC at or below chance")
    return missed


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_pass_scorer_ranks_the_steps_the_right_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path))
    got = _one_pass_figures(tmp_path, TEST_SEED)
    assert _one_pass_floor(got, "trained") == [], got
    # Scores ranking every step backwards, and one constant probability, fail the same floor: the test can fail.
    assert _one_pass_floor(got, "reversed") != [], got
    assert _one_pass_floor(got, "constant") != [], got


# Measured with seeds 1-4 (the test runs seed 0) on 2026-12-07, 2-core AMD EPYC (AVX2), float32; each 41-61 s.
# Given the label, trained minus reversed: 0.057 / 0.070 / 0.083 (min / mean / max; seed 0: 0.075); trained minus
# constant (0.820): 0.006 / 0.009 / 0.012 (seed 0: 0.011); bag-blind AUC 0.535 / 0.558 / 0.582 (seed 0: 0.546).
# With one epoch of the top layer only, the same gap was -0.018-0.065 over seeds 0-4 (no floor possible).
ONE_PASS_EPOCHS = 4
ONE_PASS_GAP = 0.03


def _calibration(home: Path, seed: int) -> dict[str, float]:
    """A frozen BagLoss fit on the calibration slice through ``run_one``, as ``fractal evaluate`` runs it: its
    test step ECE, raw and step-calibrated (fitted on valid), and the calibrated figure of the same model with
    its step calibration switched off (the identity map: ``off_calibrated``)."""
    os.environ["FRACTAL_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from fractal_core.embedding.encoder import EncoderConfig, get_encoder
    from fractal_core.evaluation.comparison import prepare_splits, run_one
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.step_calibration import StepCalibration

    splits = {split: _records(home, split, n) for split, n in CALIBRATION_SLICE.items()}
    encoder = get_encoder(EncoderConfig(cache_dir=str(home / "cache"), device="cpu"))
    prepared = prepare_splits(splits, encoder, label_view="native", device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny scorers: one thread is fastest on a shared machine

    def switched_off(model) -> dict[str, float]:
        model.step_calibration_ = StepCalibration()
        return {"off_calibrated": model.evaluate_bags(prepared.test)["step_ece_calibrated"]}

    try:
        got = run_one(
            prepared, "bagloss", seed=seed, gold_fraction=GOLD, config=TrainConfig(device="cpu"),
            inspect=switched_off,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return {k: float(got[k]) for k in ("step_ece", "step_ece_calibrated", "off_calibrated")}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_step_calibration_lowers_the_step_ece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path))
    got = _calibration(tmp_path, TEST_SEED)
    assert got["step_ece"] >= RAW_ECE_FLOOR, got  # BagLoss's probabilities are sharp: there is ECE to remove
    assert got["step_ece_calibrated"] <= got["step_ece"] - ECE_GAIN, got
    assert got["step_ece_calibrated"] <= CALIBRATED_ECE_CEILING, got
    # The same model with its step calibration switched off fails both: the test can fail.
    assert got["off_calibrated"] == pytest.approx(got["step_ece"]), got
    assert got["off_calibrated"] > min(got["step_ece"] - ECE_GAIN, CALIBRATED_ECE_CEILING), got


# Measured with seeds 1-4 (the test runs seed 0) on 2026-12-07, 2-core shared CPU; min / mean / max.
# Step ECE on the 80 test solutions: raw 0.237 / 0.268 / 0.310, calibrated 0.058 / 0.060 / 0.062, the drop
# 0.179 / 0.208 / 0.248 (seed 0: 0.271 -> 0.061). 18-57 s each on the loaded machine.
RAW_ECE_FLOOR = 0.15
ECE_GAIN = 0.10
CALIBRATED_ECE_CEILING = 0.10


def measure(which: str = "both") -> None:
    """Print the figures of seeds 1-4 (the floors' seeds) and of the test's seed (``which``: "both",
    "one_pass" or "calibration")."""
    import tempfile
    import time

    seeds = [int(s) for s in os.environ.get("MEASURE_SEEDS", f"1,2,3,4,{TEST_SEED}").split(",")]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as home:
            started = time.perf_counter()
            one_pass = _one_pass_figures(Path(home), seed) if which != "calibration" else {}
            middle = time.perf_counter()
            ece = (
                _calibration(Path(home), seed)
                if which != "one_pass"
                else {"step_ece": np.nan, "step_ece_calibrated": np.nan}
            )
            print(
                f"seed {seed}: one-pass {one_pass} ({middle - started:.0f}s); "
                f"step ECE raw {ece['step_ece']:.4f} calibrated {ece['step_ece_calibrated']:.4f} "
                f"({time.perf_counter() - middle:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    import sys

    measure(*sys.argv[1:])
