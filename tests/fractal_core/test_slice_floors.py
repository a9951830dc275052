"""Quality floors on small ProcessBench slices, and why the one-pass scorer has none yet.

- Step calibration (``fitting.step_calibration``), fitted on the validation split, lowers the step ECE of a frozen
  BagLoss fit on test (``step_ece_calibrated`` against ``step_ece``, as ``fractal evaluate`` reports them):
  BagLoss's hard max makes its probabilities sharp. The same model with its step calibration switched off (the
  identity map) fails the same assertions, so the test can fail.
- The one-pass scorer: ``python -m tests.fractal_core.test_slice_floors one_pass`` trains it (``hybrid``, 20% gold,
  MiniLM, top layer, one epoch) on the first ``ONE_PASS_SLICE`` solutions and prints its AUC given the label on
  valid with that of its scores reversed and of constant scores. At a CI-affordable size it does not beat either
  (2026-12-07, seeds 0-4: 0.809-0.829 against constant 0.820; seed 0 reversed 0.827), so no floor set there
  would tell a trained scorer from a broken one, and none is asserted; the benchmark
  (``benchmarks/one_pass_scorer.py``, BENCHMARKS.md) measures it on 200 responses instead.

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


def _one_pass_auc(home: Path, seed: int) -> tuple[float, float, float]:
    """AUC given the label on the valid slice of the trained one-pass scorer, of its scores reversed (a scorer
    that ranks the steps backwards) and of constant scores."""
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
        train_layers=1, epochs=1, patience=1, window_tokens=256, state_cache=str(home / "states"),
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
    return (
        gold_metrics(score, bags, "max", 2)["posterior_auc_roc"],
        gold_metrics(1 - score, bags, "max", 2)["posterior_auc_roc"],
        gold_metrics(flat, bags, "max", 2)["posterior_auc_roc"],
    )


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
            auc, backwards, flat = (
                _one_pass_auc(Path(home), seed) if which != "calibration" else (np.nan, np.nan, np.nan)
            )
            middle = time.perf_counter()
            ece = (
                _calibration(Path(home), seed)
                if which != "one_pass"
                else {"step_ece": np.nan, "step_ece_calibrated": np.nan}
            )
            print(
                f"seed {seed}: one-pass AUC given the label {auc:.4f} (reversed {backwards:.4f}, constant {flat:.4f}, "
                f"{middle - started:.0f}s); step ECE raw {ece['step_ece']:.4f} calibrated "
                f"{ece['step_ece_calibrated']:.4f} ({time.perf_counter() - middle:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    import sys

    measure(*sys.argv[1:])
