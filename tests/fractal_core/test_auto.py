"""``auto``: the calibrated prior, the choice on planted data where one candidate is clearly better, LLP pieces."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fractal_core.evaluation.comparison import proportion_view
from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting import registry
from fractal_core.fitting.auto_choice import choose, simplicity
from fractal_core.fitting.calibration import Calibration, fit_prior_calibration
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.fit import fit_method
from fractal_core.fitting.methods import fit_pipeline
from fractal_core.mil.losses import proportion_target
from fractal_core.mil.reductions import segment_mean
from tests.fractal_core.synthetic import planted_bags


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weak(bags):
    return replace(bags, gold=torch.full_like(bags.gold, -1))


def _aligned(bags, seed: int):
    """The planted task with the context set to the hidden direction: the cosine prior ranks perfectly."""
    direction = torch.nn.functional.normalize(
        torch.randn(bags.sent_emb.shape[1], generator=torch.Generator().manual_seed(10_000)), dim=0
    )
    return replace(bags, ctx_emb=direction.expand(bags.n_bags, -1).clone())


def _chosen(selection):
    return next(c for c in selection["candidates"] if c["chosen"])


def test_auto_prefers_learning_when_the_prior_is_uninformative() -> None:
    train = _weak(planted_bags(300, aggregation="mean", positive_rate=0.3, seed=1))
    valid = _weak(planted_bags(80, aggregation="mean", positive_rate=0.3, seed=2))
    test = planted_bags(200, aggregation="mean", positive_rate=0.3, seed=3)
    result = fit_method("auto", FitContext(train, valid, "mean", 2, TrainConfig(max_epochs=20), 0))
    assert result.selection is not None
    scores = {c["name"]: c["score"] for c in result.selection["candidates"]}
    assert set(scores) == {"prior_only(calibrated)", "bagloss", "priors(cosine=0.1)"}
    assert (
        result.selection["chosen"] != "prior_only(calibrated)"
        and scores["prior_only(calibrated)"] < max(scores.values()) - 0.1
    )
    assert _chosen(result.selection)[
        "within_band"
    ]  # within one paired SE of the best (the rule's tests below)
    with torch.inference_mode():
        p = 1 - result.model(test)[:, 0].exp()
    assert auc_roc((test.gold >= 1).numpy(), p.numpy()) >= 0.9


def test_auto_takes_the_prior_when_it_is_clearly_better() -> None:
    train = _aligned(_weak(planted_bags(300, positive_rate=0.2, seed=1)), 1)
    valid = _aligned(_weak(planted_bags(80, positive_rate=0.2, seed=2)), 2)
    crippled = TrainConfig(max_epochs=1, learning_rate=1e-6)  # the learned candidates barely move from init
    result = fit_method("auto", FitContext(train, valid, "max", 2, crippled, 0))
    assert result.selection is not None and result.selection["chosen"] == "prior_only(calibrated)"
    assert result.method == "prior_only" and result.model is None and result.calibration is not None
    model = FractalModel("auto", config=crippled).fit_bags(train, valid, aggregation="max", n_classes=2)
    test = _aligned(planted_bags(200, positive_rate=0.2, seed=3), 3)
    assert model.resolved_method_ == "prior_only"
    assert model.evaluate_bags(test)["instance_auc_roc"] >= 0.95


def test_prior_calibration_fits_the_bag_likelihood_and_keeps_the_ranking() -> None:
    train = _aligned(_weak(planted_bags(300, positive_rate=0.2, seed=1)), 1)
    calibration = fit_prior_calibration(train, aggregation="max", n_classes=2)
    assert float(calibration.scale) > 1.0  # the raw (1 + cos) / 2 is far too flat for these labels
    again = Calibration.from_dict(calibration.to_dict())
    target = train.with_cosine_target().cos_target
    assert target is not None
    with torch.inference_mode():
        torch.testing.assert_close(again(target), calibration(target))
        order = torch.argsort(target)
        assert bool((torch.diff(calibration(target)[order, 1]) >= -1e-6).all())


def test_auto_cross_fits_hybrid_when_gold_is_given() -> None:
    train = planted_bags(300, positive_rate=0.2, seed=1)
    keep = torch.zeros(train.n_bags, dtype=torch.bool)
    keep[:60] = True
    train = replace(train, gold=torch.where(keep[train.bag_index], train.gold, -1))
    valid = _weak(planted_bags(80, positive_rate=0.2, seed=2))
    result = fit_method("auto", FitContext(train, valid, "max", 2, TrainConfig(max_epochs=3), 0))
    assert result.selection is not None
    assert result.selection["criterion"].startswith("gold_auc_given_y (2-fold cross-fit over 60 gold")
    rows = {c["name"]: c for c in result.selection["candidates"]}
    assert "hybrid" in rows and all(0 <= r["gold_auc_given_y"] <= 1 for r in rows.values())


def test_proportion_target_meets_each_bag_share_and_keeps_its_order() -> None:
    g = torch.Generator().manual_seed(0)
    bag_index = torch.repeat_interleave(torch.arange(4), torch.tensor([3, 5, 1, 4]))
    target = torch.rand(13, generator=g, dtype=torch.float64) * 0.5 + 0.4
    labels = torch.tensor([0.0, 0.4, 1.0, 0.25], dtype=torch.float64)
    out = proportion_target(target, bag_index, labels)
    torch.testing.assert_close(segment_mean(out, bag_index, 4), labels, atol=1e-6, rtol=0)
    for b in range(4):
        mine = bag_index == b
        assert torch.equal(torch.argsort(out[mine]), torch.argsort(target[mine]))


def test_proportion_view_needs_full_labels() -> None:
    bags = planted_bags(20, seed=0)
    view = proportion_view(bags)
    want = segment_mean((bags.gold >= 1).double(), bags.bag_index, 20)
    np.testing.assert_allclose(view.labels.numpy(), want.numpy(), rtol=1e-6)
    bags.gold[3] = -1
    with pytest.raises(ValueError, match="every sentence labelled; 1 of 20"):
        proportion_view(bags)


def test_auto_with_a_single_gold_response_does_not_fail() -> None:
    # One corrected response (the first thing a user does in the app): a cross-fit fold would keep no gold.
    train = planted_bags(60, positive_rate=0.3, seed=4)
    keep = torch.zeros(train.n_bags, dtype=torch.bool)
    keep[int(train.bag_index[(train.gold >= 0).nonzero()[0, 0]])] = True
    train = replace(train, gold=torch.where(keep[train.bag_index], train.gold, -1))
    result = fit_method("auto", FitContext(train, None, "max", 2, TrainConfig(max_epochs=2), 0))
    assert result.selection is not None and "hybrid" in {c["name"] for c in result.selection["candidates"]}


def _rows(*names: str) -> list[dict]:
    method = {"bagloss": "bagloss", "prior_only(calibrated)": "prior_only", "hybrid": "hybrid"}
    rows = []
    for name in names:
        row = {"name": name, "method": method.get(name, "priors")}
        if row["method"] == "priors":
            row["cosine"] = float(name.split("=")[1].rstrip(")"))
        rows.append(row)
    return rows


def _judged(means: list[float], noise: float, n: int = 400, seed: int = 0) -> np.ndarray:
    """Per-bag log-likelihoods: a shared per-bag term (what every candidate finds hard) + own noise of mean 0
    (each candidate's mean is exactly its entry of ``means`` above the shared term's)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(-0.6, 0.4, n)
    own = rng.normal(0, noise, (len(means), n))
    return shared + np.array(means)[:, None] + own - own.mean(1, keepdims=True)


