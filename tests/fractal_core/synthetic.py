"""A planted task whose sentence labels are recoverable from the embeddings (shared by tests and benchmarks)."""

from __future__ import annotations

import torch

from fractal_core.fitting.bags import BagSet


def planted_bags(
    n_bags: int = 300,
    *,
    dim: int = 32,
    max_size: int = 8,
    aggregation: str = "max",
    n_classes: int = 2,
    positive_rate: float = 0.2,
    seed: int = 0,
    task_seed: int = 0,
) -> BagSet:
    """Bags of 1..max_size sentences; a sentence's level is a linear function of its embedding.

    Labels come from a hidden direction: level = number of thresholds the projection passes. The bag label is
    the max / min / mean of the sentence labels, so everything is learnable from bag labels alone.
    """
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, max_size + 1, (n_bags,), generator=g)
    n = int(sizes.sum())
    bag_index = torch.repeat_interleave(torch.arange(n_bags), sizes)
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    # The hidden task (direction, context) depends on task_seed only, so splits drawn with different seeds share it.
    task = torch.Generator().manual_seed(10_000 + task_seed)
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=task), dim=0)
    proj = emb @ direction
    # Thresholds at upper quantiles so that `positive_rate` of sentences are >= level 1.
    qs = torch.linspace(1 - positive_rate, 1 - positive_rate / 4, n_classes - 1)
    thresholds = torch.quantile(proj, qs)  # per split: rates stay as asked; the direction is what transfers
    gold = (proj.view(-1, 1) > thresholds.view(1, -1)).sum(1)
    if aggregation == "max":
        labels = torch.zeros(n_bags, dtype=torch.long).scatter_reduce(0, bag_index, gold, "amax")
    elif aggregation == "min":
        labels = torch.ones(n_bags, dtype=torch.long).scatter_reduce(0, bag_index, gold, "amin")
    else:
        labels = torch.zeros(n_bags).index_add(0, bag_index, gold.float()) / sizes.float()
    # One shared context: a per-bag random context would let a model memorise bag labels instead of learning
    # sentence labels.
    ctx = (
        torch.nn.functional.normalize(torch.randn(1, dim, generator=task), dim=1).expand(n_bags, dim).clone()
    )
    return BagSet(
        sent_emb=emb,
        bag_index=bag_index,
        ctx_emb=ctx,
        win_bag=torch.arange(n_bags),
        labels=labels.float(),
        gold=gold.long(),
    )
