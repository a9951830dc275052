"""Quality regression on first-error data: the hazard objective against hybrid on a fixed ProcessBench slice.

ProcessBench's gold stops at each solution's first wrong step, so ``auto`` offers the hazard method there
(``fractal_core.mil.hazard``). The slice is the first 150 train / 60 valid / 80 test solutions, embedded into a
temporary FRACTAL_HOME as CI does, then run through ``prepare_splits`` + ``run_one`` exactly as ``fractal
evaluate`` does, 20% gold responses, seeds 0 and 1: hybrid (the MLP scorer, today's default with gold) and hazard
with the scorer ``auto`` gives it (``auto_plan.AUTO_HAZARD_SCORER``). A change that breaks the hazard loss, its
early stopping, the official F1's threshold or the F key's rule fails here.

The encoder runs in float32 whatever the CPU offers, so the figures do not depend on the machine's number
formats. Floors sit below the values measured over seeds 0-4
(``python -m tests.fractal_core.test_first_error_regression`` prints them) by more than the spread of a 2-seed
mean; the measured figures are in the comments.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from tests.shared_data import shared

SLICE = {"train": 150, "valid": 60, "test": 80}
SEEDS = (0, 1)
GOLD = 0.2
KEYS = ("posterior_auc_roc", "first_error_f1", "fkey_top1")


def _prepare(home: Path):
    os.environ["FRACTAL_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from fractal_core.data.io import read_records
    from fractal_core.embedding.encoder import EncoderConfig, get_encoder
    from fractal_core.evaluation.comparison import prepare_splits

    splits = {}
    for split, n in SLICE.items():
        lines = (shared("processbench") / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        path = home / f"{split}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        splits[split] = read_records(path)
    # float32 on every CPU: bf16 vectors (CPUs with native bf16) move hybrid's official F1 by up to 0.16 on
    # this slice, so floors measured in one number format would not hold in the other.
    encoder = get_encoder(EncoderConfig(cache_dir=str(home / "cache"), device="cpu", precision="float32"))
    return prepare_splits(splits, encoder, label_view="native", device="cpu")


def _run(prepared, seeds) -> dict[str, dict[str, list[float]]]:
    from dataclasses import replace

    import torch

    from fractal_core.evaluation.comparison import run_one
    from fractal_core.fitting.auto_plan import AUTO_HAZARD_SCORER
    from fractal_core.fitting.config import TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny scorers: one thread is fastest on a shared machine
    config = TrainConfig(device="cpu")
    runs = (("hybrid", config), ("hazard", replace(config, scorer=AUTO_HAZARD_SCORER)))
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for seed in seeds:
            for method, run_config in runs:
                r = run_one(prepared, method, seed=seed, gold_fraction=GOLD, config=run_config)
                for key in KEYS:
                    out.setdefault(method, {}).setdefault(key, []).append(float(r[key]))
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_hazard_on_a_processbench_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path))
    got = _run(_prepare(tmp_path), SEEDS)
    mean = {m: {k: statistics.fmean(v) for k, v in d.items()} for m, d in got.items()}
    for (method, key), floor in THRESHOLDS.items():
        assert mean[method][key] >= floor, (method, key, mean[method][key], floor)
    # The reason hazard is a candidate on such data: its top-scored step is the first error more often than
    # hybrid's (every seed 0-4: +0.03 to +0.31), and given the label it ranks steps about as well.
    assert mean["hazard"]["fkey_top1"] >= mean["hybrid"]["fkey_top1"], mean
    assert mean["hazard"]["posterior_auc_roc"] >= mean["hybrid"]["posterior_auc_roc"] - HAZARD_SLACK, mean


# Measured with seeds 0-4 on 2026-12-07, embedded afresh as in CI (`measure()`); comments give min / mean / max
# (per seed). The official F1 of hazard is not floored: on 60 valid solutions its threshold swings it from 0.00
# to 0.24 across seeds (hybrid 0.21-0.25).
HAZARD_SLACK = 0.02  # given the label: hazard 0.876 / 0.910 / 0.924, hybrid 0.893 / 0.900 / 0.908
THRESHOLDS: dict[tuple[str, str], float] = {
    ("hybrid", "posterior_auc_roc"): 0.88,  # 0.893 / 0.900 / 0.908
    ("hazard", "posterior_auc_roc"): 0.86,  # 0.876 / 0.910 / 0.924
    ("hybrid", "first_error_f1"): 0.18,  # 0.209 / 0.228 / 0.255
    ("hazard", "fkey_top1"): 0.18,  # 0.205 / 0.262 / 0.308 (hybrid 0.000 / 0.113 / 0.231)
}


def measure() -> None:
    """Print both methods' figures over seeds 0-4 on the slice, embedded afresh as in CI."""
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        got = _run(_prepare(Path(home)), range(5))
    for method, d in got.items():
        for key, values in d.items():
            print(
                f"{method:7s} {key:18s} min {min(values):.4f} mean {statistics.fmean(values):.4f} "
                f"max {max(values):.4f}  {' '.join(f'{v:.4f}' for v in values)}"
            )


if __name__ == "__main__":
    measure()
