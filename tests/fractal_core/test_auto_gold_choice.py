"""``auto`` with gold: the one-standard-error rule on bootstrapped gold AUCs, and the weak-evidence flag."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.evaluation.versions import auc_estimate, paired_auc_replicates
from fractal_core.fitting import registry
from fractal_core.fitting.auto_choice import (
    GoldScores,
    Selection,
    choose,
    gold_replicates,
    gold_scores,
    in_band,
    pooled,
    weak_evidence,
)
from fractal_core.fitting.calibration import fit_prior_calibration
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.fit import fit_method
from tests.fractal_core.synthetic import planted_bags

METHODS = {"bagloss": "bagloss", "prior_only(calibrated)": "prior_only", "hybrid": "hybrid"}


def _rows(names: list[str], scores: list[float]) -> list[dict]:
    rows = []
    for name, score in zip(names, scores, strict=True):
        row = {"name": name, "method": METHODS.get(name, "priors"), "score": score}
        if row["method"] == "priors":
            row["cosine"] = float(name.split("=")[1].rstrip(")"))
        rows.append(row)
    return rows


def _replicates(scores: list[float], noise: float, n: int = 800, seed: int = 0) -> np.ndarray:
    """Hand-made bootstrap replicates (C, n): a shared draw-to-draw swing (every candidate gains or loses on the
    same easy or hard draw) plus each candidate's own swing of std ``noise`` around its score."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.03, n)
    own = rng.normal(0, noise, (len(scores), n))
    return np.array(scores)[:, None] + shared + own - own.mean(1, keepdims=True)


def test_choose_by_gold_keeps_the_simplest_within_one_standard_error() -> None:
    # hybrid is best by 0.01 AUC, but the paired differences swing by ~0.028 from draw to draw: noise.
    rows = _rows(["bagloss", "priors(cosine=0.1)", "hybrid"], [0.80, 0.805, 0.81])
    reps = _replicates([0.80, 0.805, 0.81], noise=0.02)
    picked = choose(rows, replicates=reps)
    assert rows[picked]["name"] == "bagloss" and all(r["within_band"] for r in rows)
    # The gap is the difference of the scores on the gold set itself, its SE the std of the paired replicates.
    assert rows[0]["gap_to_best"] == pytest.approx(0.01)
    assert rows[0]["paired_se"] == pytest.approx(float(np.std(reps[2] - reps[0], ddof=1)))
    assert rows[2]["gap_to_best"] == 0.0 and rows[2]["paired_se"] == 0.0
    # With no tolerance the rule is the plain best (the rule used with gold before).
    assert rows[choose([dict(r) for r in rows], replicates=reps, se_multiple=0.0)]["name"] == "hybrid"


def test_choose_by_gold_takes_a_clearly_better_elaborate_candidate() -> None:
    rows = _rows(["bagloss", "prior_only(calibrated)", "hybrid"], [0.78, 0.74, 0.86])
    reps = _replicates([0.78, 0.74, 0.86], noise=0.01)
    assert rows[choose(rows, replicates=reps)]["name"] == "hybrid"
    assert [r["within_band"] for r in rows] == [False, False, True]
    # Replicates in which a class went undrawn (NaN) are left out, not propagated.
    reps[:, :5] = np.nan
    again = _rows(["bagloss", "prior_only(calibrated)", "hybrid"], [0.78, 0.74, 0.86])
    assert again[choose(again, replicates=reps)]["name"] == "hybrid"
    assert np.isfinite(again[0]["paired_se"])


