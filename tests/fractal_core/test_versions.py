"""fractal_core.evaluation.versions: paired comparison of two versions on the same gold sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.evaluation.versions import (
    auc_estimate,
    compare_versions,
    response_weights,
    weighted_auc,
)


def _gold(n_responses: int = 60, per: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gold labels (one problem sentence in every other response), response ids and a good model's scores."""
    rng = np.random.default_rng(seed)
    response = np.repeat(np.arange(n_responses), per)
    labels = np.zeros(n_responses * per, dtype=np.int64)
    labels[np.arange(1, n_responses, 2) * per + 2] = 1
    good = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.12, len(labels)), 0, 1)
    return labels, response, good


def test_weighted_auc_is_the_mann_whitney_auc_with_ties() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(200), 1)  # many ties
    positive = rng.random(200) < 0.3
    [unit] = weighted_auc(scores, positive, np.ones((1, 200)))
    assert unit == pytest.approx(auc_roc(positive, scores), abs=1e-12)
    counts = rng.integers(0, 4, 200)
    [weighted] = weighted_auc(scores, positive, counts[None, :].astype(float))
    assert weighted == pytest.approx(
        auc_roc(np.repeat(positive, counts), np.repeat(scores, counts)), abs=1e-12
    )
    assert math.isnan(weighted_auc(scores, np.zeros(200, bool), np.ones((1, 200)))[0])


def test_bootstrap_draws_whole_responses() -> None:
    response = np.repeat(np.arange(4), [1, 3, 2, 5])
    w = response_weights(response, 4, np.random.default_rng(0), 50)
    assert w.shape == (50, 11)
    for r in range(4):  # every sentence of a response carries that response's count
        block = w[:, response == r]
        assert np.all(block == block[:, :1])
    counts = w[:, np.searchsorted(response, np.arange(4))]  # one column per response
    assert np.all(counts.sum(axis=1) == 4)


def test_an_equal_version_activates() -> None:
    labels, response, good = _gold()
    result = compare_versions(good, good.copy(), labels, response, seed=3)
    assert result.not_worse
    diff = result.auc[2]
    assert diff.value == 0.0 and diff.low == 0.0 and diff.high == 0.0
    assert result.n_responses == 60 and result.n_positives == 30 and result.resamples == 2000


def test_a_clearly_worse_version_is_held_back() -> None:
    labels, response, good = _gold()
    noise = np.random.default_rng(7).random(len(labels))  # a model that knows nothing
    result = compare_versions(good, noise, labels, response, seed=0)
    assert not result.not_worse
    assert result.auc[2].high < 0 and result.auc[2].value < -0.2
    assert "cannot be ruled out" in result.reason
    # The other way round the noise model is the old one: the good one is not worse.
    assert compare_versions(noise, good, labels, response, seed=0).not_worse


def test_a_tiny_change_passes_and_the_paired_interval_is_narrower_than_each_auc() -> None:
    labels, response, good = _gold(n_responses=120)
    nudged = np.clip(good + np.random.default_rng(5).normal(0, 0.01, len(good)), 0, 1)
    result = compare_versions(good, nudged, labels, response, seed=0)
    assert result.not_worse
    diff_width = result.auc[2].high - result.auc[2].low
    each_width = result.auc[0].high - result.auc[0].low
    assert diff_width < each_width / 3  # the pairing removes what both versions share


def test_too_few_gold_labels_is_no_evidence() -> None:
    def width(n_responses: int) -> float:
        labels, response, good = _gold(n_responses=n_responses)
        other = np.clip(good + np.random.default_rng(4).normal(0, 0.15, len(good)), 0, 1)
        diff = compare_versions(good, other, labels, response, seed=0).auc[2]
        return diff.high - diff.low

    assert width(6) > 2 * width(120)  # a handful of gold responses: a wide interval
    labels, response, good = _gold()
    one_class = compare_versions(good, good, np.zeros_like(labels), response)
    assert not one_class.not_worse and "undefined" in one_class.reason
    one_response = compare_versions(good[:5], good[:5], labels[:5] * 0 + [0, 0, 1, 0, 0], response[:5])
    assert not one_response.not_worse and "one response" in one_response.reason


def test_seeded_and_json_safe() -> None:
    labels, response, good = _gold()
    other = np.clip(good + np.random.default_rng(2).normal(0, 0.1, len(good)), 0, 1)
    first = compare_versions(good, other, labels, response, seed=11)
    assert first == compare_versions(good, other, labels, response, seed=11)
    summary = first.to_dict()
    assert summary["auc"]["diff"][0] == pytest.approx(first.auc[2].value)  # type: ignore[index]
    one_class = compare_versions(good, good, np.zeros_like(labels), response).to_dict()
    assert one_class["auc"]["a"][0] is None  # type: ignore[index]


def test_auc_estimate_interval_contains_the_value() -> None:
    labels, response, good = _gold()
    est = auc_estimate(good, labels, response, seed=0)
    assert est.value == pytest.approx(auc_roc(labels >= 1, good))
    assert est.low <= est.value <= est.high and est.high - est.low > 0
    assert math.isnan(auc_estimate(good, np.zeros_like(labels), response).value)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"\(N,\)"):
        compare_versions(np.zeros(3), np.zeros(4), np.zeros(3), np.zeros(3))


def test_an_empty_gold_set_is_no_evidence() -> None:
    empty = np.zeros(0)
    result = compare_versions(empty, empty, empty, empty)
    assert not result.not_worse and result.n_sentences == 0
    assert math.isnan(auc_estimate(empty, empty, empty).value)


def test_the_response_kernel_gives_the_per_sentence_figures(monkeypatch) -> None:
    """Replicates are scored through a (responses x responses) kernel; the per-sentence fallback for large gold
    sets must give the same intervals."""
    from fractal_core.evaluation import versions

    rng = np.random.default_rng(3)
    response = np.sort(rng.integers(0, 40, 300))
    labels = (rng.random(300) < 0.25).astype(np.int64)
    a = np.round(np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, 300), 0, 1), 2)  # ties across responses
    b = np.round(np.clip(a + rng.normal(0, 0.1, 300), 0, 1), 2)
    fast = compare_versions(a, b, labels, response, resamples=300, seed=1)
    monkeypatch.setattr(versions, "_KERNEL_MAX_ELEMENTS", 0)
    slow = compare_versions(a, b, labels, response, resamples=300, seed=1)
    for f, s in zip(
        (*fast.auc, *fast.brier, *fast.accuracy), (*slow.auc, *slow.brier, *slow.accuracy), strict=True
    ):
        assert (f.value, f.low, f.high) == pytest.approx((s.value, s.low, s.high), abs=1e-12)
    assert fast.auc[0].value == pytest.approx(auc_roc(labels >= 1, a), abs=1e-12)
