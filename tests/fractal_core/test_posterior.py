"""The bag-conditioned posterior equals brute-force enumeration over every labelling of small bags."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fractal_core.posterior import posterior_scores


def brute(lp: torch.Tensor, label: int, aggregation: str) -> list[float]:
    p = lp.exp().tolist()
    n, c = lp.shape
    num = [0.0] * n
    total = 0.0
    for combo in itertools.product(range(c), repeat=n):
        agg = max(combo) if aggregation == "max" else min(combo)
        if agg != label:
            continue
        weight = math.prod(p[i][v] for i, v in enumerate(combo))
        total += weight
        for i, v in enumerate(combo):
            if v >= 1:
                num[i] += weight
    return [x / total for x in num]


@pytest.mark.parametrize(("aggregation", "n_classes"), [("max", 2), ("max", 3), ("max", 4), ("min", 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posterior_matches_enumeration(aggregation: str, n_classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = [1, 3, 4, 2]
    logp = torch.log_softmax(torch.randn(sum(sizes), n_classes, generator=g, dtype=torch.float64) * 1.5, 1)
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    top = n_classes - 1 if aggregation == "max" else 1
    labels = torch.randint(0, top + 1, (len(sizes),), generator=g).double()
    got = posterior_scores(logp, bag_index, labels, aggregation=aggregation)
    want = [v for b in range(len(sizes)) for v in brute(logp[bag_index == b], int(labels[b]), aggregation)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-9, rtol=1e-7)


def test_unknown_labels_and_mean_bags_keep_the_marginal() -> None:
    logp = torch.log_softmax(torch.randn(5, 2, dtype=torch.float64), 1)
    bag_index = torch.tensor([0, 0, 1, 1, 1])
    labels = torch.tensor([float("nan"), 0.0], dtype=torch.float64)
    got = posterior_scores(logp, bag_index, labels, aggregation="max")
    torch.testing.assert_close(got[:2], logp[:2, 1].exp())
    assert got[2:].abs().max() == 0  # a clean max bag: every sentence is fine
    torch.testing.assert_close(
        posterior_scores(logp, bag_index, labels, aggregation="mean"), logp[:, 1].exp()
    )
