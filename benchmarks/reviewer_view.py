"""What Review colours against what the model knows, and the F key's rules, on held-out test splits.

Usage (DIR holds one folder per dataset with train/valid/test.jsonl):
    nice .venv/bin/python benchmarks/reviewer_view.py [--data DIR] [--datasets processbench,delucionqa]
        [--seeds 0,1,2] [--gold 0.1]

Each (dataset, seed) trains hybrid with 10% random gold responses through ``comparison.run_one`` (what
``fractal evaluate`` runs) and measures on test:

- sentence AUC of (a) the marginal scores, (b) the scores Review colours by with no label entered, computed by
  the app's own function (``app.scores_view.review_colours``, one response at a time, as the page calls it), and
  (c) the library's given-label posterior (``fractal_core.mil.posterior.posterior_scores``);
- first-error top-1 of each F-key rule on valid (all its gold; ``calibrated_mode`` cross-fitted, as the choice
  sees it) and on test, the rule chosen on valid and its
  test top-1 (``fkey_*`` of ``comparison.first_error_report``), the rule the model chose on the gold it saw, and
  ProcessBench's official F1;
- the step calibration the model fitted on the held-out gold it saw (``fitting.step_calibration``): step ECE on
  test raw and calibrated, the given-label AUC on test raw, calibrated and as chosen on valid, and the F key's
  top-1 on test of ``first_error_mode`` on the model's calibrated probabilities beside ``top_given_label`` and
  the rule the model stored.

Writes ``benchmarks/results/reviewer_view.json`` and prints a markdown table (mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_option import add_data_option  # noqa: E402
from quality_common import fmt, machine, stats  # noqa: E402

from app.scores_view import review_colours  # noqa: E402
from fractal_core.data.io import read_split_dir  # noqa: E402
from fractal_core.embedding.encoder import get_encoder  # noqa: E402
from fractal_core.evaluation.comparison import PreparedSplits, prepare_splits, run_one  # noqa: E402
from fractal_core.evaluation.metrics import auc_roc  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import FractalModel  # noqa: E402
from fractal_core.fitting.first_error import choose_first_error_rule, rule_top1  # noqa: E402
from fractal_core.mil.posterior import posterior_scores  # noqa: E402
from fractal_core.mil.reviewer import FIRST_ERROR_RULES, view_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _auc(gold: np.ndarray, score: np.ndarray) -> float:
    mask = gold >= 0
    return auc_roc(gold[mask] >= 1, score[mask])


def inspect(prepared: PreparedSplits):
    """The extra figures of one fitted model (``run_one``'s ``inspect`` hook)."""

    def measure(model: FractalModel) -> dict[str, Any]:
        test = prepared.test
        gold = test.gold.cpu().numpy()
        proba = model.predict_proba_bags(test)
        marginal = (1 - proba[:, 0]).double().cpu().numpy()
        labels = test.labels.double().cpu().numpy()
        sizes = np.bincount(test.bag_index.cpu().numpy(), minlength=test.n_bags)
        pieces = np.split(marginal, np.cumsum(sizes)[:-1])

        def app_view(step: dict[str, Any] | None) -> np.ndarray:
            """``app.scores_view.review_colours`` one response at a time, as the page calls it, on the stored
            scores as the app reads them (``view_scores``: through the step calibration where it was chosen)."""
            return np.concatenate(
                [
                    np.asarray(
                        review_colours(
                            view_scores(list(p), step),
                            [None] * len(p),
                            float(y),
                            aggregation=prepared.aggregation,
                            n_levels=prepared.n_classes,
                        ),
                        dtype=np.float64,
                    )
                    for p, y in zip(pieces, labels, strict=True)
                ]
            )

        started = time.perf_counter()
        raw_view = app_view(None)
        app_seconds = time.perf_counter() - started
        # What the app colours since it reads stored scores through the version's step calibration (the training
        # job keeps model.step_calibration_ in the version's metrics; SentenceRow.view_score).
        mapped_view = app_view(model.step_calibration_.to_dict())
        logp = proba.clamp_min(1e-12).log()
        given = posterior_scores(logp, test.bag_index, test.labels, aggregation=prepared.aggregation)
        given_np = given.double().cpu().numpy()
        out: dict[str, Any] = {
            "auc_marginal": _auc(gold, marginal),
            "auc_app_view": _auc(gold, raw_view),
            "auc_app_view_with_step_calibration": _auc(gold, mapped_view),
            "auc_given_label": _auc(gold, given_np),
            "max_abs_view_minus_given": float(np.max(np.abs(raw_view - given_np))) if len(given_np) else 0.0,
            "app_view_seconds": app_seconds,
            "fkey_rule_model": model.first_error_rule_.rule,
        }
        out.update(_calibration_figures(model, prepared))
        valid = prepared.valid
        if prepared.aggregation == "max" and valid is not None:
            arrays = (
                model.predict_bags(valid).double().cpu().numpy(),
                valid.gold.cpu().numpy(),
                valid.bag_index.cpu().numpy(),
                valid.labels.double().cpu().numpy(),
            )
            # The figures the choice is made by (calibrated_mode cross-fitted over valid's responses).
            choice = choose_first_error_rule(*arrays, aggregation="max")
            for rule in FIRST_ERROR_RULES:
                out[f"fkey_valid_{rule}"] = choice.top1[rule]
        return out

    return measure


def _calibration_figures(model: FractalModel, prepared: PreparedSplits) -> dict[str, Any]:
    """The model's step calibration and what it does on test (the choice was made on valid at fit time)."""
    test = prepared.test
    step = model.step_calibration_
    gold = test.gold.cpu().numpy()
    raw = model.predict_proba_bags(test)
    chosen = model.predict_proba_bags(test, calibrated=step.given_label)
    given = posterior_scores(
        chosen.clamp_min(1e-12).log(), test.bag_index, test.labels, aggregation=prepared.aggregation
    )
    out: dict[str, Any] = {
        "calibration_scale": step.scale,
        "calibration_bias": step.bias,
        "calibration_fitted_on": step.fitted_on,
        "calibration_n_fitted": step.n_fitted,
        "calibration_given_label": float(step.given_label),
        "calibration_kept": float(not step.identity),
        **{f"calibration_valid_{k}": v for k, v in step.figures.items()},
        "auc_given_label_chosen": _auc(gold, given.double().cpu().numpy()),
    }
    if prepared.aggregation != "max":
        return out
    arrays = (
        gold,
        test.bag_index.cpu().numpy(),
        test.labels.double().cpu().numpy(),
    )
    raw_scores = (1 - raw[:, 0]).double().cpu().numpy()
    cal_scores = step.apply(raw_scores)
    out["fkey_test_mode_calibrated"] = rule_top1(
        cal_scores, *arrays, aggregation="max", rule="first_error_mode"
    )
    out["fkey_test_top_given_label_calibrated"] = rule_top1(
        cal_scores, *arrays, aggregation="max", rule="top_given_label"
    )
    stored = model.first_error_rule_
    out["fkey_test_model_rule"] = rule_top1(
        raw_scores, *arrays, aggregation="max", rule=stored.rule, calibration=stored.calibration
    )
    return out


ROWS = [
    ("auc_marginal", "sentence AUC, marginal scores"),
    ("auc_app_view", "sentence AUC, what Review colours (app.scores_view) from raw scores"),
    (
        "auc_app_view_with_step_calibration",
        "sentence AUC, what Review colours now (stored scores through the step calibration where chosen)",
    ),
    ("auc_given_label", "sentence AUC, library given-label posterior"),
    ("max_abs_view_minus_given", "max |app view - given-label posterior|"),
    *[(f"fkey_valid_{r}", f"F key top-1 on valid, {r}") for r in FIRST_ERROR_RULES],
    *[(f"fkey_top1_{r}", f"F key top-1 on test, {r}") for r in FIRST_ERROR_RULES],
    ("fkey_top1", "F key top-1 on test, rule chosen on valid"),
    ("first_error_f1", "official F1 on test (threshold tuned on valid)"),
    ("app_view_seconds", "app view over every test response (s)"),
    ("step_ece", "step ECE on test, raw"),
    ("step_ece_calibrated", "step ECE on test, calibrated"),
    ("calibration_scale", "calibration temperature a"),
    ("calibration_bias", "calibration bias b"),
    ("calibration_n_fitted", "calibration fitted on (gold steps or responses)"),
    ("calibration_valid_ece_raw", "step ECE on valid gold seen, raw"),
    ("calibration_valid_ece_calibrated", "step ECE on valid gold seen, calibrated (cross-fitted)"),
    ("calibration_kept", "map kept (lowered the valid ECE; share of seeds)"),
    ("calibration_valid_auc_given_label_raw", "given-label AUC on valid gold seen, raw"),
    (
        "calibration_valid_auc_given_label_calibrated",
        "given-label AUC on valid gold seen, calibrated (cross-fitted)",
    ),
    ("calibration_valid_auc_difference_se", "paired SE of that difference"),
    ("calibration_given_label", "given-label view uses calibrated (share of seeds)"),
    ("posterior_auc_roc", "given-label AUC on test, raw"),
    ("posterior_auc_roc_calibrated", "given-label AUC on test, calibrated"),
    ("auc_given_label_chosen", "given-label AUC on test, as chosen on valid"),
    ("fkey_top1_top_given_label", "F key top-1 on test, top_given_label (raw)"),
    ("fkey_test_top_given_label_calibrated", "F key top-1 on test, top_given_label (calibrated)"),
    ("fkey_test_mode_calibrated", "F key top-1 on test, first_error_mode on calibrated"),
    ("fkey_test_model_rule", "F key top-1 on test, rule the model stored"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_option(parser)
    parser.add_argument("--datasets", default="processbench,delucionqa")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--gold", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=RESULTS / "reviewer_view.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    config = TrainConfig(device="cpu")
    # The data folder is this machine's: the record names it DIR.
    command = " ".join("DIR" if a == str(args.data) else a for a in sys.argv)
    payload: dict[str, Any] = {"machine": machine(), "command": command, "datasets": {}}
    for name in args.datasets.split(","):
        started = time.perf_counter()
        prepared = prepare_splits(read_split_dir(args.data / name), get_encoder(None), device="cpu")
        print(f"{name}: embedded in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        records = []
        for seed in seeds:
            record = run_one(
                prepared,
                "hybrid",
                seed=seed,
                gold_fraction=args.gold,
                config=config,
                inspect=inspect(prepared),
            )
            records.append(record)
            print(
                f"{name} seed {seed}: AUC marginal {record['auc_marginal']:.3f} view {record['auc_app_view']:.3f} "
                f"given {record['auc_given_label']:.3f}; F key {record.get('fkey_rule')} "
                f"{record.get('fkey_top1', float('nan')):.3f}",
                file=sys.stderr,
            )
        payload["datasets"][name] = records
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=float, allow_nan=True) + "\n")
    names = list(payload["datasets"])
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label in ROWS:
        cells = [fmt(stats([r.get(key, float("nan")) for r in payload["datasets"][n]])) for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for n in names:
        chosen = [r.get("fkey_rule") for r in payload["datasets"][n]]
        model_rule = [r.get("fkey_rule_model") for r in payload["datasets"][n]]
        fitted = [
            (r.get("calibration_fitted_on"), r.get("calibration_given_label")) for r in payload["datasets"][n]
        ]
        print(f"{n}: step calibration fitted on / given-label view calibrated, per seed {fitted}")
        print(
            f"{n}: rule chosen on valid per seed {chosen}; chosen by the model on its own gold {model_rule}"
        )


if __name__ == "__main__":
    main()