def _scored(rows: list[dict], judged: np.ndarray) -> list[dict]:
    for row, per_bag in zip(rows, judged, strict=True):
        row["score"] = float(per_bag.mean())
    return rows


def test_choose_keeps_the_simplest_candidate_tied_within_noise() -> None:
    # priors(0.3) is best by 0.002 nats on 400 bags whose paired differences have std ~0.14 (SE ~0.007): noise.
    rows = _rows("bagloss", "priors(cosine=0.1)", "hybrid", "priors(cosine=0.3)")
    judged = _judged([0.0, 0.0005, -0.001, 0.002], noise=0.1)
    rows = _scored(rows, judged)
    assert max(range(4), key=lambda i: rows[i]["score"]) != 0  # the argmax is not BagLoss ...
    picked = choose(rows, judged, se_multiple=1.0)
    assert rows[picked]["name"] == "bagloss"  # ... but BagLoss lies within one paired SE of it
    assert all(r["within_band"] for r in rows) and sum(r["chosen"] for r in rows) == 1
    best = max(rows, key=lambda r: r["score"])
    assert best["gap_to_best"] == pytest.approx(0.0) and best["paired_se"] == pytest.approx(0.0)
    gap = rows[0]["gap_to_best"]
    assert gap == pytest.approx(best["score"] - rows[0]["score"]) and 0 < gap <= rows[0]["paired_se"]
    # With no tolerance the rule is the plain argmax (the previous rule).
    assert choose(rows, judged, se_multiple=0.0) == rows.index(best)


