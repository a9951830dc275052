"""The F key's rule chosen on validation gold: each rule wins where it should, too little evidence keeps the
default, and the choice travels with the model (fit_bags -> save -> load)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fractal_core.evaluation.metrics import first_error_pick_accuracy
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.first_error import (
    MIN_ERRONEOUS,
    FirstErrorChoice,
    choose_first_error_rule,
    rule_top1,
)
from fractal_core.mil.reviewer import DEFAULT_FIRST_ERROR_RULE, FIRST_ERROR_RULES
from tests.fractal_core.synthetic import planted_bags


def _steps(n_bags: int, before: float, first: float, after: float, seed: int = 0):
    """Erroneous responses of 6 steps with the first error at a random step >= 1: scores ``before`` / ``first``
    / ``after`` it (plus small noise), gold labels up to the first error (the first-error protocol), and as many
    correct responses (every step 0, scored ``before``)."""
    rng = np.random.default_rng(seed)
    n = 6
    where = rng.integers(1, n - 1, n_bags)
    pos = np.tile(np.arange(n), 2 * n_bags)
    bag = np.repeat(np.arange(2 * n_bags), n)
    err = np.repeat(np.concatenate([where, np.full(n_bags, n + 1)]), n)
    scores = np.select([pos < err, pos == err], [before, first], after) + rng.uniform(-0.01, 0.01, pos.size)
    gold = np.select([pos < err, pos == err], [0, 1], -1)
    labels = np.concatenate([np.ones(n_bags), np.zeros(n_bags)])
    return scores, gold, bag, labels


@pytest.mark.parametrize(
    ("before", "first", "after", "winner"),
    [
        (0.7, 0.9, 0.7, "top_given_label"),  # uniformly high scores: the mode drifts to step 0
        (0.05, 0.8, 0.95, "first_error_mode"),  # later steps look worse than the first error
        (0.6, 0.8, 0.9, "calibrated_mode"),  # both fail until 0.6 is read as "fine" and 0.8 as "wrong"
    ],
)
def test_each_rule_wins_where_it_should(before: float, first: float, after: float, winner: str) -> None:
    scores, gold, bag, labels = _steps(40, before, first, after)
    choice = choose_first_error_rule(scores, gold, bag, labels, aggregation="max")
    assert choice.rule == winner, choice
    assert choice.top1[winner] > 0.9 and choice.n_erroneous == 40
    assert set(choice.top1) == set(FIRST_ERROR_RULES) and choice.calibration is not None
    assert (
        rule_top1(scores, gold, bag, labels, aggregation="max", rule=winner, calibration=choice.calibration)
        > 0.9
    )


def test_too_little_evidence_or_no_first_errors_keep_the_default() -> None:
    scores, gold, bag, labels = _steps(MIN_ERRONEOUS - 1, 0.05, 0.8, 0.95)
    choice = choose_first_error_rule(scores, gold, bag, labels, aggregation="max")
    assert choice.rule == DEFAULT_FIRST_ERROR_RULE and choice.top1["first_error_mode"] == 1.0
    assert (
        choose_first_error_rule(scores, gold, bag, labels, aggregation="mean").rule
        == DEFAULT_FIRST_ERROR_RULE
    )
    none = choose_first_error_rule(scores, np.full(len(gold), -1), bag, labels, aggregation="max")
    assert none == FirstErrorChoice()


def test_choice_round_trips_through_json() -> None:
    scores, gold, bag, labels = _steps(30, 0.6, 0.8, 0.9)
    choice = choose_first_error_rule(scores, gold, bag, labels, aggregation="max")
    again = FirstErrorChoice.from_dict(choice.to_dict())
    assert again.rule == choice.rule and again.calibration == pytest.approx(choice.calibration)
    assert again.top1 == pytest.approx(choice.top1)
    assert FirstErrorChoice.from_dict(None).rule == DEFAULT_FIRST_ERROR_RULE


def test_pick_accuracy_counts_only_responses_with_a_first_error() -> None:
    gold = np.array([0, 1, -1, 0, 0, 1, 1])
    bag = np.array([0, 0, 0, 1, 1, 2, 2])
    assert first_error_pick_accuracy(gold, np.array([1, 0, 0]), bag, 3) == 1.0
    assert first_error_pick_accuracy(gold, np.array([2, -1, 1]), bag, 3) == 0.0
    assert np.isnan(first_error_pick_accuracy(np.zeros(7), np.zeros(3), bag, 3))


def test_fit_records_the_rule_on_held_out_gold_and_save_keeps_it(tmp_path: Path) -> None:
    train = planted_bags(300, seed=1)
    valid = planted_bags(120, seed=2)
    config = TrainConfig(max_epochs=3, patience=1)
    model = FractalModel("bagloss", config=config).fit_bags(train, valid, aggregation="max", n_classes=2)
    choice = model.first_error_rule_
    assert choice.rule in FIRST_ERROR_RULES and choice.n_erroneous > MIN_ERRONEOUS
    assert set(choice.top1) == set(FIRST_ERROR_RULES)
    model.save(tmp_path / "m")
    assert FractalModel.load(tmp_path / "m").first_error_rule_ == FirstErrorChoice.from_dict(choice.to_dict())
    # no validation bags: the default rule
    alone = FractalModel("bagloss", config=config).fit_bags(train, None, aggregation="max", n_classes=2)
    assert alone.first_error_rule_.rule == DEFAULT_FIRST_ERROR_RULE


def _first_error_protocol(bags):
    """Planted bags as first-error data: nothing labelled after a bag's first positive."""
    import torch

    flat = torch.arange(bags.n_sentences)
    first = torch.full((bags.n_bags,), bags.n_sentences).scatter_reduce(
        0, bags.bag_index[bags.gold >= 1], flat[bags.gold >= 1], reduce="amin"
    )
    gold = torch.where(flat > first[bags.bag_index], torch.full_like(bags.gold, -1), bags.gold)
    return replace(bags, gold=gold)


