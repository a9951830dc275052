"""Step calibration: the ECE and paired AUC error rules, the fit of a temperature and bias, the choice of the
given-label view on valid, and the map kept with the model."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch

from fractal_core.evaluation.metrics import auc_roc, expected_calibration_error, paired_auc_se
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.step_calibration import StepCalibration, choose_given_label, fit_step_calibration
from tests.fractal_core.synthetic import planted_bags


def _logp(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], 1)


# ------------------------------------------------------------------------------------------------------ ECE
def test_ece_of_hand_made_cases() -> None:
    # Two steps at 0.5, one positive: the bin's rate equals its mean score.
    assert expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    # Certain and always wrong: every step is off by 1.
    assert expected_calibration_error(np.array([0, 0, 1]), np.array([1.0, 1.0, 0.0])) == pytest.approx(1.0)
    # Bin [0.1, 0.2): scores 0.15, 0.15, rate 1/2 -> gap 0.35; bin [0.9, 1]: 0.95, 1.0, 1.0, rate 2/3 ->
    # mean 0.98333, gap 0.31667. Weighted by 2/5 and 3/5.
    gold = np.array([0, 1, 1, 1, 0])
    score = np.array([0.15, 0.15, 0.95, 1.0, 1.0])
    assert expected_calibration_error(gold, score) == pytest.approx(0.4 * 0.35 + 0.6 * (2.95 / 3 - 2 / 3))
    # Unlabelled steps (-1) are left out; ordinal levels >= 1 count as positive.
    assert expected_calibration_error(np.array([2, -1, 0]), np.array([1.0, 0.3, 0.0])) == pytest.approx(0.0)
    assert np.isnan(expected_calibration_error(np.array([-1, -1]), np.array([0.2, 0.9])))


def test_ece_bins_are_equal_width_with_the_edges_in_the_upper_bin() -> None:
    # 0.1 belongs to bin [0.1, 0.2) with 0.19; with 0.09 it would be two bins of gap 0.09/0.1 each.
    got = expected_calibration_error(np.array([0, 0]), np.array([0.1, 0.19]))
    assert got == pytest.approx(0.145)
    assert expected_calibration_error(np.array([0, 0]), np.array([0.09, 0.1]), n_bins=10) == pytest.approx(
        0.095
    )


def test_paired_auc_se_matches_delong_by_pairs() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(40) < 0.4
    a = rng.normal(size=40) + y
    b = np.round(a + rng.normal(size=40) * 0.7, 1)  # ties inside b
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)

    def kernel(s: np.ndarray) -> np.ndarray:  # (P, Q) 1 / 0.5 / 0 per (positive, negative) pair
        return np.array([[float(s[i] > s[j]) + 0.5 * float(s[i] == s[j]) for j in neg] for i in pos])

    ka, kb = kernel(a), kernel(b)
    assert ka.mean() == pytest.approx(auc_roc(y, a)) and kb.mean() == pytest.approx(auc_roc(y, b))
    d = ka - kb
    var = np.var(d.mean(1), ddof=1) / len(pos) + np.var(d.mean(0), ddof=1) / len(neg)
    assert paired_auc_se(y, a, b) == pytest.approx(np.sqrt(var))
    assert paired_auc_se(y, a, b) == pytest.approx(paired_auc_se(y, b, a))
    assert paired_auc_se(y, a, a) == pytest.approx(0.0)
    assert np.isnan(paired_auc_se(np.array([True, False, False]), a[:3], b[:3]))


# ------------------------------------------------------------------------------------------------------ fit
def _steps(n_bags: int, seed: int) -> tuple[BagSet, torch.Tensor]:
    """Bags of 1..8 steps with a known true logit z (N,); gold and max labels drawn from sigmoid(z)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 9, (n_bags,), generator=g)
    bag_index = torch.repeat_interleave(torch.arange(n_bags), sizes)
    z = torch.randn(bag_index.shape[0], generator=g) * 1.5 - 2.0
    y = (torch.rand(z.shape, generator=g) < torch.sigmoid(z)).long()
    labels = torch.zeros(n_bags).scatter_reduce(0, bag_index, y.float(), "amax")
    bags = BagSet(
        sent_emb=torch.zeros(len(y), 2),
        bag_index=bag_index,
        ctx_emb=torch.zeros(n_bags, 2),
        win_bag=torch.arange(n_bags),
        labels=labels,
        gold=y,
    )
    return bags, z


