"""The first-error (hazard) objective: exact against a loop over bags, finite gradients, and the method built on it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import LossWeights, TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.first_error import choose_first_error_rule, default_rule
from fractal_core.fitting.fit import fit_method
from fractal_core.fitting.objectives import logp_validator
from fractal_core.mil.hazard import (
    first_error_protocol,
    first_gold_problem,
    hazard_loss,
    hazard_terms,
    step_positions,
)
from tests.fractal_core.synthetic import planted_bags


def _brute(logp: torch.Tensor, sizes: list[int], labels: list[float], gold: list[int], rank: float) -> float:
    """The loss by a plain loop over bags and steps, straight from the definition."""
    p = 1.0 - logp[:, 0].exp()  # P(problem) per step = the hazard
    start, exact, conditional = 0, [], []
    for size, y in zip(sizes, labels, strict=True):
        h = p[start : start + size].tolist()
        g = gold[start : start + size]
        none = math.prod(1 - x for x in h)
        first = next((i for i, v in enumerate(g) if v >= 1), None)
        if first is not None:
            joint = h[first] * math.prod(1 - x for x in h[:first])
            exact.append(math.log(joint))
            conditional.append(math.log(joint / (1 - none)))
        else:
            exact.append(math.log(1 - none) if y >= 1 else math.log(none))
        start += size
    loss = -sum(exact) / len(exact)
    if conditional:
        loss -= rank * sum(conditional) / len(conditional)
    return loss


CASE = {
    # bag 0: gold first error at step 2 (steps after it unlabelled); bag 1: label 1, no gold; bag 2: label 0;
    # bag 3: gold, all fine, label 0; bag 4: gold first error at step 0; bag 5: one step, label 1
    "sizes": [4, 3, 2, 3, 2, 1],
    "labels": [1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
    "gold": [0, 0, 1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 1, -1, -1],
}


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("rank", [0.0, 1.5])
def test_matches_a_loop_over_bags(n_classes: int, rank: float) -> None:
    sizes, labels, gold = CASE["sizes"], CASE["labels"], CASE["gold"]
    g = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.randn(sum(sizes), n_classes, generator=g, dtype=torch.float64), dim=1)
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    got = hazard_loss(logp, bag_index, torch.tensor(labels), torch.tensor(gold), rank=rank)
    assert float(got) == pytest.approx(_brute(logp, sizes, labels, gold, rank), rel=1e-10)


def test_positions_and_first_problems() -> None:
    bag_index = torch.repeat_interleave(torch.arange(6), torch.tensor(CASE["sizes"]))
    assert step_positions(bag_index, 6).tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 0]
    assert first_gold_problem(torch.tensor(CASE["gold"]), bag_index, 6).tolist() == [2, -1, -1, -1, 0, -1]


@pytest.mark.parametrize("rank", [0.0, 1.0])
def test_gradients_are_finite_at_extreme_scores(rank: float) -> None:
    sizes = CASE["sizes"]
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    values = [-40.0, 40.0, 0.0, -30.0, 25.0, -25.0, 0.1, -50.0, 50.0, -20.0, -20.0, -20.0, 30.0, 0.0, -60.0]
    logits = torch.tensor(values, requires_grad=True)
    logp = torch.nn.functional.logsigmoid(torch.stack([-logits, logits], dim=1))
    loss = hazard_loss(logp, bag_index, torch.tensor(CASE["labels"]), torch.tensor(CASE["gold"]), rank=rank)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    # The exact likelihood does not judge the steps after a gold first error; the ranking term does (they are
    # the alternatives to it in the first-error distribution given the label).
    assert (float(logits.grad[3]) == 0.0) == (rank == 0.0)


def test_a_batch_is_the_mean_of_its_bags() -> None:
    """Vectorised over bags: each bag's term does not depend on the others in the batch."""
    sizes, labels, gold = CASE["sizes"], CASE["labels"], CASE["gold"]
    g = torch.Generator().manual_seed(5)
    logp = torch.log_softmax(torch.randn(sum(sizes), 2, generator=g, dtype=torch.float64), dim=1)
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    exact, conditional, has_first = hazard_terms(logp, bag_index, torch.tensor(labels), torch.tensor(gold))
    start = 0
    for b, size in enumerate(sizes):
        one, cond, first = hazard_terms(
            logp[start : start + size],
            torch.zeros(size, dtype=torch.long),
            torch.tensor(labels[b : b + 1]),
            torch.tensor(gold[start : start + size]),
        )
        assert float(one[0]) == pytest.approx(float(exact[b]))
        assert float(cond[0]) == pytest.approx(float(conditional[b])) and bool(first[0]) == bool(has_first[b])
        start += size
    assert has_first.tolist() == [True, False, False, False, True, False]


