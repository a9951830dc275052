"""Preference pairs trained beside the responses' own labels: the combined objective (balanced PrefBagLoss +
BagLoss), its batches of pairs and labelled responses, and the estimator's fit and read-outs."""

from __future__ import annotations

import math

import pytest
import torch

from fractal_core.errors import InputError
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.methods import fresh_scorer
from fractal_core.fitting.objectives import bag_objective, preference_objective
from fractal_core.fitting.pairs import pair_bags
from fractal_core.fitting.preference import (
    PREFERENCE_WITH_LABELS,
    PairsAndLabels,
    combined_objective,
    fit_preference,
    pair_label_terms,
)
from tests.fractal_core.synthetic import planted_bags

CONFIG = TrainConfig(max_epochs=4, patience=2, device="cpu")


def _pairs(bags: BagSet, n_pairs: int, seed: int) -> torch.Tensor:
    """(K, 2) [chosen, rejected] bag ids: of two bags, the one with fewer planted errors is chosen."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, bags.n_bags, (n_pairs,), generator=g)
    b = torch.randint(0, bags.n_bags, (n_pairs,), generator=g)
    errors = torch.zeros(bags.n_bags).index_add(0, bags.bag_index, (bags.gold >= 1).float())
    keep = errors[a] != errors[b]
    a, b = a[keep], b[keep]
    return torch.stack(
        [torch.where(errors[a] < errors[b], a, b), torch.where(errors[a] < errors[b], b, a)], 1
    )


def _data(seed: int = 0) -> tuple[BagSet, BagSet, BagSet]:
    """(bags, their pairs laid out for the preference loss, the first 40 bags as labelled responses)."""
    bags = planted_bags(80, seed=seed, positive_rate=0.3)
    index = _pairs(bags, 120, seed)
    paired = pair_bags(bags, index[:, 0], index[:, 1], torch.ones(len(index)))
    return bags, paired, bags.select(torch.arange(40))


def _scorer(bags: BagSet, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return fresh_scorer({"kind": "mlp"}, int(bags.sent_emb.shape[1]), 2, CONFIG, g, bags.device)


def _none(bags: BagSet) -> BagSet:
    return bags.select(torch.zeros(0, dtype=torch.long))


def test_units_batch_pairs_and_labelled_responses_together() -> None:
    bags, paired, labelled = _data()
    units = PairsAndLabels(paired, labelled)
    assert units.n_pairs == paired.n_bags // 2 and units.n_bags == units.n_pairs + 40
    k = units.n_pairs
    batch = units.select(torch.tensor([k + 3, 1, k, 0]))
    assert batch.n_pairs == 2 and batch.labelled.n_bags == 2
    # Both bags of each pair, in pair order (chosen, rejected), and the labelled responses' own labels.
    assert torch.equal(batch.pairs.labels, paired.labels[[2, 3, 0, 1]])
    assert torch.equal(batch.labelled.labels, labelled.labels[[3, 0]])
    head = units.head(5)
    assert head.n_pairs == 5 and head.labelled.n_bags == 5


def test_without_labels_the_objective_is_the_preference_loss_and_the_fit_is_pairs_alone() -> None:
    bags, paired, labelled = _data()
    model = _scorer(bags)
    batch = PairsAndLabels(paired, _none(labelled))
    got = combined_objective(CONFIG, "max", scales=(0.7, 3.0))(model, batch)
    assert torch.allclose(got, 0.7 * preference_objective(model, paired))
    alone = fit_preference(paired, None, config=CONFIG, seed=0)
    empty = fit_preference(paired, None, config=CONFIG, seed=0, labelled=_none(labelled))
    assert alone.method == empty.method == "preference"
    assert alone.model is not None and empty.model is not None
    for a, b in zip(alone.model.state_dict().values(), empty.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_without_the_pairs_term_the_objective_is_bag_loss() -> None:
    bags, paired, labelled = _data()
    model = _scorer(bags)
    batch = PairsAndLabels(paired, labelled)
    got = combined_objective(CONFIG, "max", scales=(0.7, 3.0), pair_weight=0.0)(model, batch)
    expected = 3.0 * bag_objective(CONFIG, "max", {"bag": 1.0})(model, labelled)
    assert float(expected.detach()) > 0 and torch.allclose(got, expected)


def test_gradient_flows_from_both_terms() -> None:
    bags, paired, labelled = _data()
    model = _scorer(bags)
    pref, labels = pair_label_terms(CONFIG, "max")(model, PairsAndLabels(paired, labelled))
    grads = []
    for term in (pref, labels):
        model.zero_grad()
        term.backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert all(float(g.abs().sum()) > 0 for g in grads)
    assert not torch.allclose(grads[0] / grads[0].norm(), grads[1] / grads[1].norm())
    model.zero_grad()
    (pref + labels).backward()
    both = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(both, grads[0] + grads[1], atol=1e-6)


def test_the_combined_fit_starts_both_terms_at_one_and_early_stops_on_both() -> None:
    bags, paired, labelled = _data()
    held = planted_bags(30, seed=5, positive_rate=0.3)
    held_index = _pairs(held, 40, 5)
    held_pairs = pair_bags(held, held_index[:, 0], held_index[:, 1], torch.ones(len(held_index)))
    result = fit_preference(
        paired, held_pairs, config=CONFIG, seed=0, labelled=labelled, labelled_valid=held, aggregation="max"
    )
    assert result.method == PREFERENCE_WITH_LABELS
    stage = result.stages[0]
    # Balanced: each term is 1 under the fresh scorer, so the first epoch's mean loss is near 2.
    assert 1.0 < stage.train_loss[0] < 2.5
    # The validation score is the same balanced sum over the held-out pairs and labelled responses (negated).
    assert all(-3.0 < v < 0 for v in stage.valid_score)
    with pytest.raises(ValueError, match="label of their own"):
        nan = BagSet(**{**labelled.__dict__, "labels": torch.full_like(labelled.labels, math.nan)})
        fit_preference(paired, None, config=CONFIG, seed=0, labelled=nan)


def test_the_estimator_trains_beside_the_labels_it_has_and_reads_them_out() -> None:
    bags = planted_bags(120, seed=0, positive_rate=0.3)
    index = _pairs(bags, 160, 0)
    # Half the responses carry no label of their own (NaN): they train through their pairs only.
    labels = torch.where(
        torch.arange(bags.n_bags) % 2 == 0, bags.labels, torch.full_like(bags.labels, math.nan)
    )
    bags = BagSet(**{**bags.__dict__, "labels": labels})
    prefs = torch.ones(len(index))
    calibrate = TrainConfig(max_epochs=4, patience=2, device="cpu", calibrate=True)
    beside = FractalModel(config=calibrate, seed=0).fit_preference_bags(bags, index, prefs, aggregation="max")
    assert beside.resolved_method_ == PREFERENCE_WITH_LABELS
    assert beside.trained_from_ == {"pairs": len(index), "labelled_responses": 60}
    # Read out as a fit on response labels: the bag calibration when asked for, the step calibration and the
    # figures on the held-out labelled responses.
    assert (
        beside.calibration_ is not None and "trained from preferences" not in beside.step_calibration_.reason
    )
    assert "valid_instance_auc_roc" in beside.metrics_
    alone = FractalModel(config=calibrate, seed=0).fit_preference_bags(
        bags, index, prefs, aggregation="max", response_labels="alone"
    )
    assert alone.resolved_method_ == "preference" and alone.calibration_ is None
    assert alone.trained_from_ == {"pairs": len(index), "labelled_responses": 0}
    with pytest.raises(InputError) as err:
        FractalModel(config=CONFIG).fit_preference_bags(
            bags, index, prefs, aggregation="max", response_labels="x"
        )
    assert err.value.field == "response_labels"


def test_labels_of_another_aggregation_are_refused_before_any_work() -> None:
    from dataclasses import replace

    from fractal_core.data.demo import demo_path
    from fractal_core.data.io import read_records

    records = [replace(r, aggregation="max") for r in read_records(demo_path())[:4]]
    with pytest.raises(ValueError, match="max labels, not mean"):
        FractalModel(config=CONFIG).fit_preferences(records, [(0, 1, 1.0)], aggregation="mean")
