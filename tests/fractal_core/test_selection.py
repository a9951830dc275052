"""Active gold selection: posterior maths against brute force, strategies' behaviour, the records wrapper."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fractal_core.data.records import ResponseRecord, Span
from fractal_core.evaluation.gold_queue import select_gold
from fractal_core.evaluation.selection import (
    STRATEGIES,
    bag_embeddings,
    bag_posterior,
    bag_probability,
    select_gold_bags,
    select_gold_indices,
    strategy_scores,
)
from fractal_core.fitting.bags import BagSet


def _brute_posterior(p: np.ndarray, y: int, aggregation: str) -> np.ndarray:
    """P(y_i = 1 | AGG(y) = y) by enumerating every labelling of one bag."""
    num = np.zeros(len(p))
    den = 0.0
    for labels in itertools.product((0, 1), repeat=len(p)):
        lab = np.array(labels)
        agg = lab.max() if aggregation == "max" else lab.min()
        if agg != y:
            continue
        weight = float(np.prod(np.where(lab == 1, p, 1 - p)))
        den += weight
        num += weight * lab
    return num / den


@pytest.mark.parametrize("aggregation", ["max", "min"])
def test_posterior_matches_enumeration(aggregation: str) -> None:
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 4, 5]
    p = rng.uniform(0.05, 0.95, sum(sizes))
    bag_index = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.array([1, 0, 1, 0, 1], dtype=np.float64)
    got = bag_posterior(
        torch.tensor(p), torch.tensor(bag_index), torch.tensor(labels), aggregation=aggregation
    )
    for b in range(len(sizes)):
        want = _brute_posterior(p[bag_index == b], int(labels[b]), aggregation)
        np.testing.assert_allclose(got[bag_index == b].numpy(), want, atol=1e-6)
    # The noisy-OR (product) reading of P(Y = 1), checked against enumeration.
    q = bag_probability(
        torch.tensor(p), torch.tensor(bag_index), len(sizes), aggregation=aggregation, variant="prob"
    ).numpy()
    for b in range(len(sizes)):
        pb = p[bag_index == b]
        want_q = 1 - np.prod(1 - pb) if aggregation == "max" else np.prod(pb)
        assert q[b] == pytest.approx(want_q, abs=1e-6)


def test_posterior_keeps_scores_of_unlabelled_and_ordinal_levels_are_binarised() -> None:
    p = torch.tensor([0.3, 0.6, 0.2, 0.9])
    bag_index = torch.tensor([0, 0, 1, 1])
    post = bag_posterior(p, bag_index, torch.tensor([float("nan"), 2.0]), aggregation="max")
    assert torch.allclose(post[:2], p[:2])
    want = _brute_posterior(np.array([0.2, 0.9]), 1, "max")  # level 2 is positive in the binary view
    np.testing.assert_allclose(post[2:].numpy(), want, atol=1e-6)


def _toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # bag 0: Y=0, uncertain scores (the posterior knows them: all 0); bag 1: Y=1, uncertain scores;
    # bag 2: Y=1, confident and consistent; bag 3: Y=1 but every score near 0 (inconsistent); bag 4: Y=0, one 0.97.
    score = torch.tensor([0.5, 0.5, 0.45, 0.55, 0.99, 0.01, 0.02, 0.01, 0.97, 0.01])
    bag_index = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])
    return score, bag_index, labels


def test_strategies_rank_the_bags_they_are_meant_to() -> None:
    score, bag_index, labels = _toy()
    pick = lambda s, k=1: select_gold_indices(score, bag_index, labels, aggregation="max", k=k, strategy=s)  # noqa: E731
    assert pick("uncertainty", 2) == [1, 0] or pick("uncertainty", 2) == [0, 1]
    # Bag 0 is fully determined by its label Y = 0; bags 1 and 3 (Y = 1, which sentence?) are open.
    assert set(pick("posterior", 2)) == {1, 3}
    assert set(pick("inconsistency", 2)) == {3, 4}  # Y=1 with no positive score; Y=0 with a 0.97 score


def test_already_candidates_k_and_determinism() -> None:
    score, bag_index, labels = _toy()
    for strategy in STRATEGIES:
        emb = torch.eye(5, 8)
        kwargs = dict(aggregation="max", strategy=strategy, bag_embedding=emb)
        picks = select_gold_indices(score, bag_index, labels, k=3, seed=4, already=[1], **kwargs)
        assert len(picks) == len(set(picks)) == 3 and 1 not in picks
        assert picks == select_gold_indices(score, bag_index, labels, k=3, seed=4, already=[1], **kwargs)
        every = select_gold_indices(score, bag_index, labels, k=99, already=[0, 2], **kwargs)
        assert sorted(every) == [1, 3, 4]
        only = select_gold_indices(
            score, bag_index, labels, k=5, candidates=torch.tensor([0, 0, 1, 0, 1]).bool(), **kwargs
        )
        assert sorted(only) == [2, 4]
    with pytest.raises(ValueError, match="unknown strategy"):
        select_gold_indices(score, bag_index, labels, aggregation="max", k=1, strategy="oracle")
    with pytest.raises(ValueError, match="bag_embedding"):
        select_gold_indices(score, bag_index, labels, aggregation="max", k=1, strategy="diverse")


def test_balanced_keeps_the_label_shares_and_ranks_inside_each() -> None:
    # 8 bags labelled 1 (bags 0 and 3 leave their sentences open), 4 labelled 0: k = 5 -> 5 * 8/12 = 3.33 and
    # 5 * 4/12 = 1.67 -> 3 positives + 2 negatives (the remainder goes to the larger fractional part).
    score = torch.tensor([0.5, 0.5, 0.99, 0.99, 0.45, 0.55, 0.99, 0.98, 0.97, 0.96, 0.1, 0.2, 0.3, 0.4])
    bag_index = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    labels = torch.tensor([1.0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1])
    picks = select_gold_indices(score, bag_index, labels, aggregation="max", k=5, strategy="balanced")
    chosen = labels[torch.tensor(picks)]
    assert int((chosen >= 1).sum()) == 3 and int((chosen == 0).sum()) == 2
    assert {0, 3} <= set(picks)  # the two open positive bags come first among the positives


def test_random_differs_by_seed_and_diverse_spreads_over_clusters() -> None:
    n = 40
    score = torch.full((n,), 0.5)
    bag_index = torch.arange(n)
    labels = torch.ones(n)
    a = select_gold_indices(score, bag_index, labels, aggregation="max", k=10, strategy="random", seed=0)
    b = select_gold_indices(score, bag_index, labels, aggregation="max", k=10, strategy="random", seed=1)
    assert a != b
    # Four tight clusters of ten bags: four picks must land in four different clusters.
    centres = torch.eye(4, 16)
    emb = centres.repeat_interleave(10, 0) + 0.01 * torch.randn(
        n, 16, generator=torch.Generator().manual_seed(0)
    )
    picks = select_gold_indices(
        score, bag_index, labels, aggregation="max", k=4, strategy="diverse", bag_embedding=emb
    )
    assert sorted(p // 10 for p in picks) == [0, 1, 2, 3]


def test_bagset_and_records_wrappers_agree() -> None:
    rng = np.random.default_rng(1)
    sizes = [3, 1, 4, 2, 5, 2]
    n = sum(sizes)
    emb = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(n, 8)), dtype=torch.float32), dim=1)
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    bags = BagSet(
        sent_emb=emb,
        bag_index=bag_index,
        ctx_emb=emb[: len(sizes)],
        win_bag=torch.arange(len(sizes)),
        labels=labels,
        gold=torch.full((n,), -1),
    )
    score = torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32)
    records = [
        ResponseRecord(
            id=str(b), context="q", text="x", spans=[Span(0, 1, "x")] * size, response_label=float(labels[b])
        )
        for b, size in enumerate(sizes)
    ]
    per_record = np.split(score.numpy(), np.cumsum(sizes)[:-1])
    per_emb = np.split(emb.numpy(), np.cumsum(sizes)[:-1])
    for strategy in STRATEGIES:
        from_bags = select_gold_bags(bags, score, k=3, strategy=strategy, seed=2, aggregation="max")
        from_records = select_gold(records, per_record, k=3, strategy=strategy, seed=2, embeddings=per_emb)
        assert from_bags.tolist() == sorted(from_records)
    with pytest.raises(ValueError, match="sentences but scores"):
        select_gold(records, [s[:-1] for s in per_record], k=1)


def test_reason_strings_name_the_figures_each_strategy_ranks_by() -> None:
    from fractal_core.evaluation.gold_queue import selection_reasons
    from fractal_core.evaluation.selection import STRATEGIES
    from fractal_core.mil.variants import DEFAULT_BAG_VARIANT

    score = torch.tensor([0.5, 0.45, 0.05, 0.9, 0.95, 0.1, 0.02], dtype=torch.float64)
    bag_index = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    labels = torch.tensor([1.0, 0.0, float("nan")], dtype=torch.float64)
    picks = [0, 1, 2]
    got = {
        s: selection_reasons(score, bag_index, labels, picks, aggregation="max", strategy=s, variant="prob")
        for s in STRATEGIES
    }
    assert all(len(v) == 3 and all(v) for v in got.values())
    # Bag 0 (label 1): sentences 0 and 1 stay unsure given the label; sentence 2 does not.
    assert got["posterior"][0].startswith("2 of 3 sentences unsure given the label 1")
    # Bag 1 is labelled 0: given the label every sentence is 0, so nothing is unsure ...
    assert got["posterior"][1].startswith("0 of 2 sentences unsure given the label 0")
    # ... but its scores contradict the label, which is what 'inconsistency' says.
    assert got["inconsistency"][1].startswith("label 0 but the scores give P(an error somewhere) = 0.99")
    # Left out, the variant is the training default (hard: the highest sentence score, 0.95 here).
    assert DEFAULT_BAG_VARIANT == "hard"
    hard = selection_reasons(score, bag_index, labels, picks, aggregation="max", strategy="inconsistency")
    assert hard[1].startswith("label 0 but the scores give P(an error somewhere) = 0.95")
    assert got["inconsistency"][2].startswith("unlabelled")
    assert got["uncertainty"][0].startswith("2 of 3 sentence scores unsure")
    assert got["balanced"][0].startswith("most informative among the label 1 responses")
    assert got["representative"][0].startswith(
        "most uncertain among the label 1 responses of its length (3 sent"
    )
    assert got["representative"][0].endswith("2 of 3 sentence scores unsure (mean entropy 0.76 bit)")
    assert got["representative-posterior"][0].startswith(
        "most informative among the label 1 responses of its"
    )
    assert got["representative-posterior"][0].endswith(
        "2 of 3 sentences unsure given the label 1 (entropy 0.74 bit)"
    )
    assert (
        got["stratified"][1] == "random draw keeping the pool's label and length shares; label 0, 2 sentences"
    )
    with pytest.raises(ValueError, match="unknown strategy"):
        selection_reasons(score, bag_index, labels, picks, aggregation="max", strategy="magic")


def test_balanced_order_interleaves_the_strata_and_sentence_budgets_cut_it() -> None:
    from fractal_core.evaluation.selection import within_sentence_budget

    # 6 bags labelled 1, 3 labelled 0: the full ranking alternates two positives, one negative.
    score = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.9, 0.8, 0.7])
    bag_index = torch.arange(9)
    labels = torch.tensor([1.0, 1, 1, 1, 1, 1, 0, 0, 0])
    picks = select_gold_indices(score, bag_index, labels, aggregation="max", k=9, strategy="balanced")
    assert [int(labels[i]) for i in picks] == [1, 0, 1, 1, 0, 1, 1, 0, 1]
    sizes = torch.tensor([3, 1, 1, 1, 1, 1, 1, 1, 1])
    assert within_sentence_budget([0, 1, 2], sizes, 4) == [0, 1]  # 3 + 1 sentences fit, a third bag does not
    assert within_sentence_budget([0, 1], sizes, 2) == [0]  # the first pick is always kept
    assert within_sentence_budget([], sizes, 5) == []


def _label_length_pool() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """120 bags: label 1 / 0 (2 : 1) x length 2 / 4 / 8 / 16 sentences (one length quartile each), scores
    seeded. Returns (score (N,), bag_index (N,), labels (B,), sizes (B,))."""
    cells = [(y, n) for y in (1.0, 0.0) for n in (2, 4, 8, 16)]
    per_cell = {(y, n): 20 if y else 10 for y, n in cells}
    labels = torch.tensor([y for y, n in cells for _ in range(per_cell[(y, n)])], dtype=torch.float64)
    sizes = torch.tensor([n for y, n in cells for _ in range(per_cell[(y, n)])])
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))  # strata not contiguous
    labels, sizes = labels[perm], sizes[perm]
    bag_index = torch.repeat_interleave(torch.arange(len(labels)), sizes)
    score = torch.rand(int(sizes.sum()), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return score, bag_index, labels, sizes


@pytest.mark.parametrize("strategy", ["representative", "representative-posterior", "stratified"])
def test_label_length_strata_reproduce_the_pool_mix_at_every_prefix(strategy: str) -> None:
    score, bag_index, labels, sizes = _label_length_pool()
    order = select_gold_indices(score, bag_index, labels, aggregation="max", k=120, strategy=strategy, seed=1)
    assert sorted(order) == list(range(120))
    for k in (30, 60):  # a quarter and a half of the pool: exactly the pool's share of every cell
        picks = torch.tensor(order[:k])
        for y in (1.0, 0.0):
            for n in (2, 4, 8, 16):
                in_pool = int(((labels == y) & (sizes == n)).sum())
                got = int(((labels[picks] == y) & (sizes[picks] == n)).sum())
                assert abs(got - in_pool * k / 120) < 1, (y, n, k)
    # A sentence budget cut of the order buys the pool's mean length, so about the pool's share of responses.
    from fractal_core.evaluation.selection import within_sentence_budget

    bought = within_sentence_budget(order, sizes, int(sizes.sum()) // 4)
    assert abs(len(bought) - 30) <= 2
    # 'uncertainty' alone, on the same budget, buys the short responses (their mean entropy is noisier).
    unc = select_gold_indices(score, bag_index, labels, aggregation="max", k=120, strategy="uncertainty")
    assert len(within_sentence_budget(unc, sizes, int(sizes.sum()) // 4)) > len(bought) + 5


def test_representative_ranks_by_uncertainty_inside_each_stratum_and_stratified_by_seed() -> None:
    score, bag_index, labels, sizes = _label_length_pool()
    from fractal_core.evaluation.selection import strategy_scores

    entropy = strategy_scores(score, bag_index, labels, aggregation="max", strategy="uncertainty")
    order = select_gold_indices(score, bag_index, labels, aggregation="max", k=120, strategy="representative")
    for y in (1.0, 0.0):
        for n in (2, 4, 8, 16):
            cell = [b for b in order if labels[b] == y and sizes[b] == n]
            assert torch.all(torch.diff(entropy[torch.tensor(cell)]) <= 0), (y, n)  # most uncertain first
    pick = lambda seed: select_gold_indices(  # noqa: E731
        score, bag_index, labels, aggregation="max", k=30, strategy="stratified", seed=seed
    )
    assert pick(0) == pick(0) and set(pick(0)) != set(pick(1))  # seeded random inside the strata


def test_length_bins_are_quantiles_of_the_candidates_only() -> None:
    from fractal_core.evaluation.selection import length_bins

    sizes = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 100, 200])
    allowed = torch.tensor([True] * 8 + [False, False])
    bins = length_bins(sizes, allowed)
    assert bins.tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        3,
        3,
    ]  # quartiles of 1..8; the long non-candidates at the top
    assert length_bins(sizes, torch.zeros(10, dtype=torch.bool)).tolist() == [0] * 10


def test_diverse_over_float16_bags_keeps_the_former_means_and_picks() -> None:
    """Bag means filled chunk by chunk equal, bit for bit, the former whole-matrix computation (concatenated
    chunk means), and the greedy picks made over those float32 means (cosines from one product and the norms,
    no unit copy) are the picks of the former loop over a whole float64 unit copy."""
    from fractal_core.fitting.bags import CHUNK_BAGS
    from fractal_core.mil.reductions import segment_mean

    rng = np.random.default_rng(5)
    n_bags = 2 * CHUNK_BAGS + 123  # several chunks, the last one partial
    sizes = torch.tensor(rng.integers(1, 4, n_bags))
    bag_index = torch.repeat_interleave(torch.arange(n_bags), sizes)
    n = int(bag_index.shape[0])
    sent = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(n, 24)), dtype=torch.float32), dim=1)
    labels = torch.tensor(rng.integers(0, 2, n_bags), dtype=torch.float32)
    bags = BagSet(
        sent_emb=sent.half(),
        bag_index=bag_index,
        ctx_emb=sent[:n_bags].half(),
        win_bag=torch.arange(n_bags),
        labels=labels,
        gold=torch.full((n,), -1),
    )
    former = torch.cat(
        [
            torch.nn.functional.normalize(segment_mean(c.sent_emb, c.bag_index, c.n_bags), dim=1)
            for c in bags.chunks()
        ]
    )
    means = bag_embeddings(bags)
    assert means.dtype == torch.float32 and torch.equal(means, former)
    score = torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32)
    picks = select_gold_bags(bags, score, k=25, strategy="diverse", seed=3, sort=False)

    # The former greedy loop, on the whole float64 copy.
    s64, lab64 = score.double(), labels.double()
    weight = strategy_scores(s64, bag_index, lab64, aggregation="max", strategy="posterior")
    weight = 0.1 + weight / weight.max()
    unit = torch.nn.functional.normalize(former.double(), dim=1)
    jitter = torch.rand(n_bags, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dist = torch.full((n_bags,), 2.0, dtype=torch.float64)
    want: list[int] = []
    for _ in range(25):
        gain = weight * dist + 1e-9 * jitter
        if want:
            gain[torch.tensor(want)] = float("-inf")
        want.append(int(torch.argmax(gain)))
        dist = torch.minimum(dist, 1.0 - unit @ unit[want[-1]])
    assert picks.tolist() == want