def test_evaluation_reports_the_official_f1_and_each_rule_on_first_error_data() -> None:
    from fractal_core.evaluation.comparison import PreparedSplits, run_one

    split = {
        name: _first_error_protocol(planted_bags(n, seed=s))
        for name, n, s in [("train", 300, 1), ("valid", 120, 2), ("test", 150, 3)]
    }
    groups = {"task": ["a" if b % 2 else "b" for b in range(150)]}
    prepared = PreparedSplits(
        **split, aggregation="max", n_classes=2, encoder_id="planted", test_groups=groups
    )
    config = TrainConfig(max_epochs=3, patience=1)
    record = run_one(prepared, "bagloss", seed=0, gold_fraction=0.0, config=config)
    for rule in FIRST_ERROR_RULES:
        assert 0.0 <= record[f"fkey_top1_{rule}"] <= 1.0
    assert (
        record["fkey_rule"] in FIRST_ERROR_RULES
        and record["fkey_top1"] == record[f"fkey_top1_{record['fkey_rule']}"]
    )
    assert record["fkey_rule_model"] == DEFAULT_FIRST_ERROR_RULE  # bagloss saw no gold
    assert 0.0 < record["first_error_f1"] <= 1.0 and 0.0 <= record["first_error_f1_threshold"] <= 1.0
    assert set(record["first_error_f1_by_task"]) == {"a", "b"}
    # full gold (not the first-error protocol): the F-key figures, but no official F1
    full = replace(
        prepared,
        **{
            name: planted_bags(n, seed=s)
            for name, n, s in [("train", 300, 1), ("valid", 120, 2), ("test", 150, 3)]
        },
    )
    record = run_one(full, "bagloss", seed=0, gold_fraction=0.0, config=config)
    assert "fkey_top1" in record and "first_error_f1" not in record


def test_a_lead_within_noise_keeps_the_default() -> None:
    # Scores that know nothing: the rules differ by chance only. The plain best would switch rules; the
    # one-standard-error rule keeps the default.
    rng = np.random.default_rng(1)
    n_bags, n = 60, 6
    bag, pos = np.repeat(np.arange(n_bags), n), np.tile(np.arange(n), n_bags)
    err = np.repeat(rng.integers(0, n, n_bags), n)
    gold = np.select([pos < err, pos == err], [0, 1], -1)
    scores = rng.uniform(0.05, 0.95, bag.size)
    choice = choose_first_error_rule(scores, gold, bag, np.ones(n_bags), aggregation="max")
    assert max(choice.top1.values()) > choice.top1[DEFAULT_FIRST_ERROR_RULE]
    assert choice.rule == DEFAULT_FIRST_ERROR_RULE
