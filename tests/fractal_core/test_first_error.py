"""The first-error distribution given Y against enumeration, the most likely first error, top-k hit rates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fractal_core.evaluation.metrics import first_error_accuracy, first_error_top_k
from fractal_core.mil.posterior import (
    first_error_from_scores,
    first_error_log_distribution,
    most_likely_first_error,
)


def brute_first(p: list[float]) -> list[float]:
    """P(first positive = i | some positive) by enumerating every labelling of one bag."""
    n = len(p)
    mass = [0.0] * n
    for combo in itertools.product((0, 1), repeat=n):
        if not any(combo):
            continue
        weight = math.prod(p[i] if v else 1 - p[i] for i, v in enumerate(combo))
        mass[combo.index(1)] += weight
    total = sum(mass)
    return [m / total for m in mass]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_error_distribution_matches_enumeration(n_classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = [1, 4, 2, 6, 3]
    logp = torch.log_softmax(torch.randn(sum(sizes), n_classes, generator=g, dtype=torch.float64) * 2, 1)
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    got = first_error_log_distribution(logp, bag_index, len(sizes)).exp()
    positive = 1 - logp[:, 0].exp()  # P(level >= 1)
    want = [v for b in range(len(sizes)) for v in brute_first(positive[bag_index == b].tolist())]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-9, rtol=1e-7)


def test_extreme_scores_stay_finite() -> None:
    p = torch.tensor([1.0, 1.0, 0.0, 0.5, 0.0, 0.0])
    bag_index = torch.tensor([0, 0, 0, 1, 1, 1])
    logp = torch.stack([torch.log1p(-p), torch.log(p)], 1).clamp_min(-1e4)
    out = first_error_log_distribution(logp, bag_index, 2).exp()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:3].sum(), torch.tensor(1.0))
    assert out[0] > 0.99 and out[3] > 0.99  # the first sure error, and the only possible one


def test_most_likely_first_error_prefers_the_earlier_likely_error() -> None:
    # Marginal argmax is step 2 (0.9), but step 0 (0.8) is probably wrong already: first = 0.
    scores = torch.tensor([0.8, 0.1, 0.9, 0.2, 0.3, 0.6, 0.1])
    bag_index = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    labels = torch.tensor([1.0, 0.0, float("nan")])
    index, probability = first_error_from_scores(scores, bag_index, labels)
    assert index.tolist() == [0, -1, 0]  # bag 1 is labelled clean; unlabelled bag 2 is read as erroneous
    expected = 0.8 / (0.8 + 0.2 * 0.1 + 0.2 * 0.9 * 0.9)  # p_i * prod_{j<i} (1 - p_j), normalised
    assert probability[0].item() == pytest.approx(expected, rel=1e-4)
    assert probability[1].item() == 0.0
    empty_index, _ = most_likely_first_error(
        torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    )
    assert empty_index.shape == (0,)


def test_top_k_hit_rate_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, 60)
    bag_index = np.repeat(np.arange(60), sizes)
    n = len(bag_index)
    score = np.round(rng.random(n), 1)  # ties on purpose: the earlier sentence ranks first
    gold = np.where(rng.random(n) < 0.2, 1, np.where(rng.random(n) < 0.2, -1, 0))
    for k in (1, 2, 3):
        hits = []
        for b in range(60):
            idx = np.flatnonzero(bag_index == b)
            pos = idx[gold[idx] >= 1]
            if not len(pos):
                continue
            ranked = sorted(idx, key=lambda i: (-score[i], i))
            hits.append(pos[0] in ranked[:k])
        assert first_error_top_k(gold, score, bag_index, 60, k=k) == pytest.approx(np.mean(hits))
    assert first_error_top_k(gold, score, bag_index, 60, k=1) == first_error_accuracy(
        gold, score, bag_index, 60
    )
    assert np.isnan(first_error_top_k(np.zeros(n, dtype=int), score, bag_index, 60))
