"""Training throughput (bags/s) of the vectorised suite vs a straightforward per-bag loop of the same loss.

Same data, same model, same objective (BagLoss noisy-OR + cosine prior + correlation prior), same run.
The loop version is what a direct port of the reference does: for each bag, score its sentences, aggregate,
add the priors, then backward once per batch.

    .venv/bin/python benchmarks/bench_train.py [--bags 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import torch

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer
from fractal_core.fitting.objectives import bag_objective
from fractal_core.mil.losses import bag_loss, correlation_prior, cosine_prior


def make_bags(n_bags: int, dim: int, seed: int = 0) -> BagSet:
    """ProcessBench-like shapes: 1..15 sentences per bag (mean ~8), 384-d unit embeddings."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 16, (n_bags,), generator=g)
    n = int(sizes.sum())
    bags = BagSet(
        sent_emb=torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1),
        bag_index=torch.repeat_interleave(torch.arange(n_bags), sizes),
        ctx_emb=torch.nn.functional.normalize(torch.randn(n_bags, dim, generator=g), dim=1),
        win_bag=torch.arange(n_bags),
        labels=torch.randint(0, 2, (n_bags,), generator=g).float(),
        gold=torch.full((n,), -1, dtype=torch.long),
    )
    return bags.with_cosine_target().with_correlation_pairs()


def loop_objective(weights: dict[str, float]):
    """The same loss, one bag at a time (the straightforward implementation)."""

    def objective(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
        total = torch.zeros(())
        counts = batch.sentence_counts().tolist()
        start = 0
        for b, size in enumerate(counts):
            sl = slice(start, start + size)
            one = BagSet(
                sent_emb=batch.sent_emb[sl],
                bag_index=torch.zeros(size, dtype=torch.long),
                ctx_emb=batch.ctx_emb[b : b + 1],
                win_bag=torch.zeros(1, dtype=torch.long),
                labels=batch.labels[b : b + 1],
                gold=batch.gold[sl],
            )
            logp = model(one)
            idx = torch.arange(size)
            pi, pj = idx.repeat_interleave(size), idx.repeat(size)
            c = batch.sent_emb[sl] - batch.sent_emb[sl].mean(1, keepdim=True)
            c = torch.nn.functional.normalize(c, dim=1)
            r = ((1 + (c[pi] * c[pj]).sum(1)) / 2).clamp(0, 1)
            assert batch.cos_target is not None
            loss = weights["bag"] * bag_loss(
                logp, one.bag_index, one.labels, aggregation="max", variant=TrainConfig().bag_variant
            )
            loss = loss + weights["cosine"] * cosine_prior(logp, one.bag_index, 1, batch.cos_target[sl])
            loss = loss + weights["correlation"] * correlation_prior(logp, one.bag_index, 1, pi, pj, r)
            total = total + loss
            start += size
        return total / len(counts)

    return objective


def throughput(
    objective, bags: BagSet, *, batch: int, seconds: float, model: SentenceScorer | None = None
) -> float:
    """Bags per second of AdamW steps on ``objective`` for ``seconds`` (``model``: the default MLP if None)."""
    if model is None:
        model = SentenceScorer(bags.sent_emb.shape[1], generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    done, started = 0, time.perf_counter()
    order = torch.randperm(bags.n_bags, generator=torch.Generator().manual_seed(1))
    while time.perf_counter() - started < seconds:
        for s in range(0, bags.n_bags, batch):
            mini = bags.select(order[s : s + batch])
            loss = objective(model, mini)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += mini.n_bags
            if time.perf_counter() - started >= seconds:
                break
    return done / (time.perf_counter() - started)


def matmul_peak(seconds: float = 2.0) -> float:
    """Measured float32 GFLOP/s of a 2048^3 matmul on this machine, now (the practical peak)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        done += 1
    return done * 2 * 2048**3 / (time.perf_counter() - started) / 1e9


def flops_per_bag(bags: BagSet, dim: int) -> float:
    """Forward + backward FLOPs of the scorer per bag (backward ~ 2x forward), from the model's shapes."""
    hidden = dim
    per_sentence = (
        hidden * dim + hidden * (hidden // 2) + hidden // 2
    )  # sentence projection + mid + out (MACs)
    per_window = hidden * dim  # the context projection, once per bag
    macs = bags.n_sentences * per_sentence + bags.ctx_emb.shape[0] * per_window
    return 3 * 2 * macs / bags.n_bags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bags", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bags = make_bags(args.bags, args.dim)
    weights = {"bag": 0.7 / 0.9, "cosine": 0.1 / 0.9, "correlation": 0.1 / 0.9}
    vec = bag_objective(TrainConfig(), "max", weights)
    # Same loss value on the same batch: the two implementations agree before they are timed.
    model = SentenceScorer(args.dim, generator=torch.Generator().manual_seed(0))
    probe = bags.select(torch.arange(32))
    with torch.no_grad():
        a, b = float(vec(model, probe)), float(loop_objective(weights)(model, probe))
    assert abs(a - b) < 1e-4 * max(1.0, abs(a)), (a, b)
    fast = throughput(vec, bags, batch=args.batch, seconds=args.seconds)
    slow = throughput(loop_objective(weights), bags, batch=args.batch, seconds=args.seconds)
    cpu = subprocess.run(
        ["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True
    ).stdout.strip()
    print(f"machine: {cpu or platform.processor()}, {args.threads} threads, torch {torch.__version__}")
    print(f"data: {args.bags} bags, {bags.n_sentences} sentences, dim {args.dim}, batch {args.batch} bags")
    print(f"loss agreement on a probe batch: vectorised {a:.6f} vs loop {b:.6f}")
    print(f"vectorised: {fast:,.0f} bags/s   per-bag loop: {slow:,.0f} bags/s   ratio: {fast / slow:.1f}x")
    peak = matmul_peak()
    useful = fast * flops_per_bag(bags, args.dim) / 1e9
    print(
        f"vectorised useful work: {useful:.1f} GFLOP/s = {100 * useful / peak:.0f}% of a 2048^3 float32 matmul "
        f"measured in this run ({peak:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
