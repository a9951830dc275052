"""Training that targets the first error (the ``hazard`` method) against today's hybrid, on first-error data.

Usage (DIR holds ``processbench/`` and ``delucionqa/`` with train/valid/test.jsonl; each run command takes
``--seeds``, ``--out FILE`` and a subset of its work, so it can be split over processes and merged):
    nice .venv/bin/python benchmarks/first_error_training.py valid --data DIR [--variants A,B] [--out F1]
    nice .venv/bin/python benchmarks/first_error_training.py choose --files F1[,F2...]
    nice .venv/bin/python benchmarks/first_error_training.py test --data DIR [--compare A,B] [--out G1]
    nice .venv/bin/python benchmarks/first_error_training.py report --files G1[,G2...]

``valid``: every variant of :data:`VARIANTS` (and hybrid, for reference) is trained on ProcessBench train with
10% random gold responses (train and valid alike, as ``fractal evaluate``) and scored on the VALID split only
(``quality_common.valid_as_test``): ProcessBench's official F1 (threshold tuned on valid's 10% gold, applied to all
of valid), the F key's first-error top-1 by the rule the model stored, AUC given the label. The variant with the
best mean over seeds of (official F1 + F key top-1) / 2 is chosen (``choose``); its name goes to
``benchmarks/results/first_error_valid.json``.

``test``: hybrid and the variant chosen on valid, each with 10% gold and with every gold label, on ProcessBench
test, and both at 10% on DelucionQA (AUC given the label: nothing may get worse there), seeds as given; test is
scored once per configuration; ``report`` prints markdown tables (mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_option import add_data_option  # noqa: E402
from quality_common import fmt, load, machine, save, setup, stats, valid_as_test  # noqa: E402

from fractal_core.evaluation.comparison import PreparedSplits, run_one  # noqa: E402
from fractal_core.fitting.config import LossWeights, TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import FractalModel  # noqa: E402
from fractal_core.fitting.first_error import rule_top1  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASE = TrainConfig(device="cpu")
VARIANTS: dict[str, tuple[str, TrainConfig]] = {
    "hybrid": ("hybrid", BASE),
    "hybrid(context)": ("hybrid", TrainConfig(device="cpu", scorer="context")),
    "supervised": ("supervised", BASE),
    "fractal": ("fractal", BASE),
    "hazard(rank=0)": ("hazard", TrainConfig(device="cpu", hazard_rank=0.0)),
    "hazard(rank=1)": ("hazard", BASE),
    "hazard(rank=3)": ("hazard", TrainConfig(device="cpu", hazard_rank=3.0)),
    "hazard(rank=1; no cosine)": ("hazard", TrainConfig(device="cpu", weights=LossWeights(cosine=0.0))),
    "hazard(rank=1; context)": ("hazard", TrainConfig(device="cpu", scorer="context")),
    "hazard(rank=1; stop=first_error)": (
        "hazard",
        TrainConfig(device="cpu", valid_metric="first_error"),
    ),
    "hazard(rank=0; stop=first_error)": (
        "hazard",
        TrainConfig(device="cpu", hazard_rank=0.0, valid_metric="first_error"),
    ),
    "hazard(rank=1; context; stop=first_error)": (
        "hazard",
        TrainConfig(device="cpu", scorer="context", valid_metric="first_error"),
    ),
}
"""name -> (method, config); ``hybrid`` (today's method), ``supervised`` (gold only) and ``fractal`` (``auto``,
which now tries hazard on first-error data) are references, not candidates. Names hold no comma
(the command line lists them comma-separated); ``stop=first_error``: early stopping on the exact first-error
likelihood of valid (``valid_metric="first_error"``) instead of the sentence AUC of its gold."""


def inspect(prepared: PreparedSplits):
    """The F key's top-1 on the scored split by the rule the model stored (what the app's F key uses)."""

    def measure(model: FractalModel) -> dict[str, Any]:
        test = prepared.test
        if prepared.aggregation != "max":
            return {}
        stored = model.first_error_rule_
        return {
            "fkey_top1_model_rule": rule_top1(
                model.predict_bags(test).double().cpu().numpy(),
                test.gold.cpu().numpy(),
                test.bag_index.cpu().numpy(),
                test.labels.double().cpu().numpy(),
                aggregation="max",
                rule=stored.rule,
                calibration=stored.calibration,
            )
        }

    return measure


def _run(prepared: PreparedSplits, variant: str, seed: int, gold: float) -> dict[str, Any]:
    method, config = VARIANTS[variant]
    record = run_one(
        prepared, method, seed=seed, gold_fraction=gold, config=config, inspect=inspect(prepared)
    )
    record["variant"] = variant
    print(
        f"  {variant} gold {gold:g} seed {seed}: F1 {record.get('first_error_f1', float('nan')):.3f} "
        f"F key ({record.get('fkey_rule_model')}) {record.get('fkey_top1_model_rule', float('nan')):.3f} "
        f"AUC|Y {record.get('posterior_auc_roc', float('nan')):.3f} ({record['train_cpu_seconds']:.0f} cpu s)",
        file=sys.stderr,
        flush=True,
    )
    return record


KEYS = [
    ("first_error_f1", "official F1"),
    ("first_error_f1_error_acc", "error accuracy"),
    ("first_error_f1_correct_acc", '"no error" accuracy'),
    ("fkey_top1_model_rule", "F key top-1 (the model's stored rule)"),
    ("fkey_top1", "F key top-1 (rule chosen on valid)"),
    ("fkey_top1_top_given_label", "top-1, top_given_label"),
    ("fkey_top1_first_error_mode", "top-1, first_error_mode"),
    ("posterior_auc_roc", "AUC given the label"),
    ("train_cpu_seconds", "fit CPU s"),
    ("train_seconds", "fit wall s"),
]


def table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: one column per configuration, one row per measure (mean ± sd over seeds)."""
    names = list(groups)
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in KEYS:
        cells = [fmt(stats([r.get(key, float("nan")) for r in groups[n]])) for n in names]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rules = {n: [r.get("fkey_rule_model") for r in groups[n]] for n in names}
    return "\n".join(lines) + f"\n\nF key rule stored per seed: {json.dumps(rules)}"