def test_choose_takes_a_clearly_better_elaborate_candidate() -> None:
    rows = _rows("bagloss", "prior_only(calibrated)", "priors(cosine=0.1)", "hybrid")
    judged = _judged([0.0, -0.05, 0.002, 0.05], noise=0.05)
    rows = _scored(rows, judged)
    picked = choose(rows, judged, se_multiple=1.0)
    assert rows[picked]["name"] == "hybrid"  # 0.05 nats over ~0.004 SE: far outside the band
    assert [r["within_band"] for r in rows] == [False, False, False, True]
    # A wide enough band readmits the simpler candidates, the simplest first (BagLoss, then prior-only).
    assert rows[choose(rows, judged, se_multiple=1e3)]["name"] == "bagloss"
    order = ("prior_only", "bagloss", "priors", "hybrid")
    assert rows[choose(rows, judged, se_multiple=1e3, order=order)]["name"] == "prior_only(calibrated)"


def test_choose_orders_prior_weights_and_skips_non_finite_scores() -> None:
    rows = _rows("priors(cosine=0.3)", "priors(cosine=0.1)", "bagloss")
    judged = _judged([0.0, 0.0, 0.0], noise=0.01)
    judged[2] = np.nan  # a candidate whose likelihood could not be computed
    rows = _scored(rows, judged)
    assert rows[choose(rows, judged, se_multiple=2.0)]["name"] == "priors(cosine=0.1)"
    assert rows[2]["within_band"] is False and rows[2]["gap_to_best"] is None


def test_choose_without_paired_figures_takes_the_best_and_breaks_ties_by_simplicity() -> None:
    rows = _rows("bagloss", "priors(cosine=0.1)", "hybrid")
    for row, auc in zip(rows, (0.80, 0.85, 0.85), strict=True):
        row["score"] = auc
    assert rows[choose(rows, None)]["name"] == "priors(cosine=0.1)"


def test_auto_records_the_rule_and_its_figures() -> None:
    train = _weak(planted_bags(300, positive_rate=0.2, seed=1))
    valid = _weak(planted_bags(80, positive_rate=0.2, seed=2))
    result = fit_method("auto", FitContext(train, valid, "max", 2, TrainConfig(max_epochs=15), 0))
    selection = result.selection
    assert selection is not None and selection["rule"].startswith("one-standard-error")
    # The priors candidate starts from the BagLoss scorer and stops after the shorter patience.
    warm = next(s for s in result.stages if s.stage == "auto:priors(cosine=0.1)/bag")
    assert len(warm.train_loss) <= min(15, warm.best_epoch + 1 + registry.AUTO_WARM_PATIENCE)
    rows = selection["candidates"]
    assert all({"gap_to_best", "paired_se", "within_band"} <= set(r) for r in rows)
    band = [r for r in rows if r["within_band"]]
    chosen = _chosen(selection)
    assert chosen in band and chosen["name"] == min(band, key=simplicity)["name"]
    # Without gold the evidence is weak exactly when another candidate than the best lies in the band.
    assert selection["weak_evidence"] is (len(band) > 1)
    assert (f"{len(band) - 1} other candidate(s)" in selection["weak_reason"]) is (len(band) > 1)
    # The per-bag figures behind the choice travel with the fit (not with the stored selection).
    assert [c.name for c in result.candidates] == [r["name"] for r in rows]
    for c, r in zip(result.candidates, rows, strict=True):
        assert c.judged.shape == (valid.n_bags,)
        assert float(c.judged.mean()) == pytest.approx(r["bag_log_likelihood"], abs=1e-6)
    assert rows.index(chosen) == choose(
        [dict(r) for r in rows], np.stack([c.judged for c in result.candidates])
    )


def test_a_warm_start_begins_from_the_given_scorer() -> None:
    train = _weak(planted_bags(100, positive_rate=0.3, seed=1))
    config = TrainConfig(max_epochs=1, learning_rate=0.0, weight_decay=0.0)  # no step moves the parameters
    base = fit_method("bagloss", FitContext(train, None, "max", 2, config, 0)).model
    assert base is not None
    context = FitContext(train, None, "max", 2, config, 1)
    warm = fit_pipeline(context.plan("priors"), context, init=base)
    cold = fit_method("priors", FitContext(train, None, "max", 2, config, 1))
    assert warm.model is not None and cold.model is not None and warm.model is not base
    with torch.inference_mode():
        torch.testing.assert_close(warm.model(train), base(train))
        assert not torch.allclose(cold.model(train), base(train))
