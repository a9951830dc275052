"""Encoders as a measured choice: quality against encode speed, one table.

Rows: the bundled all-MiniLM-L6-v2 frozen (MLP scorer), all-mpnet-base-v2 frozen (MLP scorer), and MiniLM
fine-tuned end to end with the bag loss over [context; earlier steps; step] (``fractal_core.experimental.finetune``). All
three see the same ProcessBench slice (``processbench`` in the ``--data`` folder: ``--train/--valid/--test``
responses of each split, a fixed random subset; ``--pick first`` takes the first ones, from the easier sources
only), hybrid with 10% random gold bags (the same bags per seed for every row), early stopping and Platt calibration on the
valid slice only; test is scored once per row and seed. Columns: encode rate (the same test-slice sentences,
cache off, same run; for the fine-tuned row its scoring rate over the token-level sequences of the same
sentences), sentence AUC, AUC given Y, first-error accuracy given Y, fit seconds. Mean ± std over seeds.

Runs unchanged on CUDA (``--device auto`` takes the GPU when torch sees one; on a CPU-only machine it says so);
on a GPU, raise ``--train``/``--max-length``/``--epochs`` to the full split.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoders.py --out encoders.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoders.py --table encoders.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_option import add_data_option  # noqa: E402
from quality_common import fmt, machine, stats  # noqa: E402

from fractal_core.data.io import read_split_dir  # noqa: E402
from fractal_core.embedding.encoder import Encoder, EncoderConfig, get_encoder, resolve_device  # noqa: E402
from fractal_core.evaluation.comparison import choose_gold_bags, prepare_splits, run_one  # noqa: E402
from fractal_core.experimental.finetune import (  # noqa: E402
    FinetuneConfig,
    TokenBags,
    build_token_bags,
    finetune,
    load_encoder,
    score_token_bags,
    training_precision,
)
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.estimator import evaluation_metrics, task_of  # noqa: E402

FROZEN = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}
ROW_NAMES = {
    "minilm": "all-MiniLM-L6-v2 frozen, MLP",
    "mpnet": "all-mpnet-base-v2 frozen, MLP",
    "finetune": "all-MiniLM-L6-v2 fine-tuned, token-level context",
}
KEYS = ("instance_auc_roc", "posterior_auc_roc", "first_error_acc_given_y", "first_error_top3_given_y")


def hide_gold(data: TokenBags, keep: torch.Tensor) -> TokenBags:
    """Only the gold labels of bags ``keep`` stay (the evaluation's ``keep_gold_of`` on token bags)."""
    mask = torch.zeros(data.n_bags, dtype=torch.bool)
    mask[keep] = True
    return replace(data, gold=torch.where(mask[data.bag_index], data.gold, torch.full_like(data.gold, -1)))


def encode_rate(name: str, texts: list[str], device: str) -> float:
    encoder = Encoder(EncoderConfig(model_path=name, device=device, cache_dir=""))
    encoder.encode(texts[:8])  # warm-up
    started = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        print("no GPU found: running on the CPU (the script runs unchanged on CUDA)", flush=True)
    splits = read_split_dir(args.data / "processbench")
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    if args.pick == "random":  # a fixed random subset of each split: the files are ordered by source
        rng = np.random.default_rng(1234)
        splits = {
            k: [v[i] for i in np.sort(rng.permutation(len(v))[: sizes[k]])]
            for k, v in splits.items()
            if k in sizes
        }
    else:
        splits = {k: v[: sizes[k]] for k, v in splits.items() if k in sizes}
    aggregation, n_classes = task_of([r for part in splits.values() for r in part])
    seeds = [int(s) for s in args.seeds.split(",")]
    speed_texts = [s.text for r in splits["test"] for s in r.spans][: args.speed_n]
    out: dict[str, Any] = {
        "machine": machine(),
        "args": {**vars(args), "data": str(args.data)},
        "device": str(device),
        "runs": [],
    }
    # The trivial pointer, for scale: how often the first error of an erroneous test response is its first step.
    firsts = [
        next(i for i, v in enumerate(r.sentence_labels or []) if v is not None and v >= 1)
        for r in splits["test"]
        if r.response_label >= 1 and any(v is not None and v >= 1 for v in r.sentence_labels or [])
    ]
    out["first_step_share"] = float(np.mean([f == 0 for f in firsts])) if firsts else float("nan")

    def dump() -> None:
        Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n", encoding="utf-8")

    rows = args.rows.split(",")
    for row in rows:
        if row not in FROZEN:
            continue
        rate = encode_rate(FROZEN[row], speed_texts, str(device))
        out.setdefault("encode_rate", {})[row] = rate
        print(f"{row}: {rate:.1f} sentences/s", flush=True)
        encoder = get_encoder(EncoderConfig(model_path=FROZEN[row], device=str(device)))
        prepared = prepare_splits(splits, encoder, device=str(device))
        for seed in seeds:
            record = run_one(
                prepared,
                "hybrid",
                seed=seed,
                gold_fraction=0.1,
                config=TrainConfig(calibrate=True, device=str(device)),
            )
            out["runs"].append(
                {"row": row, "seed": seed, **{k: record[k] for k in KEYS}, "fit_s": record["train_seconds"]}
            )
            print(out["runs"][-1], flush=True)
            dump()
    if "finetune" in rows:
        config = FinetuneConfig(
            device=str(device), max_length=args.max_length, epochs=args.epochs, batch_bags=args.batch_bags,
            context_tokens=args.context_tokens, sentence_tokens=args.sentence_tokens, gold_weight=1.0,
            calibrate=True,
        )  # fmt: skip
        _, tokenizer = load_encoder(config)
        data = {k: build_token_bags(v, tokenizer, config) for k, v in splits.items()}
        for seed in seeds:
            train = hide_gold(data["train"], choose_gold_bags(data["train"].bagset(), 0.1, seed))
            valid = hide_gold(data["valid"], choose_gold_bags(data["valid"].bagset(), 0.1, seed))
            result = finetune(
                train, valid, aggregation=aggregation, n_classes=n_classes, config=config, seed=seed
            )
            logp = result.predict_logp_tokens(data["test"])
            metrics = evaluation_metrics(
                logp.exp(), data["test"].bagset(), aggregation=aggregation, n_classes=n_classes
            )
            out["runs"].append(
                {"row": "finetune", "seed": seed, **{k: metrics[k] for k in KEYS}, "fit_s": result.seconds,
                 "epochs": len(result.train_loss), "best_epoch": result.best_epoch + 1,
                 "train_loss": result.train_loss, "valid_score": result.valid_score}
            )  # fmt: skip
            print(out["runs"][-1], flush=True)
            if seed == seeds[0]:  # scoring rate over the token-level sequences of the same test sentences
                dtype, _ = training_precision(device, config.precision)
                first = replace(
                    data["test"],
                    input_ids=data["test"].input_ids[: len(speed_texts)],
                    lengths=data["test"].lengths[: len(speed_texts)],
                    pool_start=data["test"].pool_start[: len(speed_texts)],
                    pool_end=data["test"].pool_end[: len(speed_texts)],
                    bag_index=data["test"].bag_index[: len(speed_texts)],
                    gold=data["test"].gold[: len(speed_texts)],
                )
                started = time.perf_counter()
                score_token_bags(result.model, first, device=device, batch=config.score_batch, autocast=dtype)
                out.setdefault("encode_rate", {})["finetune"] = len(speed_texts) / (
                    time.perf_counter() - started
                )
                print(f"finetune: {out['encode_rate']['finetune']:.1f} sentences/s (scoring)", flush=True)
            dump()
    out["machine_end"] = machine()
    dump()
    print(table(out))


def table(out: dict[str, Any]) -> str:
    lines = [
        "| encoder / scorer | encode sentences/s | sentence AUC | AUC given Y | first error given Y | top-3 given Y | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    rates = out.get("encode_rate", {})
    for row, name in ROW_NAMES.items():
        runs = [r for r in out["runs"] if r["row"] == row]
        if not runs:
            continue
        cells = [fmt(stats([r[k] for r in runs])) for k in KEYS]
        fit = stats([r["fit_s"] for r in runs])
        rate = f"{rates[row]:.1f}" if row in rates else "–"
        lines.append(f"| {name} | {rate} | {' | '.join(cells)} | {fit['mean']:.0f} ± {fit['std']:.0f} |")
    if "first_step_share" in out:
        lines.append(
            f"\nAlways pointing at the first step: first error given Y = {out['first_step_share']:.3f}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="minilm,mpnet,finetune")
    add_data_option(parser)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--valid", type=int, default=100)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--pick", choices=("random", "first"), default="random", help="which responses of each split"
    )
    parser.add_argument("--max-length", type=int, default=176)
    parser.add_argument("--context-tokens", type=int, default=48)
    parser.add_argument("--sentence-tokens", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-bags", type=int, default=8)
    parser.add_argument("--speed-n", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="encoders.json")
    parser.add_argument(
        "--table", help="print the table of finished runs' JSON files (comma-separated) and stop"
    )
    args = parser.parse_args()
    if args.table:  # one or more runs' JSON (e.g. the frozen rows and the fine-tuned row run apart)
        parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.table.split(",")]
        merged = {**parts[0], "runs": [r for part in parts for r in part["runs"]]}
        merged["encode_rate"] = {k: v for part in parts for k, v in part.get("encode_rate", {}).items()}
        print(table(merged))
        return
    run(args)


if __name__ == "__main__":
    main()
