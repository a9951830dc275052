"""Every vectorised aggregation and loss equals a plain per-bag reference on random ragged bags."""

from __future__ import annotations

import math

import pytest
import torch

from fractal_core.mil.aggregate import aggregate, log1mexp
from fractal_core.mil.losses import (
    bag_loss,
    correlation_prior,
    cosine_prior,
    instance_loss,
    pref_bag_loss,
    soft_cross_entropy,
)
from fractal_core.mil.reductions import gather_ranges, segment_argmax, segment_logsumexp, segment_mean


def ragged(sizes: list[int], n_classes: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    logits = torch.randn(n, n_classes, generator=g, dtype=torch.float64) * 2
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.log_softmax(logits, 1).requires_grad_(True), bag_index


SIZES = [[1], [3], [1, 1, 1], [4, 1, 7, 2, 1], [10, 3, 1, 5]]


def per_bag(logp: torch.Tensor, bag_index: torch.Tensor):
    return [logp[bag_index == b] for b in range(int(bag_index.max()) + 1)]


def ref_max(lp: torch.Tensor, variant: str, temperature: float) -> torch.Tensor:
    p = lp.exp()
    if lp.shape[1] == 2:
        if variant == "hard":
            return lp[int(torch.argmax(p[:, 1]))]
        if variant == "lse":
            z = (lp[:, 1] - lp[:, 0]) / temperature
            bag_logit = temperature * torch.log(torch.sum(torch.exp(z)))
            q = torch.sigmoid(bag_logit)
            return torch.log(torch.stack([1 - q, q]))
        p0 = torch.prod(p[:, 0])
        return torch.log(torch.stack([p0, 1 - p0]))
    if variant == "hard":
        expected = (p * torch.arange(lp.shape[1], dtype=p.dtype)).sum(1)
        return lp[int(torch.argmax(expected))]
    cdf = torch.cumsum(p, 1)  # (n, C)
    bag_cdf = torch.prod(cdf, 0)  # P(max <= c)
    pmf = torch.cat([bag_cdf[:1], bag_cdf[1:] - bag_cdf[:-1]])
    return torch.log(pmf)


def ref_min(lp: torch.Tensor, variant: str, temperature: float) -> torch.Tensor:
    p = lp.exp()
    if variant == "hard":
        return lp[int(torch.argmin(p[:, 1]))]
    if variant == "lse":
        z = (lp[:, 1] - lp[:, 0]) / temperature
        q = torch.sigmoid(-temperature * torch.log(torch.sum(torch.exp(-z))))
        return torch.log(torch.stack([1 - q, q]))
    p1 = torch.prod(p[:, 1])
    return torch.log(torch.stack([1 - p1, p1]))


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("variant", ["hard", "prob", "lse"])
def test_max_and_min_match_per_bag_reference(sizes: list[int], variant: str) -> None:
    logp, bag_index = ragged(sizes)
    for name, ref in (("max", ref_max), ("min", ref_min)):
        got = aggregate(logp, bag_index, len(sizes), aggregation=name, variant=variant, temperature=0.5)
        want = torch.stack([ref(lp, variant, 0.5) for lp in per_bag(logp, bag_index)])
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)
        grad = torch.autograd.grad(got[:, 1].sum() + got[:, 0].sum(), logp)[0]
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("variant", ["hard", "prob"])
@pytest.mark.parametrize("n_classes", [3, 5])
def test_ordinal_max_matches_per_bag_reference(sizes: list[int], variant: str, n_classes: int) -> None:
    logp, bag_index = ragged(sizes, n_classes=n_classes, seed=3)
    got = aggregate(logp, bag_index, len(sizes), aggregation="max", variant=variant)
    want = torch.stack([ref_max(lp, variant, 0.1) for lp in per_bag(logp, bag_index)])
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(len(sizes), dtype=got.dtype))
    assert torch.isfinite(torch.autograd.grad(got.sum(), logp)[0]).all()


def test_ordinal_max_of_sure_sentences_is_the_largest_level() -> None:
    levels = torch.tensor([0, 2, 1])
    logp = torch.log(torch.nn.functional.one_hot(levels, 3).double() * (1 - 3e-9) + 1e-9)
    out = aggregate(logp, torch.zeros(3, dtype=torch.long), 1, aggregation="max")
    assert int(out.argmax(1)) == 2


@pytest.mark.parametrize("sizes", SIZES)
def test_mean_matches_reference(sizes: list[int]) -> None:
    logp, bag_index = ragged(sizes)
    got = aggregate(logp, bag_index, len(sizes), aggregation="mean")
    want = torch.stack([lp[:, 1].exp().mean() for lp in per_bag(logp, bag_index)])
    torch.testing.assert_close(got, want)


def test_log1mexp_is_accurate_at_both_ends() -> None:
    import mpmath

    mpmath.mp.dps = 60

    points = [-1e-10, -1e-3, -0.5, -1.0, -30.0]
    want = torch.tensor(
        [float(mpmath.log(1 - mpmath.exp(mpmath.mpf(v)))) for v in points], dtype=torch.float64
    )
    torch.testing.assert_close(log1mexp(torch.tensor(points, dtype=torch.float64)), want, rtol=1e-7, atol=0)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("aggregation", ["max", "min", "mean"])
