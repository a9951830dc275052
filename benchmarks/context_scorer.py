"""The contextual instance scorer against the MLP, same methods, same seeds, same run.

Usage:
    .venv/bin/python benchmarks/context_scorer.py run --dataset processbench --split valid   # tuning view
    .venv/bin/python benchmarks/context_scorer.py run --dataset processbench --split test --seeds 0,1,2
    .venv/bin/python benchmarks/context_scorer.py table                                      # markdown

Each row is one (method, scorer) pair through `fractal_core.evaluation.comparison.run_one` (hybrid with 10% random gold
bags, as `fractal evaluate`). Scorers: `mlp` (one sentence at a time), `context` with the direction read from
the data (`auto`), and forced `causal` / `bidirectional`. Reported: sentence AUC (bag-blind), AUC given the
response label, and for max data the first error read two ways (marginal argmax; the first-error distribution
given Y, P(first = i | Y) ∝ p_i · prod_{j<i} (1 - p_j)), top-1 and top-3, and the training seconds. Every
run uses `calibrate=True` (a 2-parameter Platt map of the logit fitted to the valid responses' labels), which the
products given Y need. `--split valid` scores the valid split (models still early-stop on valid: that is the tuning view, optimistic by
construction); only `--split test` figures are reported as results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_common import RESULTS, fmt, load, run_cli, run_meta, save, setup, stats, valid_as_test  # noqa: E402

from fractal_core.evaluation.comparison import run_one  # noqa: E402
from fractal_core.fitting import methods  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402

GOLD = 0.1
SCORERS: dict[str, dict[str, Any]] = {
    "mlp": {"scorer": "mlp"},
    "context": {"scorer": "context", "context_direction": "auto"},
    "causal": {"scorer": "context", "context_direction": "causal"},
    "bidirectional": {"scorer": "context", "context_direction": "bidirectional"},
}
# Tuning variants of the context scorer's features (not config fields: the chosen one is the library's).
LEAN = {"causal-lean": "causal", "bidirectional-lean": "bidirectional", "context-lean": "context"}
_products = [True]


def _spec_with_products(config: TrainConfig, *data: Any) -> dict[str, object]:
    spec = _library_spec(config, *data)
    if spec["kind"] == "context":
        spec["products"] = _products[0]
    return spec


_library_spec = methods.scorer_spec
methods.scorer_spec = _spec_with_products
KEYS = (
    ("instance_auc_roc", "sentence AUC"),
    ("posterior_auc_roc", "AUC given Y"),
    ("first_error_acc", "first error (argmax)"),
    ("first_error_acc_given_y", "first error given Y"),
    ("first_error_top3_given_y", "top-3 given Y"),
    ("train_seconds", "fit s"),
)


def cmd_run(args: argparse.Namespace) -> None:
    setup()
    started = time.perf_counter()
    prepared = load(args.dataset, args.view, args.data)
    if args.split == "valid":
        prepared = valid_as_test(prepared)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    scorers = args.scorers.split(",")
    out = f"context_{args.dataset}_{args.view}_{args.split}{args.tag}.json"
    base = TrainConfig(device="cpu", calibrate=True)  # both scorers Platt-scaled on valid (see BENCHMARKS.md)
    meta = run_meta(
        args, prepared, seeds=seeds, gold_fraction=GOLD, split_scored=args.split, config=base.to_dict()
    )
    records: list[dict[str, Any]] = []
    for seed in seeds:
        for method in methods:
            for scorer in scorers:
                _products[0] = scorer not in LEAN
                config = replace(base, **SCORERS[LEAN.get(scorer, scorer)])
                record = run_one(prepared, method, seed=seed, gold_fraction=GOLD, config=config)
                record.update(scorer=scorer)
                records.append(record)
                print(
                    f"seed {seed} {method:10s} {scorer:13s} AUC {record['instance_auc_roc']:.4f} "
                    f"|Y {record['posterior_auc_roc']:.4f} first|Y {record.get('first_error_acc_given_y', float('nan')):.4f} "
                    f"({record['train_seconds']:.1f}s)",
                    flush=True,
                )
                save(out, {**meta, "records": records})
    meta["seconds"] = time.perf_counter() - started
    save(out, {**meta, "records": records})


def table(paths: list[Path]) -> str:
    """One markdown table over the records of ``paths`` (runs of one dataset/view/split, e.g. seeds run apart)."""
    files = [json.loads(path.read_text()) for path in paths]
    records = [r for data in files for r in data["records"]]
    keys = [(k, c) for k, c in KEYS if any(k in r for r in records)]
    lines = ["| method | scorer | " + " | ".join(c for _, c in keys) + " |", "|---" * (len(keys) + 2) + "|"]
    rows = list(dict.fromkeys((r["method"], r["scorer"]) for r in records))
    for method, scorer in rows:
        runs = [r for r in records if r["method"] == method and r["scorer"] == scorer]
        cells = [
            fmt(stats([r.get(k, float("nan")) for r in runs]), 1 if k == "train_seconds" else 3)
            for k, _ in keys
        ]
        seeds = sorted({r["seed"] for r in runs})
        lines.append(f"| {method} | {scorer} | " + " | ".join(cells) + f" |  seeds {seeds}")
    lines.append("")
    for data in files:
        m = data["machine"]
        lines.append(
            f"{data['dataset']} (`{data['view']}`), {data['split_scored']} split, seeds {data['seeds']}; "
            f"{m['date']}, {m['cpu']}, {m['nproc']} cores, load {m['loadavg'][0]:.1f}; encoder "
            f"`{data['encoder_id']}`; {data.get('seconds', float('nan')):.0f} s for all runs."
        )
    return "\n".join(lines)


def cmd_table(_: argparse.Namespace) -> None:
    groups: dict[str, list[Path]] = {}
    for path in sorted(RESULTS.glob("context_*.json")):
        data = json.loads(path.read_text())
        groups.setdefault(f"{data['dataset']} {data['view']} {data['split_scored']}", []).append(path)
    for name, paths in groups.items():
        print(f"\n#### {name} ({', '.join(p.name for p in paths)})\n")
        print(table(paths))


if __name__ == "__main__":
    run_cli(
        __doc__,
        cmd_run,
        run_options={
            "--split": {"default": "valid", "choices": ("valid", "test")},
            "--seeds": {"default": "0,1"},
            "--methods": {"default": "priors,hybrid,supervised"},
            "--scorers": {"default": "mlp,causal,bidirectional"},
            "--tag": {"default": ""},
        },
        table=cmd_table,
    )
