"""Training k = 3 criteria together against one criterion alone, on the same data, in the same run.

Three criteria are derived from each shared dataset's own labels (:func:`derive_criteria`, by the labels' shape,
not by the dataset's name):
- ordinal data (levels 0..2, every sentence labelled, e.g. DelucionQA): ``level1`` = max of levels >= 1,
  ``level2`` = max of levels >= 2, ``share1`` = the share of sentences at level >= 1 (mean);
- binary first-error data (nothing labelled after a first error, e.g. ProcessBench): ``error`` = has an error
  (max), ``all_correct`` = every step correct (min, the same steps' labels flipped), ``answer_wrong`` = the final
  answer is wrong (max, from ``meta.final_answer_correct``; no step labels, so only its bag AUC is measured).

Per seed (3 by default), on the same embeddings: the joint model (``CriteriaModel``, every criterion) and each
criterion alone (the product's single-label fit, ``FractalModel``, same method and config). Cost: CPU seconds
(``time.process_time``, the whole process) and wall seconds of each fit, epochs run, and the ratios joint /
first criterion alone and joint / the three alone. Quality on test: each criterion's sentence AUC given its
response label (``posterior_auc_roc``), its sentence AUC and bag AUC, joint against alone (mean +- sd).

    nice python benchmarks/criteria_cost.py --data DIR [--seeds 3] [--method priors] [--json out.json]
    nice python benchmarks/criteria_cost.py --data DIR --fixed-epochs 20     # every fit on the same schedule
    python benchmarks/criteria_cost.py --data DIR --write DIR2   # also write the derived files (train/valid/test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_option import add_data_option  # noqa: E402
from quality_common import machine  # noqa: E402

from fractal_core.data.io import max_level, read_split_dir, write_records_jsonl
from fractal_core.data.records import CriterionLabels, ResponseRecord
from fractal_core.embedding.encoder import get_encoder
from fractal_core.embedding.features import embed_records
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.criteria_fit import criterion_bags
from fractal_core.fitting.criteria_model import CriteriaModel, criteria_bags, criteria_of
from fractal_core.fitting.estimator import FractalModel

KEYS = ("posterior_auc_roc", "instance_auc_roc", "bag_auc_roc")


def _ordinal(record: ResponseRecord) -> dict[str, CriterionLabels]:
    labels = record.sentence_labels or []
    if any(v is None for v in labels) or len(labels) != len(record.spans):
        raise ValueError(f"{record.id}: the ordinal derivation needs every sentence labelled")
    at1 = [int(v is not None and v >= 1) for v in labels]
    at2 = [int(v is not None and v >= 2) for v in labels]
    return {
        "level1": CriterionLabels(float(max(at1)), "max", at1),
        "level2": CriterionLabels(float(max(at2)), "max", at2),
        "share1": CriterionLabels(sum(at1) / len(at1), "mean", at1),
    }


def _first_error(record: ResponseRecord) -> dict[str, CriterionLabels]:
    labels = record.sentence_labels
    flipped = None if labels is None else [None if v is None else 1 - v for v in labels]
    answer = record.meta.get("final_answer_correct")
    if not isinstance(answer, bool):
        raise ValueError(f"{record.id}: meta.final_answer_correct must be true or false")
    y = float(record.response_label)
    return {
        "error": CriterionLabels(y, "max", labels),
        "all_correct": CriterionLabels(1.0 - y, "min", flipped),
        "answer_wrong": CriterionLabels(float(not answer), "max", None),
    }


def derive_criteria(splits: dict[str, list[ResponseRecord]]) -> dict[str, list[ResponseRecord]]:
    """The splits with three criteria per response, derived from the labels' shape (module docstring)."""
    everything = [r for part in splits.values() for r in part]
    derive: Callable[[ResponseRecord], dict[str, CriterionLabels]]
    derive = _ordinal if max_level(everything) >= 2 else _first_error
    out = {}
    for split, part in splits.items():
        rows = []
        for r in part:
            criteria = derive(r)
            first = next(iter(criteria.values()))
            rows.append(
                replace(
                    r,
                    response_label=first.response_label,
                    aggregation=first.aggregation,
                    sentence_labels=first.sentence_labels,
                    criteria=criteria,
                )
            )
        out[split] = rows
    return out


def _only(bags: BagSet, j: int) -> BagSet:
    """Multi-criterion bags restricted to criterion ``j`` (labels (B, 1), gold (N, 1))."""
    return replace(bags, labels=bags.labels[:, j : j + 1], gold=bags.gold[:, j : j + 1])