@pytest.mark.parametrize(("scale", "bias"), [(2.5, 0.8), (0.5, -1.0)])
def test_fit_on_gold_steps_recovers_a_known_temperature_and_bias(scale: float, bias: float) -> None:
    bags, z = _steps(3000, seed=0)
    raw = _logp((z - bias) / scale)  # a scorer whose logit is the true one distorted
    fitted = fit_step_calibration(raw, bags, aggregation="max", n_classes=2, min_gold=20)
    assert fitted.fitted_on == "gold_steps" and fitted.n_fitted == bags.n_sentences
    assert fitted.scale == pytest.approx(scale, rel=0.08)
    assert fitted.bias == pytest.approx(bias, abs=0.12)
    # The calibrated probabilities are the true ones, and the marginal ranking is unchanged.
    q = fitted.apply_proba(raw.exp())[:, 1]
    torch.testing.assert_close(q, torch.sigmoid(z), atol=0.06, rtol=0)
    assert torch.equal(torch.argsort(q, stable=True), torch.argsort(raw[:, 1], stable=True))
    np.testing.assert_allclose(fitted.apply(raw[:, 1].exp().double().numpy()), q.double().numpy(), atol=1e-5)


def test_without_enough_gold_the_response_labels_fit_it() -> None:
    bags, z = _steps(4000, seed=1)
    few = torch.full_like(bags.gold, -1)
    few[:10] = bags.gold[:10]  # 10 gold steps < min_gold
    raw = _logp((z - 0.7) / 2.0)
    fitted = fit_step_calibration(raw, replace(bags, gold=few), aggregation="max", n_classes=2, min_gold=20)
    assert fitted.fitted_on == "response_labels" and fitted.n_fitted == 4000
    assert fitted.scale == pytest.approx(2.0, rel=0.1) and fitted.bias == pytest.approx(0.7, abs=0.15)
    # Nothing to fit on: the identity, which leaves probabilities alone.
    nothing = replace(bags, gold=torch.full_like(bags.gold, -1))
    identity = fit_step_calibration(raw, nothing, aggregation="mean", n_classes=2, min_gold=20)
    assert identity.fitted_on == "none" and identity.map == (1.0, 0.0)
    assert torch.equal(identity.apply_proba(raw.exp()), raw.exp())


def test_a_reversing_map_is_refused() -> None:
    bags, z = _steps(2000, seed=2)
    fitted = fit_step_calibration(_logp(-z), bags, aggregation="max", n_classes=2, min_gold=20)
    assert fitted.fitted_on == "none" and "reverse" in fitted.reason


def test_ordinal_calibration_keeps_the_scorers_split_of_the_levels() -> None:
    proba = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    got = StepCalibration(scale=0.5, bias=0.3, fitted_on="gold_steps").apply_proba(proba)
    torch.testing.assert_close(got.sum(1), torch.ones(2))
    torch.testing.assert_close(got[:, 1] / got[:, 2], proba[:, 1] / proba[:, 2])
    p = 1 - proba[:, 0]
    expected = torch.sigmoid(0.5 * torch.log(p / (1 - p)) + 0.3)
    torch.testing.assert_close(1 - got[:, 0], expected)


def test_given_label_choice_follows_the_one_standard_error_rule() -> None:
    bags, z = _steps(1500, seed=3)
    raw = _logp((z + 1.0) / 3.0).exp()  # far too flat and too high
    fitted = fit_step_calibration(raw.log(), bags, aggregation="max", n_classes=2, min_gold=20)
    chosen = choose_given_label(fitted, raw, bags, aggregation="max", min_gold=20)
    f = chosen.figures
    assert set(f) == {
        "ece_raw",
        "ece_calibrated",
        "auc_given_label_raw",
        "auc_given_label_calibrated",
        "auc_difference_se",
    }
    assert f["ece_calibrated"] < f["ece_raw"]
    assert chosen.given_label == (
        f["auc_given_label_calibrated"] >= f["auc_given_label_raw"] - f["auc_difference_se"]
    )
    assert "given-label view" in chosen.reason
    # Too little gold to choose: the raw view.
    few = torch.full_like(bags.gold, -1)
    few[:5] = bags.gold[:5]
    kept = choose_given_label(fitted, raw, replace(bags, gold=few), aggregation="max", min_gold=20)
    assert not kept.given_label and kept.figures == {}


