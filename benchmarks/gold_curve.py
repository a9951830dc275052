"""Gold-budget curve: hybrid at gold fractions 0, 0.02, 0.05, 0.1, 0.2 and Supervised at 1.0.

Usage:
    .venv/bin/python benchmarks/gold_curve.py run --dataset processbench     # -> results/gold_curve_*.json
    .venv/bin/python benchmarks/gold_curve.py plot                           # -> docs/gold_budget_curve.png

Fraction 0 is `fractal` without gold (under the tuned defaults: `priors`, PsLab off). Gold bags are drawn at random (the paper's protocol,
`choose_gold_bags`); seeds 0, 1, 2; TEST split; library defaults. Test sentence AUC-ROC, bag-blind and given the
response label (`bag_posterior`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_common import RESULTS, ROOT, load, run_cli, run_meta, save, setup, stats  # noqa: E402

from fractal_core.evaluation.comparison import run_one  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402

SEEDS = (0, 1, 2)
FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2)


def cmd_run(args: argparse.Namespace) -> None:
    setup()
    started = time.perf_counter()
    prepared = load(args.dataset, args.view, args.data)
    out = f"gold_curve_{args.dataset}_{args.view}.json"
    meta = run_meta(
        args, prepared, config=TrainConfig(device="cpu").to_dict(), seeds=SEEDS, split_scored="test"
    )
    records: list[dict[str, Any]] = []
    config = TrainConfig(device="cpu")
    for seed in SEEDS:
        for fraction in (*FRACTIONS, 1.0):
            method = "supervised" if fraction == 1.0 else ("fractal" if fraction == 0 else "hybrid")
            record = run_one(prepared, method, seed=seed, gold_fraction=fraction, config=config)
            records.append(record)
            print(
                f"seed {seed} {method:10s} gold {fraction:<4g} AUC {record['instance_auc_roc']:.4f}",
                flush=True,
            )
            save(out, {**meta, "records": records})
    meta["seconds"] = time.perf_counter() - started
    save(out, {**meta, "records": records})


def curve(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    points = sorted({r["gold_fraction"] for r in data["records"]})
    rows = {}
    for f in points:
        runs = [r for r in data["records"] if r["gold_fraction"] == f]
        rows[f] = {k: stats([r[k] for r in runs]) for k in ("instance_auc_roc", "posterior_auc_roc")}
    return {"data": data, "rows": rows}


def cmd_plot(_: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(RESULTS.glob("gold_curve_*.json"))
    fig, ax = plt.subplots(figsize=(7, 5))
    for path in files:
        c = curve(path)
        name = path.stem.removeprefix("gold_curve_")
        xs = [f for f in c["rows"] if f < 1.0]
        for key, style in (("instance_auc_roc", "-o"), ("posterior_auc_roc", "--s")):
            ys = [c["rows"][f][key]["mean"] for f in xs]
            es = [c["rows"][f][key]["std"] for f in xs]
            label = f"{name}, hybrid" + (" (given response label)" if key == "posterior_auc_roc" else "")
            line = ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=label)
            sup = c["rows"].get(1.0)
            if sup is not None:
                ax.axhline(sup[key]["mean"], color=line[0].get_color(), lw=0.8, ls=":")
        print(f"\n{name}: gold fraction -> test sentence AUC-ROC (mean ± std, 3 seeds); given Y")
        for f, row in c["rows"].items():
            a, p = row["instance_auc_roc"], row["posterior_auc_roc"]
            what = "supervised" if f == 1.0 else ("fractal, no gold" if f == 0 else "hybrid")
            print(f"| {f:g} | {what} | {a['mean']:.3f} ± {a['std']:.3f} | {p['mean']:.3f} ± {p['std']:.3f} |")
    ax.set_xlabel("gold fraction of training responses (random selection)")
    ax.set_ylabel("test sentence AUC-ROC")
    ax.set_title("FRACTAL hybrid vs gold budget (dotted: Supervised, all gold)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    target = ROOT / "docs" / "gold_budget_curve.png"
    target.parent.mkdir(exist_ok=True)
    fig.savefig(target, dpi=120)
    print(f"\n-> {target}")


def main() -> None:
    run_cli(__doc__, cmd_run, plot=cmd_plot)


if __name__ == "__main__":
    main()
