"""`auto` (= `fractal`) against its own candidates and the baselines, and the proportion (LLP) view (issue 9).

Usage:
    .venv/bin/python benchmarks/auto_choice.py run --dataset processbench --split valid   # tuning view
    .venv/bin/python benchmarks/auto_choice.py run --dataset delucionqa --view mean --split test
    .venv/bin/python benchmarks/auto_choice.py table

Per seed (0, 1, 2), without gold (every gold label hidden, train and valid): naive, prior-only (the cosine target
calibrated to the response labels), BagLoss, BagLoss + cosine prior (the tuned default, = the former `fractal`
without gold), and `auto`, which fits its candidates and keeps the best by the validation responses' exact bag
likelihood. With `--gold 0.1`, also hybrid and `auto` with 10% random gold bags (auto then chooses by cross-fitted
gold AUC). On the `mean` view (the share of a response's sentences at level >= 1 as its label), BagLoss and
priors also run with the other proportion loss (squared error of the proportion vs exact Poisson-binomial count NLL).
`--split valid` scores the VALID split (for choosing defaults); `--split test` is the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_common import (  # noqa: E402
    RESULTS,
    fmt,
    load,
    run_cli,
    run_meta,
    save,
    setup,
    stats,
    valid_as_test,
)

from fractal_core.config import TrainConfig  # noqa: E402
from fractal_core.evaluation import run_one  # noqa: E402

SEEDS = (0, 1, 2)
DIGITS = {
    "posterior_auc_roc": 4,
    "train_seconds": 1,
}  # given-Y differences on the mean view sit in the 4th digit
KEYS = ("posterior_auc_roc", "instance_auc_roc", "first_error_acc_given_y", "bag_auc_roc", "train_seconds")


def runs_for(view: str, gold: float) -> list[tuple[str, str, TrainConfig, float]]:
    base = TrainConfig(device="cpu")
    out = [
        ("naive", "naive", base, 0.0),
        ("prior_only", "prior_only", base, 0.0),
        ("bagloss", "bagloss", base, 0.0),
        ("priors", "priors", base, 0.0),
        ("auto", "auto", base, 0.0),
    ]
    if view == "mean":
        other = "count" if base.proportion_loss == "mse" else "mse"
        alt = replace(base, proportion_loss=other)  # type: ignore[arg-type]
        out += [(f"{m}[{other}]", m, alt, 0.0) for m in ("bagloss", "priors")]
    if gold > 0:
        out += [(f"hybrid@{gold:g}", "hybrid", base, gold), (f"auto@{gold:g}", "auto", base, gold)]
    return out


def cmd_run(args: argparse.Namespace) -> None:
    setup()
    started = time.perf_counter()
    prepared = load(args.dataset, args.view)
    if args.split == "valid":
        prepared = valid_as_test(prepared)
    out = f"auto_{args.dataset}_{args.view}_{args.split}.json"
    runs = runs_for(args.view, args.gold)
    meta = run_meta(args, prepared, seeds=SEEDS, split_scored=args.split, gold=args.gold)
    records: list[dict[str, Any]] = []
    for seed in SEEDS:
        for name, method, config, gold in runs:
            record = run_one(prepared, method, seed=seed, gold_fraction=gold, config=config)
            record.update(row=name, proportion_loss=config.proportion_loss)
            records.append(record)
            chosen = record.get("selection", {}).get("chosen", "")
            print(
                f"seed {seed} {name:16s} given Y {record['posterior_auc_roc']:.4f} "
                f"AUC {record['instance_auc_roc']:.4f} {record['train_seconds']:6.1f}s {chosen}",
                flush=True,
            )
            save(out, {**meta, "records": records})
    meta["seconds"] = time.perf_counter() - started
    save(out, {**meta, "records": records})


def cmd_table(_: argparse.Namespace) -> None:
    for path in sorted(RESULTS.glob("auto_*.json")):
        data = json.loads(path.read_text())
        recs = data["records"]
        print(f"\n### {path.stem} ({data['split_scored']} split, seeds {data['seeds']})\n")
        print(
            "| method | AUC given Y | sentence AUC | first-error acc given Y | bag AUC | fit s | auto chose |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in dict.fromkeys(r["row"] for r in recs):
            runs = [r for r in recs if r["row"] == row]
            cells = [fmt(stats([r.get(k, float("nan")) for r in runs]), DIGITS.get(k, 3)) for k in KEYS]
            chose = Counter(r["selection"]["chosen"] for r in runs if "selection" in r)
            picks = ", ".join(f"{k} ×{v}" for k, v in chose.most_common())
            print(f"| {row} | " + " | ".join(cells) + f" | {picks} |")


def main() -> None:
    run_cli(
        __doc__,
        cmd_run,
        table=cmd_table,
        run_options={
            "--split": {"choices": ("valid", "test"), "default": "valid"},
            "--gold": {
                "type": float,
                "default": 0.0,
                "help": "also hybrid and auto with this random gold share",
            },
        },
    )


if __name__ == "__main__":
    main()
