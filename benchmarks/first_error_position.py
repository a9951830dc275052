"""Does a step's position help point at the first error? The F key's rules against position-aware hazards.

The frozen MLP ``hybrid`` is trained on the whole ProcessBench train split with a seeded 10% of its gold step
labels (early stopping on the first 150 valid solutions, as ``benchmarks/one_pass_scorer.py``). On its step
scores, each rule is fitted on the whole VALID split and measured once on the whole TEST split:

- the F key's rules (``FIRST_ERROR_RULES``) and the one ``choose_first_error_rule`` picks on valid;
- a hazard with the step's position: logistic regression of the valid gold steps (before the first error: 0, the
  first error: 1) on ``[logit(score), log(1 + position)]`` (``pos``), plus ``position / steps`` (``pos2``), or on
  the position alone (``posonly``); the F key takes the mode of the first-error distribution of those hazards
  (``_mode``) or the top hazard given the label (``_top``);
- ProcessBench's official F1 with the threshold tuned on valid, of the raw scores and of each hazard.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/first_error_position.py --data DATA/processbench --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from one_pass_scorer import with_gold_share  # noqa: E402

from fractal_core.data.io import read_records  # noqa: E402
from fractal_core.data.records import ResponseRecord  # noqa: E402
from fractal_core.evaluation.metrics import first_error_f1, tune_first_error_threshold  # noqa: E402
from fractal_core.experimental.one_pass_windows import record_bags  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import FractalModel  # noqa: E402
from fractal_core.fitting.first_error import choose_first_error_rule, default_rule, rule_top1  # noqa: E402
from fractal_core.mil.reviewer import FIRST_ERROR_RULES, fit_platt  # noqa: E402
from fractal_core.mil.reviewer.evidence import positions  # noqa: E402

FEATURES = ("pos", "pos2", "posonly")


def split_arrays(records: list[ResponseRecord], scores: list[np.ndarray]) -> dict[str, np.ndarray]:
    bags = record_bags(records)
    index = bags.bag_index.numpy()
    position, sizes = positions(index, bags.n_bags)
    return {
        "score": np.concatenate(scores).astype(np.float64),
        "gold": bags.gold.numpy(),
        "index": index,
        "labels": bags.labels.double().numpy(),
        "position": position.astype(np.float64),
        "steps": sizes[index].astype(np.float64),
    }


def features(a: dict[str, np.ndarray], kind: str) -> np.ndarray:
    q = np.clip(a["score"], 1e-6, 1 - 1e-6)
    logit, where = np.log(q) - np.log1p(-q), np.log1p(a["position"])
    columns = {
        "pos": [logit, where],
        "pos2": [logit, where, a["position"] / a["steps"]],
        "posonly": [where],
    }[kind]
    return np.stack([*columns, np.ones_like(q)], 1)


def fit_hazard(x: np.ndarray, gold: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Ridge logistic regression of the labelled steps (gold >= 0) on ``x``, by Newton's method."""
    keep = gold >= 0
    xs, y = x[keep], (gold[keep] >= 1).astype(np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(100):
        mu = 1 / (1 + np.exp(-xs @ w))
        hess = (xs * (mu * (1 - mu))[:, None]).T @ xs + l2 * len(y) * np.eye(len(w))
        w -= np.linalg.solve(hess, xs.T @ (mu - y) + l2 * len(y) * w)
    return w


def figures(valid: dict[str, np.ndarray], test: dict[str, np.ndarray], method: str) -> dict[str, float]:
    v = (valid["score"], valid["gold"], valid["index"], valid["labels"])
    t = (test["score"], test["gold"], test["index"], test["labels"])
    n_valid, n_test = len(valid["labels"]), len(test["labels"])
    choice = choose_first_error_rule(*v, aggregation="max", default=default_rule(method))
    platt = fit_platt(valid["score"], valid["gold"])
    out = {"chosen": rule_top1(*t, aggregation="max", rule=choice.rule, calibration=choice.calibration)}
    for rule in FIRST_ERROR_RULES:
        out[rule] = rule_top1(*t, aggregation="max", rule=rule, calibration=platt)
    threshold = tune_first_error_threshold(valid["gold"], valid["score"], valid["index"], n_valid)
    out["F1 raw"] = first_error_f1(test["gold"], test["score"], test["index"], n_test, threshold=threshold)[
        "f1"
    ]
    for kind in FEATURES:
        x_valid = features(valid, kind)
        w = fit_hazard(x_valid, valid["gold"])
        h_valid = 1 / (1 + np.exp(-x_valid @ w))
        h_test = 1 / (1 + np.exp(-features(test, kind) @ w))
        hazard = (h_test, test["gold"], test["index"], test["labels"])
        out[f"{kind}_mode"] = rule_top1(*hazard, aggregation="max", rule="first_error_mode")
        out[f"{kind}_top"] = rule_top1(*hazard, aggregation="max", rule="top_given_label")
        threshold = tune_first_error_threshold(valid["gold"], h_valid, valid["index"], n_valid)
        out[f"F1 {kind}"] = first_error_f1(test["gold"], h_test, test["index"], n_test, threshold=threshold)[
            "f1"
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ProcessBench directory")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--method", default="hybrid")
    args = parser.parse_args()
    torch.set_num_threads(2)
    train = read_records(args.data / "train.jsonl")
    valid = read_records(args.data / "valid.jsonl")
    test = read_records(args.data / "test.jsonl")
    rows: dict[str, list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        fit_on = with_gold_share(train, 0.1, seed)
        model = FractalModel(args.method, config=TrainConfig(device="cpu"), seed=seed).fit(
            fit_on, valid=valid[:150]
        )
        got = figures(
            split_arrays(valid, model.predict(valid)), split_arrays(test, model.predict(test)), args.method
        )
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in got.items()), flush=True)
        for k, value in got.items():
            rows.setdefault(k, []).append(value)
    print(f"# {args.method}, 10% gold, whole valid ({len(valid)}) / whole test ({len(test)}), mean +- sd:")
    for k, values in rows.items():
        spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
        print(f"{k}: {np.mean(values):.3f} +- {spread:.3f}")


if __name__ == "__main__":
    main()
