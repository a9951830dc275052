"""Ray embedding throughput against a single process on the same machine and texts.

Usage (what BENCHMARKS.md records):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_ray.py --n 1000 --workers 2

Embeds the first ``--n`` sentences of processbench/train.jsonl in the ``--data`` folder (default: the shared
datasets folder beside the clone) with the default encoder, cache disabled: once in this process (torch on
``--workers`` threads) and once through ``fractal_core.experimental.distributed`` on a local Ray instance with
``--workers`` actors of one thread each. Prints sentences/s of both (Ray's includes starting the actors and
loading one encoder in each, as every ``--ray`` run does; the start of the local Ray instance itself is
reported apart), their ratio, the minimum cosine between the two results and the share of vectors that are
bit-identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_encode import load_sentences  # noqa: E402
from data_option import add_data_option  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000)
    add_data_option(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--batch-size", type=int, default=1, help="encoder batches (token budget each) per Ray Data batch"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32"],
        help="bf16 rounding depends on batch make-up",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    import torch

    from fractal_core.embedding.encoder import Encoder, EncoderConfig
    from fractal_core.experimental.distributed import ray_embed

    texts = load_sentences(args.n, args.data / "processbench" / "train.jsonl")
    config = EncoderConfig(cache_dir="", precision=args.precision)
    torch.set_num_threads(args.workers)
    single = Encoder(config)
    single.encode(texts[:32])
    started = time.perf_counter()
    local = single.encode(texts)
    t_single = time.perf_counter() - started

    started = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - started
    try:
        started = time.perf_counter()
        remote = ray_embed(texts, config=config, workers=args.workers, batch_size=args.batch_size)
        t_ray = time.perf_counter() - started
    finally:
        ray.shutdown()
    # Cosine of the vectors as returned (float16-exact, so their norms are 1 only to ~1e-4: normalise).
    cos = (local * remote).sum(1) / (np.linalg.norm(local, axis=1) * np.linalg.norm(remote, axis=1))
    identical = float((local == remote).all(1).mean())
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; nproc {os.cpu_count()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"texts: {len(texts)} processbench train sentences; encoder precision {args.precision}")
    print(
        f"single process ({args.workers} torch threads): {len(texts) / t_single:.1f} sentences/s ({t_single:.1f} s)"
    )
    print(
        f"Ray, {args.workers} local workers x 1 thread ({args.batch_size} encoder batch(es) per Ray batch): {len(texts) / t_ray:.1f} "
        f"sentences/s ({t_ray:.1f} s, including the actors' start and model load; Ray start-up {t_init:.1f} s "
        "not counted)"
    )
    print(
        f"ratio Ray / single: {t_single / t_ray:.2f}x; min cosine {cos.min():.7f} (need >= 0.9999); "
        f"bit-identical vectors {identical:.1%}"
    )
    assert np.isfinite(cos).all()


if __name__ == "__main__":
    main()
