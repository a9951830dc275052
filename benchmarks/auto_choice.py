"""`auto` (= `fractal`) against its own candidates and the baselines, and the proportion (LLP) view.

Usage:
    .venv/bin/python benchmarks/auto_choice.py run --dataset processbench --split valid   # tuning view
    .venv/bin/python benchmarks/auto_choice.py run --dataset delucionqa --view mean --split test
    .venv/bin/python benchmarks/auto_choice.py table
    .venv/bin/python benchmarks/auto_choice.py run --dataset processbench --split test --gold 0.1 \
        --rows bagloss,hybrid@0.1,auto@0.1   # writes auto_processbench_native_test_gold0.1.json
    .venv/bin/python benchmarks/auto_choice.py gold

Per seed (0, 1, 2), without gold (every gold label hidden, train and valid): naive, prior-only (the cosine target
calibrated to the response labels), BagLoss, BagLoss + cosine prior (the tuned default, = the former `fractal`
without gold), and `auto`, which fits its candidates and keeps the best by the validation responses' exact bag
likelihood. With `--gold 0.1`, also hybrid and `auto` with 10% random gold bags (auto then chooses by cross-fitted
gold AUC given the label, with the same one-standard-error rule), written to a file of their own (`..._gold0.1`);
`gold` tabulates those files: auto under the rule against the plain best gold AUC (the rule used with gold
before, replayed on the same fits from the stored figures), hybrid and BagLoss. On the `mean` view (the share of a response's sentences at level >= 1 as its label), BagLoss and
priors also run with the other proportion loss (squared error of the proportion vs exact Poisson-binomial count NLL).
`--split valid` scores the VALID split (for choosing defaults); `--split test` is the report.

Every `auto` record also keeps each candidate's figures on the scored split and its held-out log-likelihood per
judged response, so `rules` can re-run the choice (`fractal_core.fitting.auto_choice.choose`) under other settings of the rule
(standard-error multiple, simplicity order, candidate set) without refitting: it prints, per result file, what
each setting would have scored given Y (tune on the `valid` files only).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
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

from fractal_core.evaluation.comparison import run_one  # noqa: E402
from fractal_core.fitting import registry  # noqa: E402
from fractal_core.fitting.auto_choice import choose  # noqa: E402
from fractal_core.fitting.bags import BagSet  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import FractalModel  # noqa: E402

SEEDS = (0, 1, 2)
DIGITS = {
    "posterior_auc_roc": 4,
    "train_seconds": 1,
    "train_cpu_seconds": 1,
}  # given-Y differences on the mean view sit in the 4th digit
KEYS = (
    "posterior_auc_roc",
    "instance_auc_roc",
    "first_error_acc_given_y",
    "bag_auc_roc",
    "train_seconds",
    "train_cpu_seconds",
)


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


def candidate_figures(scored: BagSet) -> Any:
    """An ``inspect`` hook for ``run_one``: each of auto's candidates scored on ``scored``, with its per-response
    held-out log-likelihoods (what the choice saw)."""

    def inspect(model: FractalModel) -> dict[str, Any]:
        out = []
        for c in getattr(model, "candidates_", []):
            alone = copy.copy(model)  # the same fitted model, answering with this candidate's scorer
            alone.resolved_method_, alone.scorer_, alone.calibration_ = c.method, c.scorer, c.calibration
            metrics = alone.evaluate_bags(scored)
            out.append(
                {
                    "name": c.name,
                    "method": c.method,
                    **{k: metrics[k] for k in KEYS if k in metrics},
                    "judged": [round(float(v), 6) for v in c.judged],
                }
            )
        return {"candidates": out} if out else {}

    return inspect


def cmd_run(args: argparse.Namespace) -> None:
    setup()
    started = time.perf_counter()
    prepared = load(args.dataset, args.view, args.data)
    if args.split == "valid":
        prepared = valid_as_test(prepared)
    out = (
        f"auto_{args.dataset}_{args.view}_{args.split}"
        + (f"_gold{args.gold:g}" if args.gold else "")
        + ".json"
    )
    runs = runs_for(args.view, args.gold)
    if args.rows:
        runs = [r for r in runs if r[0] in args.rows.split(",")]
    meta = run_meta(args, prepared, seeds=SEEDS, split_scored=args.split, gold=args.gold)
    records: list[dict[str, Any]] = []
    for seed in SEEDS:
        for name, method, config, gold in runs:
            record = run_one(
                prepared,
                method,
                seed=seed,
                gold_fraction=gold,
                config=config,
                inspect=candidate_figures(prepared.test) if method == "auto" else None,
            )
            record.update(row=name, proportion_loss=config.proportion_loss)
            records.append(record)
            chosen = record.get("selection", {}).get("chosen", "")
            print(
                f"seed {seed} {name:16s} given Y {record['posterior_auc_roc']:.4f} "
                f"AUC {record['instance_auc_roc']:.4f} {record['train_seconds']:6.1f}s "
                f"{record['train_cpu_seconds']:6.1f}s CPU {chosen}",
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
            "| method | AUC given Y | sentence AUC | first-error acc given Y | bag AUC | fit s | fit CPU s "
            "| auto chose |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in dict.fromkeys(r["row"] for r in recs):
            runs = [r for r in recs if r["row"] == row]
            cells = [fmt(stats([r.get(k, float("nan")) for r in runs]), DIGITS.get(k, 3)) for k in KEYS]
            chose = Counter(r["selection"]["chosen"] for r in runs if "selection" in r)
            picks = ", ".join(f"{k} ×{v}" for k, v in chose.most_common())
            print(f"| {row} | " + " | ".join(cells) + f" | {picks} |")


# Settings of the rule tried offline: (label, SE multiple, simplicity order, methods left out).
ORDERS = {
    "bagloss first": registry.AUTO_SIMPLICITY,
    "prior-only first": ("prior_only", "bagloss", "priors", "hybrid"),
}
RULES = [
    ("argmax (previous rule)", 0.0, "bagloss first", ()),
    *[(f"{k:g} SE, {o}", k, o, ()) for o in ORDERS for k in (0.5, 1.0, 1.5, 2.0)],
    ("1 SE, no PsLab", 1.0, "bagloss first", ("pslab",)),
    ("1 SE, BagLoss + priors(0.1) + prior-only", 1.0, "bagloss first", ("pslab", "priors(cosine=0.3)")),
    ("1 SE, BagLoss + prior-only", 1.0, "bagloss first", ("pslab", "priors")),
]


def replay(record: dict[str, Any], se: float, order: str, drop: tuple[str, ...]) -> dict[str, Any]:
    """The candidate a rule setting would have chosen in one auto record (candidates whose name or method is
    in ``drop`` left out), with its figures and the fit seconds of the candidates kept."""
    rows = [dict(r) for r in record["selection"]["candidates"] if not {r["name"], r["method"]} & set(drop)]
    figures = {c["name"]: c for c in record["candidates"]}
    per_bag = np.array([figures[r["name"]]["judged"] for r in rows], dtype=np.float64)
    pick = rows[choose(rows, per_bag, se_multiple=se, order=ORDERS[order])]
    # PsLab's seconds include the priors fit it starts from: count only its own stage when both are kept.
    kept = {r["name"]: r["seconds"] for r in rows}
    first_prior = next((r["name"] for r in record["selection"]["candidates"] if r["method"] == "priors"), "")
    if "pslab" in kept and first_prior in kept:
        kept["pslab"] -= kept[first_prior]
    return {**figures[pick["name"]], "seconds": sum(kept.values())}


def cmd_gold(_: argparse.Namespace) -> None:
    """auto with gold under the one-standard-error rule and under the plain best gold AUC, per result file."""
    for path in sorted(RESULTS.glob("auto_*_gold*.json")):
        data = json.loads(path.read_text())
        recs = data["records"]
        print(f"\n### {path.stem} ({data['split_scored']} split, seeds {data['seeds']})\n")
        print("| row | AUC given Y | chosen per seed | weak evidence per seed |")
        print("|---|---|---|---|")
        for row in dict.fromkeys(r["row"] for r in recs):
            runs = sorted((r for r in recs if r["row"] == row), key=lambda r: r["seed"])
            if not row.startswith("auto"):
                print(f"| {row} | {fmt(stats([r['posterior_auc_roc'] for r in runs]), 4)} | | |")
                continue
            for label, se in (("one-standard-error rule", None), ("plain best (before)", 0.0)):
                picks = []
                for r in runs:
                    name = r["selection"]["chosen"]  # the run's own choice, made by the rule
                    if se is not None:  # the plain best on the same fits: the stored scores' argmax
                        rows = [dict(c) for c in r["selection"]["candidates"]]
                        name = rows[choose(rows, None, se_multiple=se)]["name"]
                    picks.append(next(c for c in r["candidates"] if c["name"] == name) | {"name": name})
                given = stats([p["posterior_auc_roc"] for p in picks])
                chose = ", ".join(f"{r['seed']}: {p['name']}" for r, p in zip(runs, picks, strict=True))
                weak = ", ".join(
                    f"{r['seed']}: {'yes' if r['selection'].get('weak_evidence') else 'no'}" for r in runs
                )
                print(f"| {row}, {label} | {fmt(given, 4)} | {chose} | {weak if se is None else ''} |")
        for r in (r for r in recs if r["row"].startswith("auto")):
            print(f"- seed {r['seed']} weak evidence: {r['selection'].get('weak_reason') or 'no'}")


def cmd_rules(_: argparse.Namespace) -> None:
    for path in sorted(RESULTS.glob("auto_*.json")):
        data = json.loads(path.read_text())
        autos = [r for r in data["records"] if r["row"] == "auto" and "candidates" in r]
        if not autos:
            continue
        prior = stats([r["posterior_auc_roc"] for r in data["records"] if r["row"] == "prior_only"])["mean"]
        bagloss = stats(
            [next(c for c in r["candidates"] if c["name"] == "bagloss")["posterior_auc_roc"] for r in autos]
        )
        floor = max(bagloss["mean"], prior) - 0.005
        print(f"\n### {path.stem} ({data['split_scored']} split, seeds {[r['seed'] for r in autos]})")
        print(
            f"target: >= max(BagLoss {bagloss['mean']:.4f}, prior-only {prior:.4f}) - 0.005 = {floor:.4f}\n"
        )
        print("| rule | AUC given Y | target | chose | candidate fit s |")
        print("|---|---|---|---|---|")
        for label, se, order, drop in RULES:
            picks = [replay(r, se, order, drop) for r in autos]
            given = stats([p["posterior_auc_roc"] for p in picks])
            chose = Counter(p["name"] for p in picks)
            seconds = stats([p["seconds"] for p in picks])
            met = "met" if given["mean"] >= floor else "MISSED"
            names = ", ".join(f"{k} ×{v}" for k, v in chose.most_common())
            print(f"| {label} | {fmt(given, 4)} | {met} | {names} | {seconds['mean']:.1f} |")


def main() -> None:
    run_cli(
        __doc__,
        cmd_run,
        table=cmd_table,
        rules=cmd_rules,
        gold=cmd_gold,
        run_options={
            "--split": {"choices": ("valid", "test"), "default": "valid"},
            "--rows": {"default": "", "help": "comma-separated rows to run (default: all)"},
            "--gold": {
                "type": float,
                "default": 0.0,
                "help": "also hybrid and auto with this random gold share",
            },
        },
    )


if __name__ == "__main__":
    main()