# ------------------------------------------------------------------------------------------ with the model
def test_model_fits_exposes_and_saves_its_step_calibration(tmp_path: Path) -> None:
    train, valid, test = planted_bags(300, seed=1), planted_bags(80, seed=2), planted_bags(100, seed=3)
    model = FractalModel("bagloss", config=TrainConfig(max_epochs=4), seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    step = model.step_calibration_
    assert step.fitted_on == "gold_steps" and step.n_fitted == int((valid.gold >= 0).sum())
    raw, cal = model.predict_bags(test), model.predict_bags(test, calibrated=True)
    assert not torch.allclose(raw, cal)
    assert torch.equal(torch.argsort(raw, stable=True), torch.argsort(cal, stable=True))
    metrics = model.evaluate_bags(test)
    assert {"step_ece", "step_ece_calibrated", "posterior_auc_roc_calibrated"} <= set(metrics)
    assert "valid_step_ece_calibrated" in model.metrics_
    # The F key's calibrated_mode applies the same map the model stores.
    assert model.first_error_rule_.calibration == pytest.approx(step.map, abs=1e-4)
    model.save(tmp_path / "m")
    stored = json.loads((tmp_path / "m" / "model.json").read_text())["step_calibration"]
    assert stored["fitted_on"] == "gold_steps" and stored["n_fitted"] == step.n_fitted
    loaded = FractalModel.load(tmp_path / "m")
    assert loaded.step_calibration_ == step
    torch.testing.assert_close(loaded.predict_bags(test, calibrated=True), cal)
    # A model saved before step calibration loads with the identity.
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    del meta["step_calibration"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    old = FractalModel.load(tmp_path / "m")
    assert old.step_calibration_.fitted_on == "none"
    torch.testing.assert_close(old.predict_bags(test, calibrated=True), raw)


def test_without_valid_gold_the_map_comes_from_response_labels() -> None:
    train, valid = planted_bags(200, seed=1), planted_bags(60, seed=2)
    valid = replace(valid, gold=torch.full_like(valid.gold, -1))
    model = FractalModel("bagloss", config=TrainConfig(max_epochs=3), seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    assert model.step_calibration_.fitted_on == "response_labels"
    assert model.step_calibration_.n_fitted == 60 and not model.step_calibration_.given_label


@pytest.mark.parametrize(("given", "choice"), list(product([False, True], [False, True])))
def test_predict_uses_the_choice_only_for_the_given_label_view(given: bool, choice: bool) -> None:
    train, valid = planted_bags(150, seed=1), planted_bags(50, seed=2)
    model = FractalModel("bagloss", config=TrainConfig(max_epochs=2), seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    model.step_calibration_ = replace(model.step_calibration_, given_label=choice)
    bags = planted_bags(20, seed=4)
    picked = model.predict_proba_bags(bags, calibrated=given and choice)
    model._embed = lambda records: bags  # type: ignore[method-assign]
    got = np.concatenate(model.predict(_records(bags), given_labels=given))  # type: ignore[arg-type]
    if given:
        from fractal_core.mil.posterior import posterior_scores

        want = posterior_scores(picked.clamp_min(1e-12).log(), bags.bag_index, bags.labels, aggregation="max")
    else:
        want = 1 - picked[:, 0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


def _records(bags: BagSet) -> list[object]:
    """Stand-ins with as many spans as each bag has sentences (``predict`` splits its output by them)."""

    class _Record:
        def __init__(self, n: int) -> None:
            self.spans = [None] * n

    return [_Record(int(n)) for n in torch.bincount(bags.bag_index, minlength=bags.n_bags)]


def test_a_map_that_does_not_lower_the_valid_ece_is_dropped() -> None:
    # 40 responses of two steps scored 0.2 and 0.8; the gold agrees with the scores in the responses of one
    # half (alternating) and is reversed in the other, so each half's map is wrong for the other half.
    n_bags = 40
    bag_index = torch.arange(n_bags).repeat_interleave(2)
    raw_p = torch.tensor([0.2, 0.8]).repeat(n_bags)
    agree = (torch.arange(n_bags) % 2 == 0).repeat_interleave(2)
    gold = torch.where(agree, (raw_p > 0.5).long(), (raw_p < 0.5).long())
    bags = BagSet(
        sent_emb=torch.zeros(2 * n_bags, 2),
        bag_index=bag_index,
        ctx_emb=torch.zeros(n_bags, 2),
        win_bag=torch.arange(n_bags),
        labels=torch.ones(n_bags),
        gold=gold,
    )
    raw = torch.stack([1 - raw_p, raw_p], 1)
    fitted = StepCalibration(scale=2.0, bias=0.1, fitted_on="gold_steps", n_fitted=80)
    chosen = choose_given_label(fitted, raw, bags, aggregation="max", min_gold=20)
    f = chosen.figures
    assert f["ece_raw"] == pytest.approx(0.3) and f["ece_calibrated"] > 0.5
    assert chosen.identity and not chosen.given_label and chosen.map == (1.0, 0.0)
    assert (f["dropped_scale"], f["dropped_bias"]) == (2.0, 0.1) and "did not lower" in chosen.reason
    assert chosen.fitted_on == "gold_steps" and chosen.n_fitted == 80
    assert torch.equal(chosen.apply_proba(raw), raw)
