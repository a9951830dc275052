"""Active gold selection vs the paper's random gold, at equal budgets, with seeds.

Usage:
    .venv/bin/python benchmarks/active_selection.py run --dataset processbench   # -> results/active_*.json
    .venv/bin/python benchmarks/active_selection.py run --dataset processbench --unit sentences \
        --seeds 5 --budgets 0.05,0.1 --strategies random,balanced,posterior,uncertainty,inconsistency
    .venv/bin/python benchmarks/active_selection.py run --dataset processbench --unit sentences \
        --seeds 5 --budgets 0.05 --peer-budgets 0.1 --strategies random,representative,stratified --split valid
    .venv/bin/python benchmarks/active_selection.py table

``--split valid`` scores the models on the validation split (tuning; gold is still bought from train and the
test split is never read); ``--peer-budgets`` runs only ``random`` at those budgets (the peer to beat).

With ``--unit sentences`` the budget is a share of the training *sentences* (annotation effort): each strategy
ranks every candidate response and takes them in order while their sentences fit the budget
(`selection.within_sentence_budget`); random takes a seeded random order the same way.

Per seed: train FRACTAL without gold (`pslab`) on the training bags, score every training sentence with it, let
each strategy of `fractal_core.evaluation.selection` choose the gold bags (among the bags that have gold labels), then train
`hybrid` with exactly those bags (`run_one(..., gold_bags=...)`). `random` is `choose_gold_bags`, the paper's
protocol. The validation split's gold bags are the same random draw for every strategy. Budgets 2%, 5%, 10% of
training bags; seeds 0, 1, 2; TEST split (``--split valid`` to tune); library defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_common import (  # noqa: E402
    RESULTS,
    ProbeModel,
    fmt,
    load,
    run_cli,
    run_meta,
    save,
    setup,
    stats,
    valid_as_test,
)

from fractal_core.evaluation.comparison import choose_gold_bags, run_one  # noqa: E402
from fractal_core.evaluation.selection import (  # noqa: E402
    STRATEGIES,
    bag_embeddings,
    select_gold_bags,
    select_gold_indices,
    within_sentence_budget,
)
from fractal_core.fitting.config import TrainConfig  # noqa: E402

SEEDS = (0, 1, 2)
BUDGETS = (0.02, 0.05, 0.1)


def by_sentences(train, score, *, budget: float, strategy: str, seed: int, aggregation: str, candidates):
    """Gold bags for a budget of ``budget`` x the training sentences, in the strategy's priority order."""
    counts = train.sentence_counts()
    order = select_gold_indices(
        score,
        train.bag_index,
        train.labels,
        aggregation=aggregation,
        k=int(candidates.sum()),
        strategy=strategy,
        seed=seed + 104729,
        bag_embedding=bag_embeddings(train) if strategy == "diverse" else None,
        candidates=candidates,
        variant="prob",  # the noisy-OR reading the published figures were measured with
    )
    picks = within_sentence_budget(order, counts, int(round(budget * train.n_sentences)))
    return torch.as_tensor(sorted(picks), dtype=torch.long)


def cmd_run(args: argparse.Namespace) -> None:
    setup()
    started = time.perf_counter()
    prepared = load(args.dataset, args.view, args.data)
    if args.split == "valid":  # tuning: gold is still bought from train, the models are scored on valid
        prepared = valid_as_test(prepared)
    seeds = tuple(range(args.seeds)) if args.seeds else SEEDS
    budgets = tuple(float(b) for b in args.budgets.split(",")) if args.budgets else BUDGETS
    peer_budgets = tuple(float(b) for b in args.peer_budgets.split(",")) if args.peer_budgets else ()
    unit = args.unit
    out = args.out or (
        f"active_{args.dataset}_{args.view}"
        + ("_sentences" if unit == "sentences" else "")
        + ("_valid" if args.split == "valid" else "")
        + ".json"
    )
    config = TrainConfig(device="cpu")
    meta = run_meta(
        args,
        prepared,
        config=config.to_dict(),
        seeds=seeds,
        budgets=tuple(sorted({*budgets, *peer_budgets})),
        split_scored=args.split,
        unit=unit,
    )
    train = prepared.train
    has_gold = torch.zeros(train.n_bags, dtype=torch.bool)
    has_gold[torch.unique(train.bag_index[train.gold >= 0])] = True
    counts = train.sentence_counts()
    records: list[dict[str, Any]] = []
    strategies = args.strategies.split(",") if args.strategies else list(STRATEGIES)
    if args.strategies and (RESULTS / out).exists():  # add strategies to an earlier run's records
        records = [
            r
            for r in json.loads((RESULTS / out).read_text())["records"]
            if r["strategy"] not in {*strategies, *(("random",) if peer_budgets else ())}
        ]
        meta["budgets"] = tuple(sorted({*meta["budgets"], *(r["budget"] for r in records)}))
    for seed in seeds:
        base = run_one(prepared, "pslab", seed=seed, gold_fraction=0.0, config=config)
        scorer = ProbeModel.last
        assert scorer is not None
        score = scorer.predict_bags(train)  # (N,) no-gold model's scores of the training sentences
        print(f"seed {seed} pslab (no gold) AUC {base['instance_auc_roc']:.4f}", flush=True)
        runs = [(b, s) for b in budgets for s in strategies] + [(b, "random") for b in peer_budgets]
        for budget, strategy in runs:
            k = int(round(budget * train.n_bags))
            if unit == "sentences":
                chosen = by_sentences(
                    train, score, budget=budget, strategy=strategy, seed=seed,
                    aggregation=prepared.aggregation, candidates=has_gold,
                )  # fmt: skip
            elif strategy == "random":
                chosen = choose_gold_bags(train, budget, seed)
            else:
                chosen = select_gold_bags(
                    train,
                    score,
                    k=k,
                    strategy=strategy,
                    seed=seed,
                    aggregation=prepared.aggregation,
                    candidates=has_gold,
                    variant="prob",  # the noisy-OR reading the published figures were measured with
                )
            record = run_one(
                prepared, "hybrid", seed=seed, gold_fraction=budget, config=config, gold_bags=chosen
            )
            record.update(
                strategy=strategy,
                budget=budget,
                gold_bags=int(chosen.numel()),
                gold_sentences=int(counts[chosen].sum()),
                positive_bags=int((train.labels[chosen] >= 1).sum()),
            )
            records.append(record)
            print(
                f"seed {seed} {budget:<4g} {strategy:13s} AUC {record['instance_auc_roc']:.4f} "
                f"|Y {record['posterior_auc_roc']:.4f} ({record['gold_sentences']} gold sentences)",
                flush=True,
            )
            save(out, {**meta, "records": records})
    meta["seconds"] = time.perf_counter() - started
    save(out, {**meta, "records": records})


