"""Training cost of the contextual scorer against the MLP: same data, same objective, same run, interleaved.

ProcessBench-shaped synthetic bags (1..15 sentences, 384-d; `bench_train.make_bags`), the default objective
(BagLoss hard max + cosine prior, as `fractal` without gold), one torch thread. Each scorer trains for
``--seconds`` in turn, repeated ``--rounds`` times in alternation so that a change in the machine's load hits
both alike; the figure is the median bags/s per scorer and its ratio to the MLP.

    .venv/bin/python benchmarks/bench_context.py [--rounds 5 --seconds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import make_bags, throughput  # noqa: E402
from quality_common import machine  # noqa: E402

from fractal_core.fitting.bags import BagSet  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.model import build_scorer  # noqa: E402
from fractal_core.fitting.objectives import bag_objective  # noqa: E402

SPECS: dict[str, dict[str, object]] = {
    "mlp": {"kind": "mlp"},
    "context causal (rank 64)": {"kind": "context", "causal": True},
    "context bidirectional (rank 64)": {"kind": "context", "causal": False},
    "context causal, rank 128": {"kind": "context", "causal": True, "rank": 128},
}


def spec_throughput(spec: dict[str, object], bags: BagSet, *, batch: int, seconds: float) -> float:
    model = build_scorer(spec, bags.sent_emb.shape[1], n_classes=2, hidden=None, generator=torch.Generator())
    objective = bag_objective(TrainConfig(), "max", {"bag": 0.9, "cosine": 0.1})
    return throughput(objective, bags, batch=batch, seconds=seconds, model=model)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bags", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bags = make_bags(args.bags, 384).with_cosine_target()
    rates: dict[str, list[float]] = {name: [] for name in SPECS}
    for _ in range(args.rounds):
        for name, spec in SPECS.items():
            rates[name].append(spec_throughput(spec, bags, batch=64, seconds=args.seconds))
    m = machine()
    print(
        f"{m['date']}, {m['cpu']}, {m['nproc']} cores, load {m['loadavg'][0]:.1f}, torch {m['torch']}, 1 thread"
    )
    print(f"{args.bags} bags, {bags.n_sentences} sentences, 384-d, 64 bags per batch, {args.rounds} rounds")
    base = statistics.median(rates["mlp"])
    print("| scorer | bags/s (median) | range | cost vs MLP |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name} | {med:,.0f} | {min(values):,.0f}-{max(values):,.0f} | {base / med:.2f}× |")


if __name__ == "__main__":
    main()
