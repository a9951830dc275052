"""fractal_core.evaluation.metrics: the AUC interval shown beside small-sample gold AUCs."""

from __future__ import annotations

import pytest


def test_auc_interval_hanley_mcneil() -> None:
    import math

    from fractal_core.evaluation.metrics import auc_interval

    lo, hi = auc_interval(0.8, 50, 50)
    # Hanley & McNeil (1982) by hand: SE = sqrt((0.16 + 49(0.8/1.2 - 0.64) + 49(1.28/1.8 - 0.64)) / 2500).
    se = math.sqrt((0.16 + 49 * (0.8 / 1.2 - 0.64) + 49 * (1.28 / 1.8 - 0.64)) / 2500)
    assert lo == pytest.approx(0.8 - 1.96 * se) and hi == pytest.approx(0.8 + 1.96 * se)
    small = auc_interval(0.8, 1, 2)
    assert small[1] - small[0] > hi - lo  # three sentences: much wider
    assert small[0] >= 0.0 and small[1] <= 1.0
    assert all(math.isnan(v) for v in auc_interval(0.7, 0, 5))


def _first_error_data():
    """Four solutions in step order: first error at step 1 / at step 0 / none / none; steps after a first
    error unlabelled (-1), as in first-error data. Bags interleaved in the flat order on purpose."""
    import numpy as np

    bag = np.array([0, 1, 0, 0, 2, 1, 3, 2, 3, 2])
    gold = np.array([0, 1, 1, -1, 0, -1, 0, 0, 0, 0])
    score = np.array([0.2, 0.8, 0.7, 0.9, 0.1, 0.3, 0.6, 0.2, 0.1, 0.3])
    return gold, score, bag


def test_first_over_threshold_names_the_first_step_at_or_above_it() -> None:
    import numpy as np

    from fractal_core.evaluation.metrics import first_over_threshold

    _, score, bag = _first_error_data()
    got = first_over_threshold(score, bag, 4, np.array([0.5, 0.75, 0.95]))
    assert got.tolist() == [[1, 0, -1, 0], [2, 0, -1, -1], [-1, -1, -1, -1]]


def test_official_f1_by_hand_and_per_group() -> None:
    import math

    from fractal_core.evaluation.metrics import first_error_f1, tune_first_error_threshold

    gold, score, bag = _first_error_data()
    # threshold 0.5: bag 0 -> step 1 (right), bag 1 -> step 0 (right), bag 2 -> none (right), bag 3 -> step 0
    # (wrong: it is correct). error acc 1, correct acc 1/2, F1 = 2/3.
    groups = {"task": ["a", "b", "a", "b"], "subset": ["x", "x", None, None]}
    got = first_error_f1(gold, score, bag, 4, threshold=0.5, groups=groups)
    assert got["error_acc"] == 1.0 and got["correct_acc"] == 0.5
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["by_task"] == {"a": 1.0, "b": 0.0}  # b: its correct solution is flagged
    assert list(got["by_subset"]) == ["x"] and math.isnan(got["by_subset"]["x"])  # x: no correct solution
    # threshold 0.75: bag 0 -> step 2 (wrong), bag 1 right, bags 2, 3 right: 1/2 and 1 -> 2/3 as well;
    # the tuner finds a threshold in (0.6, 0.7] where all four are right.
    best = tune_first_error_threshold(gold, score, bag, 4)
    assert 0.6 < best <= 0.7
    assert first_error_f1(gold, score, bag, 4, threshold=best)["f1"] == 1.0


def test_pick_accuracy_reads_interleaved_bags_in_step_order() -> None:
    import numpy as np

    from fractal_core.evaluation.metrics import first_error_pick_accuracy

    gold, _, bag = _first_error_data()
    assert first_error_pick_accuracy(gold, np.array([1, 0, -1, 2]), bag, 4) == 1.0
    assert first_error_pick_accuracy(gold, np.array([2, 0, -1, -1]), bag, 4) == 0.5