def test_hazard_is_a_method_of_the_suite() -> None:
    assert "hazard" in registry.METHOD_NAMES
    plan = registry.resolve("hazard", has_gold=True, aggregation="max")
    assert plan.stages == ("bag",) and not plan.needs_gold
    assert plan.loss_weights == pytest.approx({"hazard": 0.9, "cosine": 0.1})
    assert plan.config.valid_metric == "first_error"  # its own likelihood, unless the config names another
    bag = TrainConfig(valid_metric="bag")
    assert (
        registry.resolve("hazard", has_gold=True, aggregation="max", config=bag).config.valid_metric == "bag"
    )
    alone = registry.resolve(
        "hazard", has_gold=False, aggregation="max", config=TrainConfig(weights=LossWeights(cosine=0.0))
    )
    assert alone.loss_weights == {"hazard": 1.0}
    assert "first error given the label (weight 1)" in registry.describe_method("hazard")
    with pytest.raises(ValueError, match="needs responses labelled by their worst step"):
        registry.resolve("hazard", has_gold=True, aggregation="mean")
    assert default_rule("hazard") == "first_error_mode" and default_rule("hybrid") == "top_given_label"


def test_hazard_trains_and_keeps_its_own_f_key_rule() -> None:
    train = planted_bags(120, dim=8, max_size=5, seed=1)
    valid = planted_bags(60, dim=8, max_size=5, seed=2)
    valid.gold[:] = -1  # no gold first error to choose a rule by: each model keeps its default
    config = TrainConfig(max_epochs=3, patience=2)
    result = fit_method("hazard", FitContext(train, valid, "max", 2, config, 0))
    assert result.method == "hazard" and result.model is not None
    assert [s.stage for s in result.stages] == ["bag"]
    hazard = FractalModel("hazard", config=config, seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    bagloss = FractalModel("bagloss", config=config, seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    assert hazard.first_error_rule_.rule == "first_error_mode"
    assert bagloss.first_error_rule_.rule == "top_given_label"


@pytest.mark.parametrize("default", ["top_given_label", "first_error_mode", "calibrated_mode"])
def test_the_default_rule_wins_ties(default: str) -> None:
    """One-step responses: every rule names the same step, so the rules tie and the default is kept."""
    n = 30
    scores = np.linspace(0.05, 0.95, n)
    gold = np.where(np.arange(n) % 2 == 0, 1, 0)
    choice = choose_first_error_rule(
        scores, gold, np.arange(n), gold.astype(np.float64), aggregation="max", default=default
    )
    assert choice.rule == default and choice.n_erroneous == n // 2
    with pytest.raises(ValueError, match="unknown first-error rule"):
        choose_first_error_rule(
            scores, gold, np.arange(n), gold.astype(np.float64), aggregation="max", default="x"
        )


def _first_error_gold(bags: BagSet) -> BagSet:
    """The planted bags with the first-error protocol: nothing labelled after a bag's first positive."""
    first = first_gold_problem(bags.gold, bags.bag_index, bags.n_bags)[bags.bag_index]
    after = (first >= 0) & (step_positions(bags.bag_index, bags.n_bags) > first)
    return replace(bags, gold=torch.where(after, torch.full_like(bags.gold, -1), bags.gold))


def test_auto_offers_hazard_on_first_error_data_only() -> None:
    names = [
        c.name
        for c in registry.resolve("fractal", has_gold=True, aggregation="max", first_error=True).candidates
    ]
    assert names[-3:] == ["hazard(fold 1)", "hazard(fold 2)", "hazard"]
    hazard = registry.resolve("fractal", has_gold=True, aggregation="max", first_error=True).candidates[-1]
    assert hazard.refit and hazard.plan.config.scorer == registry.AUTO_HAZARD_SCORER
    assert "hazard" not in [
        c.name for c in registry.resolve("fractal", has_gold=True, aggregation="max").candidates
    ]
    train = _first_error_gold(planted_bags(160, dim=8, max_size=6, seed=1))
    assert first_error_protocol(train.gold, train.bag_index, train.n_bags)
    valid = _first_error_gold(planted_bags(60, dim=8, max_size=6, seed=2))
    config = TrainConfig(max_epochs=2, patience=1, min_gold_for_valid=5)
    result = fit_method("fractal", FitContext(train, valid, "max", 2, config, 0))
    assert result.selection is not None
    rows = {r["name"]: r for r in result.selection["candidates"]}
    assert {"hybrid", "hazard"} <= set(rows)
    assert np.isfinite(rows["hazard"]["score"]) and "gold_auc_given_y" in rows["hazard"]
    assert [s.stage for s in result.stages] == list(
        registry.training_stages("fractal", has_gold=True, aggregation="max", config=config, first_error=True)
    )
    # Full gold (not the first-error protocol): no hazard candidate.
    full = fit_method(
        "fractal", FitContext(planted_bags(160, dim=8, max_size=6, seed=1), valid, "max", 2, config, 0)
    )
    assert full.selection is not None and "hazard" not in {r["name"] for r in full.selection["candidates"]}


def test_early_stopping_on_the_first_error_likelihood() -> None:
    valid = _first_error_gold(planted_bags(40, dim=8, max_size=5, seed=2))
    config = TrainConfig(valid_metric="first_error")
    rule, mode = logp_validator(valid, aggregation="max", config=config)
    assert mode == "first_error" and rule is not None
    logp = torch.log_softmax(torch.randn(valid.n_sentences, 2, generator=torch.Generator().manual_seed(0)), 1)
    exact, _, _ = hazard_terms(logp, valid.bag_index, valid.labels, valid.gold)
    assert rule(logp) == pytest.approx(float(exact.mean()))
    with pytest.raises(ValueError, match="worst step"):
        logp_validator(valid, aggregation="mean", config=config)
