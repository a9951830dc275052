"""Preference pairs: the colouring given the preference (exact against enumeration) and pair bags."""

from __future__ import annotations

import itertools

import pytest
import torch

from fractal_core.fitting.pairs import colour_pairs, pair_bags, pair_strength, rejected_worse
from fractal_core.mil.preference_posterior import count_pmf, leave_one_out, preference_posterior
from tests.fractal_core.synthetic import planted_bags


def _logp(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.log1p(-p), torch.log(p)], 1)


def _enumerated(
    p: torch.Tensor, bag_index: torch.Tensor, strength: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """P(y_i = 1 | preference[, labels]) by summing over every labelling of each pair (the definition): a
    labelling that disagrees with an entered label has no weight; the mixture keeps the events still possible
    and a sure tie keeps P(y_i = 1 | labels)."""
    out = torch.zeros_like(p)
    for k in range(len(strength)):
        members = [i for i in range(len(p)) if int(bag_index[i]) // 2 == k]
        lost, won = torch.zeros_like(p), torch.zeros_like(p)
        p_lost = p_won = p_all = 0.0
        given = torch.zeros_like(p)
        for ys in itertools.product((0, 1), repeat=len(members)):
            weight = 1.0
            for i, y in zip(members, ys, strict=True):
                weight *= float(p[i]) if y else 1.0 - float(p[i])
                if labels is not None and not bool(torch.isnan(labels[i])):
                    weight *= float(y == int(labels[i] >= 1))
            p_all += weight
            for i, y in zip(members, ys, strict=True):
                given[i] += weight * y
            n_chosen = sum(y for i, y in zip(members, ys, strict=True) if int(bag_index[i]) == 2 * k)
            n_rejected = sum(ys) - n_chosen
            for event, acc in ((n_rejected > n_chosen, lost), (n_chosen > n_rejected, won)):
                if event:
                    for i, y in zip(members, ys, strict=True):
                        acc[i] += weight * y
            p_lost += weight * (n_rejected > n_chosen)
            p_won += weight * (n_chosen > n_rejected)
        w = (1.0 + float(strength[k])) / 2.0
        w_lost, w_won = (w if p_lost > 0 else 0.0), ((1.0 - w) if p_won > 0 else 0.0)
        for i in members:
            if w_lost + w_won == 0:
                out[i] = given[i] / p_all
                continue
            mixed = w_lost * (lost[i] / p_lost if p_lost else 0.0) + w_won * (
                won[i] / p_won if p_won else 0.0
            )
            out[i] = mixed / (w_lost + w_won)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_preference_posterior_matches_enumeration(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([3, 2, 1, 4, 5, 2])
    p = torch.rand(int(sizes.sum()), generator=g, dtype=torch.float64) * 0.98 + 0.01
    p[0], p[3] = 0.99, 0.02  # both branches of the leave-one-out division
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    strength = torch.tensor([1.0, 0.3, 0.0], dtype=torch.float64)
    got = preference_posterior(_logp(p), bag_index, strength)
    assert torch.allclose(got, _enumerated(p, bag_index, strength), atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_preference_posterior_given_labels_matches_enumeration(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([3, 2, 1, 4, 5, 2, 2, 3])
    n = int(sizes.sum())
    p = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    strength = torch.tensor([1.0, 0.4, 0.0, 0.8], dtype=torch.float64)
    # About a third labelled, with ordinal levels (2 counts as wrong like 1).
    levels = torch.randint(0, 3, (n,), generator=g).double()
    labels = torch.where(torch.rand(n, generator=g) < 0.35, levels, torch.full((n,), float("nan")))
    got = preference_posterior(_logp(p), bag_index, strength, labels=labels)
    assert torch.allclose(got, _enumerated(p, bag_index, strength, labels), atol=1e-10)
    known = ~torch.isnan(labels)
    assert torch.equal(got[known], (labels[known] >= 1).double())  # a labelled sentence is known


def test_labels_that_rule_out_the_preference_keep_what_is_still_possible() -> None:
    p = torch.tensor([0.3, 0.6, 0.4, 0.5], dtype=torch.float64)
    bag_index = torch.tensor([0, 0, 1, 1])
    # The chosen response has two errors: the rejected one (two sentences) cannot have more.
    labels = torch.tensor([1.0, 1.0, float("nan"), float("nan")], dtype=torch.float64)
    for strength in (1.0, 0.6):
        got = preference_posterior(_logp(p), bag_index, torch.tensor([strength]), labels=labels)
        assert torch.allclose(got, _enumerated(p, bag_index, torch.tensor([strength]), labels), atol=1e-12)
    # A sure tie (every sentence labelled alike on both sides): the labels alone.
    tie = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.equal(preference_posterior(_logp(p), bag_index, torch.tensor([1.0]), labels=tie), tie)


def test_a_labelled_error_in_the_loser_explains_the_preference_away() -> None:
    p = torch.tensor([0.3, 0.3, 0.3, 0.3, 0.3], dtype=torch.float64)
    bag_index = torch.tensor([0, 0, 1, 1, 1])
    before = preference_posterior(_logp(p), bag_index, torch.tensor([1.0]))
    nan = float("nan")
    labels = torch.tensor([nan, nan, 1.0, nan, nan], dtype=torch.float64)
    after = preference_posterior(_logp(p), bag_index, torch.tensor([1.0]), labels=labels)
    assert float(after[2]) == 1.0
    assert bool((after[3:] < before[3:]).all())  # the loss is explained: the loser's other sentences fall


def test_leave_one_out_inverts_adding_the_sentence() -> None:
    p = torch.tensor([0.1, 0.7, 0.5, 0.95], dtype=torch.float64)
    bag_index = torch.zeros(4, dtype=torch.long)
    pmf = count_pmf(p, bag_index, 1)
    assert torch.allclose(pmf.sum(1), torch.ones(1, dtype=torch.float64))
    others = leave_one_out(pmf.expand(4, -1), p)
    for i in range(4):
        rest = torch.cat([p[:i], p[i + 1 :]])
        expected = count_pmf(rest, torch.zeros(3, dtype=torch.long), 1)[0]
        assert torch.allclose(others[i, :4], expected, atol=1e-12) and abs(float(others[i, 4])) < 1e-12


def test_colouring_moves_mass_to_the_loser() -> None:
    # Two identical responses: the preference alone decides which one's sentences explain it.
    p = torch.tensor([0.3, 0.3, 0.3, 0.3], dtype=torch.float64)
    bag_index = torch.tensor([0, 0, 1, 1])
    sure = preference_posterior(_logp(p), bag_index, torch.tensor([1.0]))
    assert bool((sure[2:] > 0.3).all()) and bool((sure[:2] < 0.3).all())
    none = preference_posterior(_logp(p), bag_index, torch.tensor([0.0]))
    # No preference: "one of the two is worse" with even odds colours both responses alike.
    assert torch.allclose(none[:2], none[2:], atol=1e-12)


def test_pair_bags_lay_out_chosen_then_rejected_with_the_strength() -> None:
    bags = planted_bags(6, seed=0)
    paired = pair_bags(bags, torch.tensor([0, 4]), torch.tensor([1, 2]), torch.tensor([1.0, 0.5]))
    assert paired.n_bags == 4
    assert paired.labels.tolist() == [0.0, 1.0, 0.0, 0.75]
    assert torch.allclose(pair_strength(paired), torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert rejected_worse(torch.tensor([0.0])).tolist() == [0.5]
    sizes = bags.sentence_counts()
    assert paired.n_sentences == int(sizes[[0, 1, 4, 2]].sum())
    logp = _logp(torch.full((paired.n_sentences,), 0.2, dtype=torch.float64))
    assert colour_pairs(logp, paired).shape == (paired.n_sentences,)
    with pytest.raises(ValueError, match="one entry per pair"):
        pair_bags(bags, torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([1.0]))


def test_trained_pairs_colour_errors_above_broadcast() -> None:
    """PrefBagLoss on pairs that differ in their share of planted errors: the colouring given the preference
    ranks the planted errors above the broadcast (which cannot rank inside a response)."""
    from fractal_core.evaluation.metrics import auc_roc
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.preference import fit_preference

    def pairs(n_bags: int, n_pairs: int, seed: int):
        bags = planted_bags(n_bags, seed=seed, positive_rate=0.3)
        g = torch.Generator().manual_seed(seed)
        a = torch.randint(0, n_bags, (n_pairs,), generator=g)
        b = torch.randint(0, n_bags, (n_pairs,), generator=g)
        errors = torch.zeros(n_bags).index_add(0, bags.bag_index, (bags.gold >= 1).float())
        keep = errors[a] != errors[b]
        a, b = a[keep], b[keep]
        chosen = torch.where(errors[a] < errors[b], a, b)
        rejected = torch.where(errors[a] < errors[b], b, a)
        return pair_bags(bags, chosen, rejected, torch.ones(len(chosen)))

    config = TrainConfig(max_epochs=30, patience=5, device="cpu")
    result = fit_preference(pairs(300, 1200, 1), pairs(80, 200, 2), config=config, seed=0)
    test = pairs(150, 300, 3)
    with torch.inference_mode():
        logp = result.model.eval()(test)
    gold = (test.gold >= 1).numpy()
    colour = colour_pairs(logp, test).numpy()
    broadcast = (test.bag_index % 2 == 1).double().numpy()
    assert auc_roc(gold, colour) > auc_roc(gold, broadcast) + 0.05


def test_train_pairs_and_score_scores_every_response_and_saves(tmp_path) -> None:
    import math
    from dataclasses import replace

    import numpy as np

    from fractal_core.data.demo import demo_path
    from fractal_core.data.io import read_records
    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.estimator import FractalModel
    from fractal_core.fitting.pairs_pipeline import train_pairs_and_score

    records = read_records(demo_path())[:24]
    # Half the responses keep no label of their own (as a pairs file's), which must not stop anything.
    records = [r if i % 2 else replace(r, response_label=math.nan) for i, r in enumerate(records)]
    pairs = [(i, i + 1, 1.0) for i in range(0, 22, 2)]
    n = sum(len(r.spans) for r in records)
    stages: list[str] = []
    result = train_pairs_and_score(
        records,
        pairs,
        sentence_ids=np.arange(n),
        response_ids=np.arange(len(records)) + 100,
        config=TrainConfig(max_epochs=2),
        progress=lambda stage, fraction, message: stages.append(stage),
    )
    # By default the 12 responses that carry a label train beside the 11 pairs; the others through their pairs.
    assert result.model.resolved_method_ == "preference+labels" and result.stages == ("preference",)
    assert result.model.trained_from_ == {"pairs": 11, "labelled_responses": 12}
    assert "preference" in stages
    scores = result.scored.scores
    assert scores.shape == (n,) and bool(np.all((scores >= 0) & (scores <= 1)))
    assert result.scored.response_ids.tolist() == list(range(100, 124))
    result.model.save(tmp_path / "m")
    again = FractalModel.load(tmp_path / "m")
    np.testing.assert_allclose(np.concatenate(again.predict(records)), scores, rtol=1e-5, atol=1e-6)
    alone = train_pairs_and_score(
        records,
        pairs,
        sentence_ids=np.arange(n),
        response_ids=np.arange(len(records)),
        config=TrainConfig(max_epochs=2),
        response_labels="alone",
    )
    assert alone.model.resolved_method_ == "preference"
    assert alone.model.trained_from_ == {"pairs": 11, "labelled_responses": 0}