def paired_gap(recs: list[dict[str, Any]], strategy: str, budget: float, key: str) -> dict[str, float]:
    """Per seed, ``strategy`` at ``budget`` minus random at the largest budget of the run (the peer to beat), on
    metric ``key``: mean ± std over the seeds both have."""
    peer_budget = max(r["budget"] for r in recs if r["strategy"] == "random")
    peer = {r["seed"]: r[key] for r in recs if r["strategy"] == "random" and r["budget"] == peer_budget}
    mine = {r["seed"]: r[key] for r in recs if r["strategy"] == strategy and r["budget"] == budget}
    return stats([mine[s] - peer[s] for s in sorted(mine.keys() & peer.keys())])


def cmd_table(_: argparse.Namespace) -> None:
    for path in sorted(RESULTS.glob("active_*.json")):
        data = json.loads(path.read_text())
        recs = data["records"]
        unit = data.get("unit", "bags")
        print(
            f"\n### {path.stem}: hybrid {data.get('split_scored', 'test')} sentence AUC-ROC / given Y "
            f"(mean ± std over seeds {data['seeds']}), budget in {unit}\n"
        )
        print("| strategy | " + " | ".join(f"{100 * b:g}% gold" for b in data["budgets"]) + " |")
        print("|---" * (len(data["budgets"]) + 1) + "|")
        present = [s for s in STRATEGIES if any(r["strategy"] == s for r in recs)]
        for strategy in present:
            cells = []
            for b in data["budgets"]:
                runs = [r for r in recs if r["strategy"] == strategy and r["budget"] == b]
                sent = stats([r["gold_sentences"] for r in runs])["mean"]
                if not runs:
                    cells.append("–")
                    continue
                auc = fmt(stats([r["instance_auc_roc"] for r in runs]))
                given = fmt(stats([r["posterior_auc_roc"] for r in runs]))
                n_bags = stats([r["gold_bags"] for r in runs])["mean"]
                cells.append(f"{auc} / {given} ({sent:.0f} sent., {n_bags:.0f} resp.)")
            print(f"| {strategy} | " + " | ".join(cells) + " |")
        if any(r["strategy"] == "random" for r in recs):
            top = max(r["budget"] for r in recs if r["strategy"] == "random")
            print(f"\nPaired by seed, minus random at {100 * top:g}% (sentence AUC / given Y):\n")
            for strategy in present:
                for b in data["budgets"]:
                    if (strategy, b) == ("random", top) or not any(
                        r["strategy"] == strategy and r["budget"] == b for r in recs
                    ):
                        continue
                    d_auc = paired_gap(recs, strategy, b, "instance_auc_roc")
                    d_given = paired_gap(recs, strategy, b, "posterior_auc_roc")
                    print(
                        f"- {strategy} {100 * b:g}%: {d_auc['mean']:+.4f} ± {d_auc['std']:.4f} / "
                        f"{d_given['mean']:+.4f} ± {d_given['std']:.4f}"
                    )


def main() -> None:
    run_cli(
        __doc__,
        cmd_run,
        table=cmd_table,
        run_options={
            "--strategies": {"help": "comma-separated subset, added to an existing result file"},
            "--unit": {"choices": ("bags", "sentences"), "default": "bags", "help": "what a budget counts"},
            "--seeds": {"type": int, "default": 0, "help": "seeds 0..n-1 (default 0, 1, 2)"},
            "--budgets": {"default": "", "help": "comma-separated shares (default 0.02,0.05,0.1)"},
            "--peer-budgets": {
                "default": "",
                "help": "comma-separated shares at which only random runs (the peer)",
            },
            "--split": {
                "choices": ("test", "valid"),
                "default": "test",
                "help": "the split the models are scored on",
            },
            "--out": {"default": "", "help": "result file name (default from dataset, view, unit and split)"},
        },
    )


if __name__ == "__main__":
    main()