def _gold_set(
    n_responses: int = 80, per: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(problem (N,), response (N,), a signal (N,)) of hand-made gold responses with about one problem in four."""
    rng = np.random.default_rng(seed)
    response = np.repeat(np.arange(n_responses), per)
    problem = rng.random(len(response)) < 0.25
    signal = problem + rng.normal(0, 0.9, len(response))
    return problem, response, signal


def _candidates(problem, response, signal, hybrid_boost: float, seed: int = 1) -> list[GoldScores]:
    """bagloss (the signal), priors (the signal with a noise-level nudge) and hybrid (the signal plus
    ``hybrid_boost`` times the truth): three scorers of the same gold sentences."""
    rng = np.random.default_rng(seed)
    bagloss = signal
    priors = signal + rng.normal(0, 0.15, len(signal))
    hybrid = signal + hybrid_boost * problem + rng.normal(0, 0.15, len(signal))
    return [GoldScores(problem, s, s, response) for s in (bagloss, priors, hybrid)]


def _choice(golds: list[GoldScores], seed: int, order: list[int] | None = None) -> str:
    names = ["bagloss", "priors(cosine=0.1)", "hybrid"]
    idx = order or [0, 1, 2]
    rows = _rows([names[i] for i in idx], [auc_roc(golds[i].gold, golds[i].given) for i in idx])
    return rows[choose(rows, replicates=gold_replicates([golds[i] for i in idx], seed))]["name"]


@pytest.mark.parametrize("boost, expected", [(0.07, "bagloss"), (1.5, "hybrid")])
def test_gold_choice_is_stable_under_relabelled_seeds(boost: float, expected: str) -> None:
    problem, response, signal = _gold_set()
    golds = _candidates(problem, response, signal, boost)
    # Every bootstrap seed, any relabelling of the responses and any order of the candidates: the same choice.
    for seed in range(6):
        assert _choice(golds, seed) == expected
    relabel = np.random.default_rng(7).permutation(response.max() + 1)[response] * 3 + 11
    renamed = [g._replace(response=relabel) for g in golds]
    assert _choice(renamed, 0) == expected
    assert _choice(golds, 0, order=[2, 0, 1]) == expected
    # At a boost of 0.07 hybrid wins by ~0.003 AUC against a paired SE of ~0.006: the plain best would take it.
    if expected == "bagloss":
        aucs = [auc_roc(g.gold, g.given) for g in golds]
        assert int(np.argmax(aucs)) == 2 and aucs[2] - aucs[0] < 0.005


def test_paired_replicates_are_the_versions_bootstrap() -> None:
    problem, response, signal = _gold_set(30, 4)
    other = signal + np.random.default_rng(3).normal(0, 0.5, len(signal))
    reps = paired_auc_replicates(np.stack([signal, other]), problem, response, resamples=500, seed=4)
    assert reps.shape == (2, 500)
    # Row by row the same draws as one version's interval on the Models page.
    est = auc_estimate(signal, problem, response, resamples=500, seed=4)
    finite = reps[0][np.isfinite(reps[0])]
    assert (est.low, est.high) == pytest.approx(tuple(np.percentile(finite, [2.5, 97.5])))
    same = paired_auc_replicates(np.stack([signal, signal]), problem, response, resamples=50, seed=0)
    np.testing.assert_array_equal(same[0], same[1])
    assert paired_auc_replicates(signal[None, :4], problem[:4], np.zeros(4), resamples=9).shape == (1, 0)
    with pytest.raises(ValueError, match="scores must be"):
        paired_auc_replicates(np.stack([signal, other])[:, :-1], problem, response)


def test_pooled_folds_pair_with_the_whole_gold_set() -> None:
    bags = planted_bags(40, positive_rate=0.3, seed=5)
    prior = fit_prior_calibration(bags, aggregation="max", n_classes=2)
    ids = torch.arange(bags.n_bags)
    folds = [
        ids[torch.randperm(40, generator=torch.Generator().manual_seed(0))][f::2].sort().values
        for f in (0, 1)
    ]
    whole = gold_scores(prior, bags.select(ids), "max", ids)
    parts = pooled([gold_scores(prior, bags.select(f), "max", f) for f in reversed(folds)])
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="same sentences"):
        gold_replicates([whole, gold_scores(prior, bags.select(folds[0]), "max", folds[0])], 0)


def _annotated(scores: list[float], noise: float) -> list[dict]:
    rows = _rows(["bagloss", "priors(cosine=0.1)", "hybrid"], scores)
    choose(rows, replicates=_replicates(scores, noise))
    return rows


def _gold(n_responses: int, problems: int, fine: int) -> GoldScores:
    gold = np.r_[np.ones(problems, dtype=bool), np.zeros(fine, dtype=bool)]
    response = np.arange(len(gold)) % n_responses
    return GoldScores(gold, gold.astype(float), gold.astype(float), response)


def test_weak_evidence_on_hand_made_cases() -> None:
    clear = _annotated([0.78, 0.80, 0.90], noise=0.01)
    assert weak_evidence(clear, _gold(120, 60, 300)) == (False, "")
    assert weak_evidence(clear) == (False, "")
    # Others within one SE of the best: the figures do not tell them apart (the closest one is named).
    tied = _annotated([0.80, 0.805, 0.81], noise=0.02)
    weak, why = weak_evidence(tied, _gold(120, 60, 300))
    assert weak and "2 other candidate(s)" in why and "best, hybrid (closest: priors(cosine=0.1)" in why
    # Not the runner-up but a candidate with a wider paired SE in the band: weak too (the choice rests on the
    # simplicity order, not on the figures).
    wide = _rows(["prior_only(calibrated)", "bagloss", "hybrid"], [0.81, 0.815, 0.823])
    reps = _replicates([0.81, 0.815, 0.823], noise=0.002)
    reps[0] += np.random.default_rng(9).normal(0, 0.02, reps.shape[1])
    assert wide[choose(wide, replicates=reps)]["name"] == "prior_only(calibrated)"
    assert not wide[1]["within_band"]
    weak, why = weak_evidence(wide)
    assert weak and "1 other candidate(s)" in why and "closest: prior_only(calibrated)" in why
    # A clear winner on too few gold responses, or on a handful of problem sentences, is weak evidence too.
    weak, why = weak_evidence(clear, _gold(12, 30, 60))
    assert weak and why.startswith("only 12 gold responses") and str(registry.AUTO_WEAK_GOLD_RESPONSES) in why
    weak, why = weak_evidence(clear, _gold(120, 5, 300))
    assert weak and "only 5 gold sentences are problem" in why and "runner-up" not in why
    weak, why = weak_evidence(clear, _gold(120, 300, 4))
    assert weak and "only 4 gold sentences are fine" in why
    # A single candidate has no runner-up.
    alone = _rows(["bagloss"], [0.8])
    choose(alone, replicates=np.full((1, 10), 0.8))
    assert weak_evidence(alone) == (False, "")
    stored = Selection(
        "hybrid", "hybrid", "gold_auc_given_y", clear, weak_evidence=True, weak_reason=why
    ).to_dict()
    assert stored["weak_evidence"] is True and stored["weak_reason"] == why


def test_auto_with_gold_applies_the_rule_and_records_the_evidence() -> None:
    torch.set_num_threads(1)
    train = planted_bags(300, positive_rate=0.2, seed=1)
    keep = torch.zeros(train.n_bags, dtype=torch.bool)
    keep[:60] = True
    train = replace(train, gold=torch.where(keep[train.bag_index], train.gold, -1))
    valid = planted_bags(80, positive_rate=0.2, seed=2)
    valid = replace(valid, gold=torch.full_like(valid.gold, -1))
    result = fit_method("auto", FitContext(train, valid, "max", 2, TrainConfig(max_epochs=3), 0))
    selection = result.selection
    assert selection is not None and selection["criterion"].startswith("gold_auc_given_y")
    # With gold, hybrid is kept unless another candidate beats it by more than the band (chosen on valid).
    k = registry.AUTO_SE_MULTIPLE_GOLD
    assert k > 0 and registry.AUTO_GOLD_DEFAULT == "hybrid"
    assert selection["rule"].startswith("hybrid unless") and "gold responses" in selection["rule"]
    rows = selection["candidates"]
    chosen = next(r for r in rows if r["chosen"])
    best = max(rows, key=lambda r: r["score"])
    assert all(r["within_band"] is in_band(r["gap_to_best"], r["paired_se"], k).item() for r in rows)
    hybrid = next(r for r in rows if r["name"] == "hybrid")
    assert chosen is (hybrid if hybrid["within_band"] else best)
    noise = [r for r in rows if in_band(r["gap_to_best"], r["paired_se"], registry.AUTO_SE_MULTIPLE)]
    assert all(r["paired_se"] is not None and r["paired_se"] >= 0 for r in rows)
    assert all(r["gap_to_best"] == pytest.approx(best["score"] - r["score"]) for r in rows)
    assert all(r["paired_se"] > 0 for r in rows if r is not best)
    assert isinstance(selection["weak_evidence"], bool)
    assert selection["weak_evidence"] == bool(selection["weak_reason"])
    assert ("other candidate(s) within" in selection["weak_reason"]) is (len(noise) > 1)
    assert "gold responses judged" not in selection["weak_reason"]  # 60 gold responses: enough
