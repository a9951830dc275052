"""Shared plumbing of the quality experiments (tune.py, paper_tables.py, gold_curve.py, active_selection.py).

Each experiment process embeds a dataset once (`prepare_splits`, from the on-disk embedding cache) and then runs
many trainings on the prepared bags (`run_one`), on one torch thread: the MLPs are tiny, and on a 2-core machine
shared with other jobs one thread is faster than fighting for two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from data_option import DATA, add_data_option

from fractal_core.data.io import read_split_dir
from fractal_core.evaluation import comparison as evaluation
from fractal_core.evaluation.comparison import PreparedSplits, prepare_splits
from fractal_core.evaluation.metrics import auc_roc, average_precision
from fractal_core.evaluation.selection import bag_posterior
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.estimator import FractalModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ("delucionqa", "processbench")  # sub-folders of the --data folder


def setup() -> None:
    """One torch thread, offline Hugging Face hub, the probe model in `run_one`."""
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    install_probe()


def load(dataset: str, label_view: str = "native", data: Path = DATA) -> PreparedSplits:
    """Embedded train/valid/test of a shared dataset (cached embeddings; nothing is embedded twice)."""
    from fractal_core.embedding.encoder import get_encoder

    splits = read_split_dir(data / dataset)
    return prepare_splits(splits, get_encoder(None), label_view=label_view, device="cpu")  # type: ignore[arg-type]


def valid_as_test(prepared: PreparedSplits) -> PreparedSplits:
    """The tuning view: models early-stop as usual and are scored on the VALID split (test is never looked at).
    The per-group breakdown is dropped: its groups are the test records'."""
    assert prepared.valid is not None
    return replace(prepared, test=prepared.valid, test_groups={})


def machine() -> dict[str, Any]:
    """Date, CPU model, core count and load, for the record."""
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?"
        )
    except OSError:
        model = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": model,
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def stats(values: list[float]) -> dict[str, float]:
    """Mean and std (ddof=0) ignoring NaN."""
    arr = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if not len(arr):
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(len(arr))}


def fmt(s: dict[str, float], digits: int = 3) -> str:
    if s["n"] == 0:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float, allow_nan=True) + "\n")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------ probe model
# `run_one` returns test metrics only. The experiments also want (a) the metrics of the scores conditioned on
# the test response labels (`bag_posterior`: what the app shows for a labelled response) and (b) the fitted
# model itself (active selection scores the training bags with a no-gold model). Rather than copy `run_one`'s
# gold-hiding logic, the evaluation module's FractalModel is swapped for this subclass inside experiment
# processes only.
class ProbeModel(FractalModel):
    """FractalModel that also reports posterior metrics and remembers the last fitted instance."""

    last: ProbeModel | None = None

    def fit_bags(self, *args: Any, **kwargs: Any) -> ProbeModel:  # type: ignore[override]
        super().fit_bags(*args, **kwargs)
        ProbeModel.last = self
        return self

    def evaluate_bags(self, bags: BagSet) -> dict[str, float]:
        out = super().evaluate_bags(bags)
        score = self.predict_bags(bags)
        post = bag_posterior(score, bags.bag_index, bags.labels, aggregation=self.aggregation_)
        gold = bags.gold.cpu().numpy()
        mask = gold >= 0
        positive = gold[mask] >= 1
        p = post.cpu().numpy()
        out["posterior_auc_roc"] = auc_roc(positive, p[mask])
        out["posterior_auprc"] = average_precision(positive, p[mask])
        return out


def install_probe() -> None:
    evaluation.FractalModel = ProbeModel  # type: ignore[misc]


Command = Callable[[argparse.Namespace], None]


def run_cli(
    doc: str | None,
    run: Command,
    *,
    run_options: dict[str, dict[str, Any]] | None = None,
    **commands: Command,
) -> None:
    """The experiments' command line: ``run --dataset D [--view V] [--data DIR] [options]`` plus named extra commands."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--dataset", required=True, choices=tuple(DATASETS))
    run_parser.add_argument("--view", default="native", choices=("native", "binary", "mean"))
    add_data_option(run_parser)
    for flag, options in (run_options or {}).items():
        run_parser.add_argument(flag, **options)
    run_parser.set_defaults(func=run)
    for name, func in commands.items():
        sub.add_parser(name).set_defaults(func=func)
    args = parser.parse_args()
    args.func(args)


def run_meta(args: argparse.Namespace, prepared: PreparedSplits, **extra: Any) -> dict[str, Any]:
    """What every result file records about its run: dataset, view, machine, encoder, plus ``extra``."""
    return {
        "dataset": args.dataset,
        "view": args.view,
        "machine": machine(),
        "encoder_id": prepared.encoder_id,
        **extra,
    }