def test_bag_loss_matches_reference(sizes: list[int], aggregation: str) -> None:
    logp, bag_index = ragged(sizes, seed=5)
    g = torch.Generator().manual_seed(1)
    if aggregation == "mean":
        labels = torch.rand(len(sizes), generator=g, dtype=torch.float64)
    else:
        labels = torch.randint(0, 2, (len(sizes),), generator=g).double()
    got = bag_loss(logp, bag_index, labels, aggregation=aggregation, variant="prob")
    terms = []
    for b, lp in enumerate(per_bag(logp, bag_index)):
        if aggregation == "mean":
            terms.append((lp[:, 1].exp().mean() - labels[b]) ** 2)
        else:
            ref = ref_max if aggregation == "max" else ref_min
            terms.append(-ref(lp, "prob", 0.1)[int(labels[b])])
    torch.testing.assert_close(got, torch.stack(terms).mean())
    assert torch.isfinite(torch.autograd.grad(got, logp)[0]).all()


@pytest.mark.parametrize("sizes", SIZES)
def test_priors_match_reference(sizes: list[int]) -> None:
    logp, bag_index = ragged(sizes, seed=7)
    n_bags = len(sizes)
    g = torch.Generator().manual_seed(2)
    target = torch.rand(logp.shape[0], generator=g, dtype=torch.float64)
    got_cos = cosine_prior(logp, bag_index, n_bags, target)
    got_l1 = cosine_prior(logp, bag_index, n_bags, target, kind="l1")
    # Pairs: every ordered pair inside a bag, random R.
    pi, pj = [], []
    for b in range(n_bags):
        idx = torch.nonzero(bag_index == b).flatten().tolist()
        pi += [i for i in idx for _ in idx]
        pj += [j for _ in idx for j in idx]
    pair_i, pair_j = torch.tensor(pi), torch.tensor(pj)
    pair_r = torch.rand(len(pi), generator=g, dtype=torch.float64)
    got_corr = correlation_prior(logp, bag_index, n_bags, pair_i, pair_j, pair_r)
    cos_terms, l1_terms, corr_terms = [], [], []
    for b in range(n_bags):
        mask = bag_index == b
        p = logp[mask][:, 1].exp()
        t = target[mask]
        cos_terms.append(torch.mean(-(t * torch.log(p) + (1 - t) * torch.log(1 - p))))
        l1_terms.append(torch.mean((p - t).abs()))
        sel = mask[pair_i]
        P = logp[:, 1].exp()
        a, c, r = P[pair_i[sel]], P[pair_j[sel]], pair_r[sel]
        corr_terms.append((((1 - a) * (1 - c) - r).abs() * (a * c - r).abs()).sum() / mask.sum())
    torch.testing.assert_close(got_cos, torch.stack(cos_terms).mean())
    torch.testing.assert_close(got_l1, torch.stack(l1_terms).mean())
    torch.testing.assert_close(got_corr, torch.stack(corr_terms).mean())
    for value in (got_cos, got_corr):
        assert torch.isfinite(torch.autograd.grad(value, logp, retain_graph=True)[0]).all()


def test_instance_losses_and_preference() -> None:
    logp, bag_index = ragged([3, 2, 4], seed=9)
    labels = torch.tensor([0, -1, 1, 1, -1, 0, 0, 1, -1])
    mask = labels >= 0
    want = -torch.stack([logp[i, labels[i]] for i in range(9) if mask[i]]).mean()
    torch.testing.assert_close(instance_loss(logp, labels), want)
    q = torch.softmax(torch.randn(9, 2, dtype=torch.float64), 1)
    torch.testing.assert_close(soft_cross_entropy(logp, q), -(q * logp).sum(1).mean())
    first, second = torch.tensor([0, 1]), torch.tensor([2, 0])
    pref = torch.tensor([1.0, 0.0], dtype=torch.float64)
    s = torch.stack([lp[:, 1].exp().mean() for lp in per_bag(logp, bag_index)])
    p2 = s[second] / (s[first] + s[second])
    want_pref = -(pref * torch.log(p2) + (1 - pref) * torch.log(1 - p2)).mean()
    torch.testing.assert_close(pref_bag_loss(logp, bag_index, 3, first, second, pref), want_pref)


def test_segment_helpers() -> None:
    values = torch.tensor([3.0, 1.0, 3.0, -2.0, 5.0, 5.0])
    bag_index = torch.tensor([0, 0, 0, 1, 2, 2])
    assert segment_argmax(values, bag_index, 4).tolist() == [0, 3, 4, -1]
    torch.testing.assert_close(segment_mean(values, bag_index, 3), torch.tensor([7 / 3, -2.0, 5.0]))
    want = torch.tensor([math.log(2 * math.exp(3) + math.exp(1)), -2.0, math.log(2) + 5])
    torch.testing.assert_close(segment_logsumexp(values, bag_index, 3), want)
    assert gather_ranges(torch.tensor([5, 0, 2]), torch.tensor([2, 0, 3])).tolist() == [5, 6, 2, 3, 4]
