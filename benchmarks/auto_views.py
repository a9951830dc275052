"""`auto` on every view derivable from the shared data, against its parts: where the prior matters and where not.

Usage:
    .venv/bin/python benchmarks/auto_views.py run --dataset processbench --split valid \
        --views native,nocontext,n50,n100,n200          # tuning: scores the VALID split
    .venv/bin/python benchmarks/auto_views.py run --dataset delucionqa --split test \
        --views native,binary,mean,nocontext,n50,n100,n200
    .venv/bin/python benchmarks/auto_views.py run --dataset processbench --split test --views native --gold 0.1
    .venv/bin/python benchmarks/auto_views.py table     # every result file: rows per view
    .venv/bin/python benchmarks/auto_views.py rules     # auto's choice replayed under other rules (valid files)

Views (each written to `auto_views_<dataset>_<view>_<split>[_gold<g>].json`):

- `native`, `binary`, `mean`: the label views of `auto_choice.py` (`binary`: ordinal levels >= 1 positive;
  `mean`: the share of a response's sentences at level >= 1, every sentence labelled).
- `nocontext`: every response's context replaced by the empty string's embedding (what a user without questions
  or retrieved passages has): the cosine prior then carries almost nothing and learning must win.
- `n50`, `n100`, `n200`: only that many training responses, drawn per seed from the train split, of which the
  library's holdout share (`TrainConfig.valid_fraction`) is the held-out set that early-stops and judges; the
  scored split is the full valid (tuning) or test split. BagLoss overfits here and the prior can win.

Rows per seed (0, 1, 2), every gold label hidden: the raw cosine prior (`prior_only`), BagLoss, BagLoss + cosine
prior (`priors`, the former default), and `auto` with each of its candidates scored on the same split (the
calibrated prior, BagLoss, the blend of the two, the warm-started priors candidate) and its per-response held-out
log-likelihoods, so `rules` can replay the choice without refitting. With `--gold G`: hybrid and `auto` with a
random share G of gold responses (train and held-out set) instead.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from auto_choice import candidate_figures  # noqa: E402
from quality_common import RESULTS, fmt, load, run_cli, run_meta, save, setup, stats, valid_as_test  # noqa: E402

from fractal_core.embedding.encoder import get_encoder  # noqa: E402
from fractal_core.evaluation.comparison import PreparedSplits, run_one  # noqa: E402
from fractal_core.fitting import auto_plan, registry  # noqa: E402
from fractal_core.fitting.auto_choice import choose  # noqa: E402
from fractal_core.fitting.bags import BagSet  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import holdout_split  # noqa: E402

SEEDS = (0, 1, 2)
LABEL_VIEWS = ("native", "binary", "mean")
SMALL = {"n50": 50, "n100": 100, "n200": 200}
VIEWS = (*LABEL_VIEWS, "nocontext", *SMALL)
KEYS = ("posterior_auc_roc", "instance_auc_roc", "train_seconds", "train_cpu_seconds")


def without_context(bags: BagSet, empty: torch.Tensor) -> BagSet:
    """``bags`` with every context window replaced by ``empty`` (d,), the embedding of the empty string."""
    ctx = empty.to(bags.ctx_emb.dtype).expand(bags.ctx_emb.shape[0], -1).clone()
    return replace(bags, ctx_emb=ctx, cos_target=None)


def small_train(prepared: PreparedSplits, n: int, seed: int) -> PreparedSplits:
    """``n`` training responses drawn by ``seed``; the library's holdout share of them is the held-out set."""
    order = torch.randperm(prepared.train.n_bags, generator=torch.Generator().manual_seed(seed + 7919))[:n]
    drawn = prepared.train.select(order.sort().values)
    train_ids, valid_ids = holdout_split(n, TrainConfig().valid_fraction, seed)
    assert valid_ids is not None
    return replace(prepared, train=drawn.select(train_ids), valid=drawn.select(valid_ids))


def view_of(base: PreparedSplits, view: str, seed: int, empty: torch.Tensor | None) -> PreparedSplits:
    if view == "nocontext":
        assert empty is not None and base.valid is not None
        gone = [without_context(b, empty) for b in (base.train, base.valid, base.test)]
        return replace(base, train=gone[0], valid=gone[1], test=gone[2])
    if view in SMALL:
        return small_train(base, SMALL[view], seed)
    return base


def runs_for(gold: float) -> list[tuple[str, str, float]]:
    if gold > 0:
        return [(f"hybrid@{gold:g}", "hybrid", gold), (f"auto@{gold:g}", "auto", gold)]
    return [("prior_only", "prior_only", 0.0), ("bagloss", "bagloss", 0.0), ("priors", "priors", 0.0)] + [
        ("auto", "auto", 0.0)
    ]


