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
