"""The ``constant`` baseline: one fitted probability for every sentence, its given-label ranking in closed form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.estimator import FractalModel
from tests.fractal_core.synthetic import planted_bags


def _bags(sizes: list[int], labels: list[float], gold: list[int], *, seed: int = 0) -> BagSet:
    """Hand-made bags (random embeddings: the baseline must not read them)."""
    bag_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    emb = torch.nn.functional.normalize(
        torch.randn(int(sum(sizes)), 4, generator=torch.Generator().manual_seed(seed))
    )
    return BagSet(
        sent_emb=emb,
        bag_index=bag_index,
        ctx_emb=torch.nn.functional.normalize(torch.ones(len(sizes), 4)),
        win_bag=torch.arange(len(sizes)),
        labels=torch.tensor(labels),
        gold=torch.tensor(gold),
    )


def _fit(bags: BagSet, aggregation: str = "max", n_classes: int = 2) -> FractalModel:
    return FractalModel("constant").fit_bags(bags, None, aggregation=aggregation, n_classes=n_classes)


def _constant_row(model: FractalModel, bags: BagSet) -> np.ndarray:
    proba = model.predict_proba_bags(bags).numpy()
    assert np.allclose(proba, proba[:1], atol=1e-6)  # the same distribution for every sentence
    assert np.allclose(proba.sum(1), 1.0, atol=1e-5)
    return proba[0]


# Test responses: sizes 1..4, labels 1 (problem) or 0; gold on every sentence.
TEST_SIZES = [1, 2, 3, 4, 2, 3]
TEST_LABELS = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
TEST_GOLD = [1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_registered_as_an_untrained_baseline_that_auto_never_fits() -> None:
    entry = registry.method("constant")
    assert not entry.trained and entry.baseline and not entry.needs_gold
    assert registry.training_stages("constant", has_gold=True, aggregation="max") == ()
    for has_gold in (False, True):
        plan = registry.resolve("fractal", has_gold=has_gold, aggregation="max", first_error=True)
        assert not any("constant" in c.name for c in plan.candidates)


def test_given_label_auc_is_the_closed_form_length_ranking_whatever_p() -> None:
    test = _bags(TEST_SIZES, TEST_LABELS, TEST_GOLD)
    gold = test.gold.numpy() >= 1
    n = np.repeat(TEST_SIZES, TEST_SIZES).astype(float)
    y = np.repeat(TEST_LABELS, TEST_SIZES)
    figures, rates = set(), []
    for rate in (0.1, 0.6):  # two training sets with very different problem rates: different constants
        train = planted_bags(300, dim=4, max_size=6, positive_rate=rate, seed=3)
        model = _fit(train)
        p = float(_constant_row(model, test)[1])
        rates.append(p)
        closed = np.where(y >= 1, p / (1 - (1 - p) ** n), 0.0)  # P(step wrong | Y), max aggregation
        got = model.evaluate_bags(test)["posterior_auc_roc"]
        assert got == pytest.approx(auc_roc(gold, closed), abs=1e-12)
        # The same ranking as "problem responses first, shorter ones first": p does not matter.
        assert got == pytest.approx(auc_roc(gold, y * (10 - n)), abs=1e-12)
        figures.add(round(got, 12))
    assert rates[1] > rates[0] + 0.1
    # Both constants give one figure: that of 1 / n for the problem responses' steps and 0 for the others.
    assert figures == {round(auc_roc(gold, y / n), 12)}


def _max_log_likelihood(p: float, sizes: np.ndarray, labels: np.ndarray) -> float:
    log_all_fine = sizes * np.log1p(-p)
    return float(np.sum(np.where(labels >= 1, np.log1p(-np.exp(log_all_fine)), log_all_fine)))


def test_binary_max_constant_is_the_maximum_likelihood_rate() -> None:
    sizes = np.array([1, 2, 3, 4, 5, 6, 2, 3, 1, 4])
    labels = np.array([0, 1, 0, 1, 1, 1, 0, 0, 1, 0], dtype=float)
    train = _bags(sizes.tolist(), labels.tolist(), [-1] * int(sizes.sum()))
    p = float(_constant_row(_fit(train), train)[1])
    grid = np.linspace(0.001, 0.999, 9981)
    best = grid[np.argmax([_max_log_likelihood(g, sizes, labels) for g in grid])]
    assert p == pytest.approx(best, abs=0.005)


def test_proportion_constant_is_the_pooled_share() -> None:
    sizes = [2, 4, 5, 3]
    labels = [0.5, 0.25, 0.8, 0.0]  # counts 1, 1, 4, 0 of 14 sentences
    train = _bags(sizes, labels, [-1] * 14)
    model = _fit(train, aggregation="mean")
    assert float(_constant_row(model, train)[1]) == pytest.approx(6 / 14, abs=0.005)
    test = _bags(sizes, labels, [1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0])
    # Given the count k of an n-sentence bag, every sentence scores k / n, whatever p.
    share = np.repeat(np.array(labels), sizes)
    got = model.evaluate_bags(test)["posterior_auc_roc"]
    assert got == pytest.approx(auc_roc(test.gold.numpy() >= 1, share), abs=1e-9)


def _ordinal_likelihood(q: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> float:
    cdf = np.concatenate([[0.0], np.cumsum(q)])  # cdf[k + 1] = F(k)
    k = labels.astype(int)
    return float(np.sum(np.log(cdf[k + 1] ** sizes - cdf[k] ** sizes)))


def test_ordinal_max_constant_fits_the_levels_and_ranks_in_closed_form() -> None:
    sizes = np.array([1, 2, 3, 4, 2, 3, 5, 1, 2, 4])
    labels = np.array([0, 2, 1, 2, 0, 1, 2, 1, 0, 1], dtype=float)
    train = _bags(sizes.tolist(), labels.tolist(), [-1] * int(sizes.sum()))
    model = _fit(train, n_classes=3)
    q = _constant_row(model, train).astype(float)
    best = _ordinal_likelihood(q, sizes, labels)
    for i in range(3):  # no nearby distribution over the 3 levels makes the labels more likely
        for j in range(3):
            if i != j:
                moved = q.copy()
                moved[i] += 0.02
                moved[j] -= 0.02
                assert _ordinal_likelihood(moved, sizes, labels) <= best + 1e-4
    test_sizes = np.array([1, 2, 3, 2, 3, 2])
    test_labels = np.array([2, 2, 1, 1, 2, 0], dtype=float)
    test_gold = [2, 0, 2, 1, 0, 0, 1, 1, 0, 2, 0, 0, 0]
    test = _bags(test_sizes.tolist(), test_labels.tolist(), test_gold)
    # P(level >= 1 | max = k) = 1 - q0 (F(k)^(n-1) - F(k-1)^(n-1)) / (F(k)^n - F(k-1)^n) for k >= 1, else 0.
    cdf = np.concatenate([[0.0], np.cumsum(q)])
    n, k = np.repeat(test_sizes, test_sizes), np.repeat(test_labels, test_sizes).astype(int)
    hi, lo = cdf[k + 1], cdf[k]
    closed = np.where(k >= 1, 1 - q[0] * (hi ** (n - 1) - lo ** (n - 1)) / (hi**n - lo**n), 0.0)
    got = model.evaluate_bags(test)["posterior_auc_roc"]
    assert got == pytest.approx(auc_roc(np.array(test_gold) >= 1, closed), abs=1e-9)


def test_saved_constant_scores_the_same(tmp_path: Path) -> None:
    train = planted_bags(100, dim=4, max_size=5, n_classes=3, seed=2)
    model = _fit(train, n_classes=3)
    loaded = FractalModel.load(model.save(tmp_path / "m"))
    assert loaded.scorer_ is None and loaded.calibration_ is not None
    assert torch.equal(loaded.predict_proba_bags(train), model.predict_proba_bags(train))


def test_evaluate_lists_it_beside_naive_and_prints_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    from fractal_core.cli_evaluate import DEFAULT_EVAL_METHODS, print_table
    from fractal_core.cli_options import method_names
    from fractal_core.evaluation.comparison import PreparedSplits, run_evaluation
    from fractal_core.fitting.config import TrainConfig

    names = method_names(DEFAULT_EVAL_METHODS)
    assert names[:2] == ["naive", "constant"]
    prepared = PreparedSplits(
        train=planted_bags(200, seed=1),
        valid=planted_bags(60, seed=2),
        test=planted_bags(80, seed=3),
        aggregation="max",
        n_classes=2,
        encoder_id="planted",
    )
    records = run_evaluation(
        prepared, names[:2], seeds=range(2), gold_fraction=0.1, config=TrainConfig(max_epochs=1)
    )
    constant = [r for r in records if r["method"] == "constant"]
    assert [r["gold_fraction"] for r in constant] == [0.0, 0.0]
    assert constant[0]["posterior_auc_roc"] == constant[1]["posterior_auc_roc"]  # deterministic: seeds agree
    naive = next(r for r in records if r["method"] == "naive")
    assert constant[0]["posterior_auc_roc"] != naive["posterior_auc_roc"]  # length breaks naive's ties
    print_table(records)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    row = next(r for r in rows if r[0] == "constant")
    assert row[1] == "0" and row[5] == f"{constant[0]['posterior_auc_roc']:.3f}±0.000"