def cmd_run(args: argparse.Namespace) -> None:
    setup()
    auto_plan.AUTO_BLEND = args.blend  # the blend candidate is off by default (measured on valid)
    views = args.views.split(",")
    unknown = sorted(set(views) - set(VIEWS))
    if unknown:
        raise SystemExit(f"unknown view(s) {', '.join(unknown)}; choose from {', '.join(VIEWS)}")
    config = TrainConfig(device="cpu")
    loaded: dict[str, PreparedSplits] = {}
    for view in views:
        started = time.perf_counter()
        label_view = view if view in LABEL_VIEWS else "native"
        if label_view not in loaded:
            loaded[label_view] = load(args.dataset, label_view, args.data)
        base = loaded[label_view]
        if args.split == "valid":
            base = valid_as_test(base)
        empty = None
        if view == "nocontext":
            empty = torch.as_tensor(np.asarray(get_encoder(None).encode([""]))[0], dtype=torch.float32)
        out = (
            f"auto_views_{args.dataset}_{view}_{args.split}"
            + (f"_gold{args.gold:g}" if args.gold else "")
            + ("_blend" if args.blend else "")
        )
        args.view = view
        meta = run_meta(args, base, seeds=SEEDS, split_scored=args.split, gold=args.gold)
        records: list[dict[str, Any]] = []
        for seed in SEEDS:
            prepared = view_of(base, view, seed, empty)
            for row, method, gold in runs_for(args.gold):
                record = run_one(
                    prepared,
                    method,
                    seed=seed,
                    gold_fraction=gold,
                    config=config,
                    inspect=candidate_figures(prepared.test) if method == "auto" else None,
                )
                record.update(row=row, view=view)
                records.append(record)
                print(
                    f"{view:9s} seed {seed} {row:11s} given Y {record['posterior_auc_roc']:.4f} "
                    f"{record['train_cpu_seconds']:6.1f} CPU s {record.get('selection', {}).get('chosen', '')}",
                    flush=True,
                )
                save(out + ".json", {**meta, "records": records})
        meta["seconds"] = time.perf_counter() - started
        save(out + ".json", {**meta, "records": records})


def _files() -> list[Path]:
    return sorted(RESULTS.glob("auto_views_*.json"))


def _candidate(record: dict[str, Any], method: str) -> dict[str, Any] | None:
    return next((c for c in record.get("candidates", []) if c["method"] == method), None)


