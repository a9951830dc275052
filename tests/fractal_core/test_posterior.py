"""The bag-conditioned posterior equals brute-force enumeration over every labelling of small bags."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fractal_core.mil import posterior
from fractal_core.mil.posterior import count_log_likelihood, posterior_scores


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


def test_unknown_labels_keep_the_marginal() -> None:
    logp = torch.log_softmax(torch.randn(5, 2, dtype=torch.float64), 1)
    bag_index = torch.tensor([0, 0, 1, 1, 1])
    labels = torch.tensor([float("nan"), 0.0], dtype=torch.float64)
    got = posterior_scores(logp, bag_index, labels, aggregation="max")
    torch.testing.assert_close(got[:2], logp[:2, 1].exp())
    assert got[2:].abs().max() == 0  # a clean max bag: every sentence is fine
    unknown = torch.tensor([float("nan"), float("nan")], dtype=torch.float64)
    torch.testing.assert_close(
        posterior_scores(logp, bag_index, unknown, aggregation="mean"), logp[:, 1].exp()
    )


def brute_count(lp: torch.Tensor, k: int) -> tuple[list[float], float]:
    """P(y_i >= 1 | exactly k sentences are positive) and P(k positives), by enumeration."""
    p = (1 - lp[:, 0].exp()).tolist()
    n = len(p)
    num = [0.0] * n
    total = 0.0
    for combo in itertools.product((0, 1), repeat=n):
        if sum(combo) != k:
            continue
        weight = math.prod(p[i] if v else 1 - p[i] for i, v in enumerate(combo))
        total += weight
        for i, v in enumerate(combo):
            num[i] += weight * v
    return [x / total for x in num], total


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mean_posterior_matches_enumeration(n_classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = [1, 5, 3, 6, 2, 4]
    logp = torch.log_softmax(torch.randn(sum(sizes), n_classes, generator=g, dtype=torch.float64) * 2, 1)
    # Bags in an interleaved (unsorted) order, as the selection code may pass them.
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    perm = torch.randperm(len(bag_index), generator=g)
    logp, bag_index = logp[perm], bag_index[perm]
    counts = [int(torch.randint(0, n + 1, (1,), generator=g)) for n in sizes]
    labels = torch.tensor([k / n for k, n in zip(counts, sizes, strict=True)], dtype=torch.float64)
    got = posterior_scores(logp, bag_index, labels, aggregation="mean")
    want = torch.zeros(len(bag_index), dtype=torch.float64)
    likelihood = []
    for b, k in enumerate(counts):
        post, total = brute_count(logp[bag_index == b], k)
        want[bag_index == b] = torch.tensor(post, dtype=torch.float64)
        likelihood.append(math.log(total))
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(
        count_log_likelihood(logp, bag_index, labels), torch.tensor(likelihood, dtype=torch.float64)
    )


def test_mean_posterior_chunks_long_bags_like_one_table(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(5)
    sizes = torch.randint(1, 30, (40,), generator=g)
    logp = torch.log_softmax(torch.randn(int(sizes.sum()), 2, generator=g, dtype=torch.float64), 1)
    bag_index = torch.repeat_interleave(torch.arange(40), sizes)
    labels = torch.rand(40, generator=g, dtype=torch.float64)
    whole = posterior_scores(logp, bag_index, labels, aggregation="mean")
    whole_ll = count_log_likelihood(logp, bag_index, labels)
    monkeypatch.setattr(posterior, "_PAD_BUDGET", 2000)  # forces many chunks
    torch.testing.assert_close(posterior_scores(logp, bag_index, labels, aggregation="mean"), whole)
    torch.testing.assert_close(count_log_likelihood(logp, bag_index, labels), whole_ll)


def test_count_likelihood_has_finite_gradients_at_impossible_counts() -> None:
    z = torch.tensor([8.0, -8.0, 3.0], requires_grad=True)
    logp = torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], 1)
    loss = -count_log_likelihood(logp, torch.tensor([0, 0, 1]), torch.tensor([1.0, 0.0])).sum()
    loss.backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())
    assert float(z.grad[1]) < 0  # the count asks for more positives: the negative sentence is pushed up