def _score(records: list[dict[str, Any]]) -> float:
    f1 = stats([r.get("first_error_f1", float("nan")) for r in records])["mean"]
    top1 = stats([r.get("fkey_top1_model_rule", float("nan")) for r in records])["mean"]
    return (f1 + top1) / 2


def _groups(paths: list[Path], dataset: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Records of one or more result files, grouped by configuration (runs split over processes merge here)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        runs = json.loads(path.read_text())["runs"]
        for name, records in (runs[dataset] if dataset else runs).items():
            groups.setdefault(name, []).extend(records)
    return groups


def run_valid(args: argparse.Namespace) -> None:
    prepared = valid_as_test(load("processbench", data=args.data))
    payload: dict[str, Any] = {"machine": machine(), "command": _command(args), "runs": {}}
    for variant in args.variants.split(","):
        payload["runs"][variant] = [_run(prepared, variant, seed, args.gold) for seed in args.seeds]
        save(args.out, payload)


def choose_variant(args: argparse.Namespace) -> None:
    """Merge valid result files, print the valid table and keep the best variant (module docstring)."""
    groups = _groups([RESULTS / name for name in args.files.split(",")])
    candidates = {v: _score(rs) for v, rs in groups.items() if VARIANTS[v][0] == "hazard"}
    chosen = max(candidates, key=lambda v: candidates[v])
    criterion = "mean over seeds of (official F1 + F key top-1) / 2 on valid"
    save("first_error_valid.json", {"criterion": criterion, "scores": candidates, "chosen": chosen})
    print(f"## ProcessBench VALID\n\n{table(groups)}\n")
    print(f"chosen on valid: {chosen} (scores {json.dumps(candidates)})")


def run_test(args: argparse.Namespace) -> None:
    if args.compare:
        chosen = ""
    else:
        chosen = args.variant or json.loads((RESULTS / "first_error_valid.json").read_text())["chosen"]
    payload: dict[str, Any] = {"machine": machine(), "command": _command(args), "chosen": chosen, "runs": {}}
    for dataset in args.datasets.split(","):
        golds = (args.gold, 1.0) if dataset == "processbench" and args.all_gold else (args.gold,)
        golds = tuple(g for g in golds if args.gold_only is None or g == args.gold_only)
        prepared = load(dataset, data=args.data)
        groups: dict[str, list[dict[str, Any]]] = payload["runs"].setdefault(dataset, {})
        for gold in golds:
            for variant in args.compare.split(",") if args.compare else ("hybrid", chosen):
                name = f"{variant} @ {'all' if gold >= 1 else f'{gold:.0%}'} gold"
                for seed in args.seeds:
                    groups.setdefault(name, []).append(_run(prepared, variant, seed, gold))
                    save(args.out, payload)


def report(args: argparse.Namespace) -> None:
    """Merge test result files and print one table per dataset."""
    paths = [RESULTS / name for name in args.files.split(",")]
    datasets = dict.fromkeys(d for p in paths for d in json.loads(p.read_text())["runs"])
    for dataset in datasets:
        groups = _groups([p for p in paths if dataset in json.loads(p.read_text())["runs"]], dataset)
        print(f"## {dataset} TEST\n\n{table(groups)}\n")


def _command(args: argparse.Namespace) -> str:
    return " ".join("DIR" if a == str(args.data) else a for a in sys.argv)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(required=True)
    for name, func in (("valid", run_valid), ("test", run_test)):
        p = sub.add_parser(name)
        add_data_option(p)
        p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
        p.add_argument("--gold", type=float, default=0.1)
        p.add_argument(
            "--out", default=f"first_error_{name}_runs.json", help="file name under benchmarks/results"
        )
        p.set_defaults(func=func)
        if name == "valid":
            p.add_argument("--variants", default=",".join(VARIANTS))
        else:
            p.add_argument(
                "--variant", choices=list(VARIANTS), default=None, help="default: the valid choice"
            )
            p.add_argument(
                "--compare", default="", help="variants to run (default: hybrid and the chosen one)"
            )
            p.add_argument("--datasets", default="processbench,delucionqa")
            p.add_argument("--all-gold", action=argparse.BooleanOptionalAction, default=True)
            p.add_argument("--gold-only", type=float, default=None, help="run only this gold fraction")
    for name, func in (("choose", choose_variant), ("report", report)):
        p = sub.add_parser(name)
        p.add_argument(
            "--files", required=True, help="comma-separated result file names under benchmarks/results"
        )
        p.set_defaults(func=func)
    args = parser.parse_args()
    setup()
    started = time.perf_counter()
    args.func(args)
    print(f"total {time.perf_counter() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