def floor_of(records: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """The target's floor: max(BagLoss, prior-only raw, prior-only calibrated) - 0.005, means over seeds."""
    parts = {
        "bagloss": stats([r["posterior_auc_roc"] for r in records if r["row"] == "bagloss"])["mean"],
        "prior_only": stats([r["posterior_auc_roc"] for r in records if r["row"] == "prior_only"])["mean"],
    }
    calibrated = [c for r in records if r["row"] == "auto" for c in [_candidate(r, "prior_only")] if c]
    parts["prior_only(calibrated)"] = stats([c["posterior_auc_roc"] for c in calibrated])["mean"]
    return max(v for v in parts.values() if np.isfinite(v)) - 0.005, parts


def cmd_table(_: argparse.Namespace) -> None:
    print("| file | row | AUC given Y | fit CPU s | auto chose | target |")
    print("|---|---|---|---|---|---|")
    for path in _files():
        recs = json.loads(path.read_text())["records"]
        floor, _parts = floor_of(recs) if any(r["row"] == "bagloss" for r in recs) else (float("nan"), {})
        rows = list(dict.fromkeys(r["row"] for r in recs))
        for row in rows:
            runs = [r for r in recs if r["row"] == row]
            given = stats([r["posterior_auc_roc"] for r in runs])
            cpu = stats([r["train_cpu_seconds"] for r in runs])
            picks = Counter(r["selection"]["chosen"] for r in runs if "selection" in r)
            chose = ", ".join(f"{k} ×{v}" for k, v in picks.most_common())
            met = ""
            if row.startswith("auto") and np.isfinite(floor):
                met = f"{'met' if given['mean'] >= floor else 'MISSED'} (>= {floor:.4f})"
            print(f"| {path.stem[11:]} | {row} | {fmt(given, 4)} | {cpu['mean']:.1f} | {chose} | {met} |")
        for name in dict.fromkeys(c["name"] for r in recs for c in r.get("candidates", [])):
            figures = [c for r in recs for c in r.get("candidates", []) if c["name"] == name]
            if figures and not rows[-1].startswith("auto@"):
                print(
                    f"| {path.stem[11:]} | · {name} | {fmt(stats([c['posterior_auc_roc'] for c in figures]), 4)} | | | |"
                )


# Settings of the rule replayed offline: (label, SE multiple, simplicity order, methods left out).
_PLAIN = ("bagloss", "prior_only", "priors", "hybrid")
RULES: list[tuple[str, float, tuple[str, ...], tuple[str, ...]]] = [
    ("before: 1 SE, BagLoss first, no blend", 1.0, _PLAIN, ("blend",)),
    ("argmax, no blend", 0.0, _PLAIN, ("blend",)),
    ("argmax with blend", 0.0, registry.AUTO_SIMPLICITY, ()),
    ("blend always", 0.0, registry.AUTO_SIMPLICITY, ("bagloss", "prior_only", "priors")),
    *[
        (f"{k:g} SE, blend first", k, ("blend", "bagloss", "prior_only", "priors", "hybrid"), ())
        for k in (1.0, 2.0)
    ],
    ("1 SE, BagLoss first, with blend", 1.0, ("bagloss", "prior_only", "blend", "priors", "hybrid"), ()),
]


def replay(
    record: dict[str, Any], se: float, order: tuple[str, ...], drop: tuple[str, ...]
) -> dict[str, Any]:
    """The candidate a rule setting would have chosen in one auto record, with its figures on the scored split."""
    rows = [dict(r) for r in record["selection"]["candidates"] if r["method"] not in drop]
    figures = {c["name"]: c for c in record["candidates"]}
    per_bag = np.array([figures[r["name"]]["judged"] for r in rows], dtype=np.float64)
    pick = rows[choose(rows, per_bag, se_multiple=se, order=order)]
    return figures[pick["name"]] | {"name": pick["name"]}


GOLD_RULES: list[tuple[str, float, str | None, tuple[str, ...]]] = [
    ("before: plain best", 0.0, None, ()),
    ("1 SE, BagLoss first", 1.0, None, ()),
    *[(f"hybrid unless beaten by > {k:g} SE, then the best", k, "hybrid", ()) for k in (0.5, 1.0, 2.0)],
    ("hybrid always", 0.0, "hybrid", ("bagloss", "prior_only", "blend", "priors")),
]


def replay_gold(
    record: dict[str, Any], se: float, default: str | None, drop: tuple[str, ...]
) -> dict[str, Any]:
    """The same for a choice by gold, from the stored gaps to the best and their bootstrap SEs (the band of
    ``auto_choice.choose``: gap <= k SE; the best itself is always in it)."""
    rows = [r for r in record["selection"]["candidates"] if r["method"] not in drop]
    best = max(rows, key=lambda r: r["score"])
    band = [r for r in rows if best["score"] - r["score"] <= se * (r["paired_se"] or 0.0) + 1e-12]
    pick = min(band, key=lambda r: (_PLAIN.index(r["method"]), r.get("cosine", 0.0)))
    if default is not None:
        pick = next((r for r in band if r["method"] == default), best)
    return next(c for c in record["candidates"] if c["name"] == pick["name"]) | {"name": pick["name"]}


def cmd_rules(_: argparse.Namespace) -> None:
    table: dict[str, dict[str, str]] = {}
    for path in _files():
        data = json.loads(path.read_text())
        gold = [r for r in data["records"] if r["row"].startswith("auto@")]
        autos = gold or [r for r in data["records"] if r["row"] == "auto" and "candidates" in r]
        if not autos:
            continue
        if gold:
            hybrid = [r["posterior_auc_roc"] for r in data["records"] if r["row"].startswith("hybrid@")]
            floor = stats(hybrid)["mean"]
        else:
            floor, _parts = floor_of(data["records"])
        for label, se, order, drop in GOLD_RULES if gold else RULES:
            picks = [
                replay_gold(r, se, order, drop) if gold else replay(r, se, order, drop)  # type: ignore[arg-type]
                for r in autos
            ]
            given = stats([p["posterior_auc_roc"] for p in picks])
            names = "/".join(p["name"].split("(")[0] for p in picks)
            mark = "" if given["mean"] >= floor else " MISSED"
            table.setdefault(label, {})[path.stem[11:]] = f"{fmt(given, 4)}{mark} [{names}]"
        table.setdefault("target floor" + (" (hybrid)" if gold else ""), {})[path.stem[11:]] = f"{floor:.4f}"
    columns = list(dict.fromkeys(c for cells in table.values() for c in cells))
    for column in columns:
        print(f"\n### {column}")
        for label, cells in table.items():
            print(f"- {label}: {cells.get(column, '–')}")


def main() -> None:
    run_cli(
        __doc__,
        cmd_run,
        table=cmd_table,
        rules=cmd_rules,
        run_options={
            "--split": {"choices": ("valid", "test"), "default": "valid"},
            "--views": {"default": "native", "help": f"comma-separated views among {', '.join(VIEWS)}"},
            "--gold": {"type": float, "default": 0.0, "help": "hybrid and auto with this random gold share"},
            "--blend": {
                "action": "store_true",
                "help": "auto also fits its blend candidate (off by default)",
            },
        },
    )


if __name__ == "__main__":
    main()
