"""Does an encoder precision change what the methods learn? Sentence AUC on VALID, per precision, same seeds.

The acceptance rule for a faster encoder: sentence AUC-ROC on valid moves by <= 0.005 against the float
embeddings. Each precision embeds train and valid of both shared datasets (through the embedding cache, under
its own encoder id), then the same methods and seeds are trained on train and scored on valid (test is never
embedded nor read). Usage (what BENCHMARKS.md records):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_encode_quality.py \\
        --precisions float32,onnx-int8 --methods fractal,hybrid --seeds 3

``float32`` is served from the cache under the float id, which bf16-autocast runs also fill (min cosine 0.9999
to float32, BENCHMARKS.md "Encoding"); pass ``--cache-dir`` with an empty directory to embed everything afresh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_option import add_data_option  # noqa: E402
from quality_common import DATASETS, machine, setup  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precisions", default="float32,onnx-int8")
    parser.add_argument("--methods", default="fractal,hybrid")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gold-fraction", type=float, default=0.1)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    add_data_option(parser)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: the usual one)")
    parser.add_argument("--json", type=Path, default=None, help="write every record here")
    args = parser.parse_args()

    setup()
    from fractal_core.data.io import read_split_dir
    from fractal_core.embedding.encoder import Encoder, EncoderConfig
    from fractal_core.evaluation.comparison import prepare_splits, run_evaluation
    from fractal_core.fitting.config import TrainConfig

    methods = [m for m in args.methods.split(",") if m]  # "" -> only the cosine check
    records = []
    cosines: dict[
        tuple[str, str], np.ndarray
    ] = {}  # (dataset, precision) -> per-sentence cosine to the first
    for dataset in args.datasets.split(","):
        splits = read_split_dir(args.data / dataset)
        splits = {
            "train": splits["train"],
            "valid": splits["valid"],
            "test": splits["valid"],
        }  # score on valid
        for precision in args.precisions.split(","):
            encoder = Encoder(EncoderConfig(precision=precision, cache_dir=args.cache_dir))  # type: ignore[arg-type]
            started = time.perf_counter()
            prepared = prepare_splits(splits, encoder, device="cpu")
            embed_seconds = time.perf_counter() - started
            assert prepared.valid is not None
            vectors = torch.cat(
                [prepared.train.sent_emb, prepared.valid.sent_emb]
            ).double()  # (sentences, dim)
            vectors = vectors / vectors.norm(dim=1, keepdim=True)
            if precision == args.precisions.split(",")[0]:
                reference = vectors
            cosines[(dataset, precision)] = (vectors * reference).sum(1).numpy()
            for record in run_evaluation(
                prepared,
                methods,
                seeds=range(args.seeds),
                gold_fraction=args.gold_fraction,
                config=TrainConfig(device="cpu"),
            ):
                record.update(dataset=dataset, precision=precision, encoder_id=encoder.encoder_id)
                records.append(record)
                print(
                    f"{dataset} {precision} {record['method']} seed {record['seed']}: "
                    f"valid AUC {record['instance_auc_roc']:.4f}",
                    flush=True,
                )
            print(f"{dataset} {precision}: embedded train+valid in {embed_seconds:.0f} s", flush=True)

    print(f"\n{machine()}")
    precisions = args.precisions.split(",")
    base = precisions[0]
    for (dataset, precision), cosine in cosines.items():
        if precision != base:
            print(
                f"{dataset} train+valid sentences: {precision} vs {base}: {len(cosine)} sentences, "
                f"min cosine {cosine.min():.5f}, mean {cosine.mean():.6f}"
            )
    print(
        f"| dataset | method | {' | '.join(precisions)} | change vs {base} (mean of per-seed differences) |"
    )
    for dataset in args.datasets.split(","):
        for method in methods:
            auc = {
                p: np.array(
                    [
                        r["instance_auc_roc"]
                        for r in sorted(records, key=lambda r: r["seed"])
                        if r["dataset"] == dataset and r["method"] == method and r["precision"] == p
                    ]
                )
                for p in precisions
            }
            cells = [f"{a.mean():.4f} ± {a.std():.4f}" for a in auc.values()]
            changes = [
                f"{p}: {(auc[p] - auc[base]).mean():+.4f} (max |d| {np.abs(auc[p] - auc[base]).max():.4f})"
                for p in precisions[1:]
            ]
            print(f"| {dataset} | {method} | {' | '.join(cells)} | {'; '.join(changes)} |")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1, default=str))


if __name__ == "__main__":
    main()