def _timed(fit: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    model = fit()
    return model, time.process_time() - cpu, time.perf_counter() - wall


def _epochs(history: Sequence[dict[str, Any]]) -> int:
    return sum(len(stage["train_loss"]) for stage in history)


def run_dataset(
    folder: Path, *, seeds: int, method: str, config: TrainConfig, write: Path | None
) -> dict[str, Any]:
    splits = derive_criteria(read_split_dir(folder))
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for split, part in splits.items():
            write_records_jsonl(part, write / f"{split}.jsonl")
    criteria = criteria_of([r for part in splits.values() for r in part])
    encoder = get_encoder(None)
    bags = {
        split: criteria_bags(embed_records(part, encoder), part, [c.name for c in criteria])
        for split, part in splits.items()
    }
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        joint, cpu, wall = _timed(
            lambda seed=seed: CriteriaModel(method, config=config, seed=seed).fit_bags(
                bags["train"], bags["valid"], criteria=criteria
            )
        )
        joint_test = joint.evaluate_bags(bags["test"])
        rows.append(
            {"seed": seed, "fit": "joint", "cpu": cpu, "wall": wall, "epochs": _epochs(joint.history_)}
        )
        for c in criteria:
            rows[-1][c.name] = {k: joint_test[c.name].get(k, float("nan")) for k in KEYS}
        for j, c in enumerate(criteria):
            train, valid, test = (_only(bags[s], j) for s in ("train", "valid", "test"))
            alone, cpu, wall = _timed(
                lambda seed=seed, train=train, valid=valid, c=c: CriteriaModel(
                    method, config=config, seed=seed
                ).fit_bags(train, valid, criteria=(c,))
            )
            metrics = alone.evaluate_bags(test)[c.name]
            rows.append(
                {
                    "seed": seed,
                    "fit": f"alone:{c.name}",
                    "cpu": cpu,
                    "wall": wall,
                    "epochs": _epochs(alone.history_),
                    c.name: {k: metrics.get(k, float("nan")) for k in KEYS},
                }
            )
        # The product's single-label fit of the first criterion, for reference: the same training plus what it
        # fits on valid afterwards (step calibration, first-error rule).
        first = criteria[0]
        _, cpu, wall = _timed(
            lambda seed=seed, first=first: FractalModel(method, config=config, seed=seed).fit_bags(
                criterion_bags(bags["train"], 0),
                criterion_bags(bags["valid"], 0),
                aggregation=first.aggregation,
                n_classes=first.n_classes,
            )
        )
        rows.append({"seed": seed, "fit": "single-label fit", "cpu": cpu, "wall": wall, "epochs": 0})
        print(json.dumps(rows[-2 - len(criteria)], default=float), flush=True)
    return {"dataset": folder.name, "criteria": [c.__dict__ for c in criteria], "rows": rows}


def _stats(values: Sequence[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def report(result: dict[str, Any]) -> str:
    rows, names = result["rows"], [c["name"] for c in result["criteria"]]
    seeds = sorted({r["seed"] for r in rows})

    def per_seed(fit: str, key: str) -> list[float]:
        return [next(r[key] for r in rows if r["seed"] == s and r["fit"] == fit) for s in seeds]

    lines = [f"### {result['dataset']}: criteria {', '.join(names)}", ""]
    lines.append("| fit | CPU s | wall s | epochs | CPU s / epoch |")
    lines.append("|---|---|---|---|---|")
    for fit in ["joint", *(f"alone:{n}" for n in names)]:
        cpu, wall, epochs = per_seed(fit, "cpu"), per_seed(fit, "wall"), per_seed(fit, "epochs")
        lines.append(
            f"| {fit} | {_stats(cpu)} | {_stats(wall)} | {_stats(epochs)} | "
            f"{_stats([c / e for c, e in zip(cpu, epochs, strict=True)])} |"
        )
    single_cpu, single_wall = per_seed("single-label fit", "cpu"), per_seed("single-label fit", "wall")
    lines.append(
        f"| single-label fit of {names[0]} (FractalModel) | {_stats(single_cpu)} | {_stats(single_wall)} | | |"
    )
    joint_cpu, joint_wall = per_seed("joint", "cpu"), per_seed("joint", "wall")
    one_cpu, one_wall = per_seed(f"alone:{names[0]}", "cpu"), per_seed(f"alone:{names[0]}", "wall")
    three_cpu = [sum(x) for x in zip(*(per_seed(f"alone:{n}", "cpu") for n in names), strict=True)]
    joint_rate = [c / e for c, e in zip(joint_cpu, per_seed("joint", "epochs"), strict=True)]
    one_rate = [c / e for c, e in zip(one_cpu, per_seed(f"alone:{names[0]}", "epochs"), strict=True)]
    lines += [
        "",
        f"- joint / {names[0]} alone: CPU {_stats([a / b for a, b in zip(joint_cpu, one_cpu, strict=True)])}, "
        f"wall {_stats([a / b for a, b in zip(joint_wall, one_wall, strict=True)])}, "
        f"CPU per epoch {_stats([a / b for a, b in zip(joint_rate, one_rate, strict=True)])}",
        f"- joint / the three alone: CPU {_stats([a / b for a, b in zip(joint_cpu, three_cpu, strict=True)])}",
        "",
        "| criterion | fit | AUC given the label | sentence AUC | bag AUC |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        for fit in ("joint", f"alone:{name}"):
            cells = [_stats([r[name][k] for r in rows if r["fit"] == fit]) for k in KEYS]
            lines.append(f"| {name} | {fit.split(':')[0]} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_option(parser)
    parser.add_argument("--datasets", default="delucionqa,processbench")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--method", default="priors")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--fixed-epochs",
        type=int,
        default=None,
        help="run exactly N epochs per stage (no early stopping): every fit on the same schedule",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--write", type=Path, default=None, help="write each derived dataset under DIR/<name>"
    )
    args = parser.parse_args()
    config = TrainConfig() if args.max_epochs is None else TrainConfig(max_epochs=args.max_epochs)
    if args.fixed_epochs is not None:
        config = TrainConfig(max_epochs=args.fixed_epochs, patience=args.fixed_epochs)
    before = machine()
    results = []
    for name in args.datasets.split(","):
        write = None if args.write is None else args.write / name
        result = run_dataset(
            args.data / name, seeds=args.seeds, method=args.method, config=config, write=write
        )
        results.append(result)
        print(report(result), flush=True)
    print(f"\nbefore: {before}\nafter: {machine()}\ntorch threads {config.cpu_threads}; method {args.method}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
