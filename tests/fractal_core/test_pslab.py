"""PsLab output always agrees with the bag label, keeps gold labels, and is the most likely such labelling."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fractal_core.mil.pslab import pseudo_labels


@st.composite
def bags(draw, n_classes: int = 2, aggregation: str = "max"):
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=6))
    n = sum(sizes)
    logits = torch.tensor(
        draw(
            st.lists(
                st.lists(st.floats(-6, 6), min_size=n_classes, max_size=n_classes), min_size=n, max_size=n
            )
        ),
        dtype=torch.float64,
    )
    labels = torch.tensor(
        draw(
            st.lists(
                st.integers(0, n_classes - 1 if aggregation == "max" else 1),
                min_size=len(sizes),
                max_size=len(sizes),
            )
        ),
        dtype=torch.float64,
    )
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.log_softmax(logits, 1), bag_index, labels


def _check(y: torch.Tensor, bag_index: torch.Tensor, labels: torch.Tensor, aggregation: str) -> None:
    for b in range(labels.shape[0]):
        members = y[bag_index == b]
        agg = members.max() if aggregation == "max" else members.min()
        assert int(agg) == int(labels[b])


@settings(max_examples=150, deadline=None)
@given(data=bags())
def test_binary_max_consistent(data) -> None:
    logp, bag_index, labels = data
    _check(pseudo_labels(logp, bag_index, labels, aggregation="max"), bag_index, labels, "max")


@settings(max_examples=150, deadline=None)
@given(data=bags(aggregation="min"))
def test_binary_min_consistent(data) -> None:
    logp, bag_index, labels = data
    _check(pseudo_labels(logp, bag_index, labels, aggregation="min"), bag_index, labels, "min")


@settings(max_examples=150, deadline=None)
@given(data=bags(n_classes=4))
def test_ordinal_max_consistent(data) -> None:
    logp, bag_index, labels = data
    _check(pseudo_labels(logp, bag_index, labels, aggregation="max"), bag_index, labels, "max")


@settings(max_examples=100, deadline=None)
@given(data=bags(), seed=st.integers(0, 1000))
def test_gold_labels_are_kept_and_result_still_consistent(data, seed: int) -> None:
    logp, bag_index, _ = data
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 2, (logp.shape[0],), generator=g)
    labels = torch.zeros(int(bag_index.max()) + 1, dtype=torch.float64).scatter_reduce(
        0, bag_index, truth.double(), "amax"
    )
    gold = torch.where(torch.rand(logp.shape[0], generator=g) < 0.5, truth, torch.full_like(truth, -1))
    y = pseudo_labels(logp, bag_index, labels, aggregation="max", gold=gold)
    assert torch.equal(y[gold >= 0], gold[gold >= 0])
    _check(y, bag_index, labels, "max")


@settings(max_examples=60, deadline=None)
@given(data=bags())
def test_binary_max_is_the_most_likely_consistent_labelling(data) -> None:
    """Brute force over every labelling of small bags: PsLab's log-likelihood is the maximum."""
    logp, bag_index, labels = data
    y = pseudo_labels(logp, bag_index, labels, aggregation="max")
    for b in range(labels.shape[0]):
        lp = logp[bag_index == b]
        best = max(
            sum(float(lp[i, c]) for i, c in enumerate(combo))
            for combo in itertools.product((0, 1), repeat=lp.shape[0])
            if max(combo) == int(labels[b])
        )
        got = sum(float(lp[i, int(c)]) for i, c in enumerate(y[bag_index == b]))
        assert got >= best - 1e-9
