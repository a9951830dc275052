"""Agreement statistics against published values (Krippendorff 2011) and scikit-learn's Cohen's kappa."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from fractal_core.evaluation.agreement import cohen_kappa, krippendorff_alpha, pairwise, per_label_agreement

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders x 12 units, values 1..5, None
# missing. Published: nominal 0.743, interval 0.849.
K2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _flat(table: list[list[int | None]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    units, coders, values = [], [], []
    for c, row in enumerate(table):
        for u, v in enumerate(row):
            if v is not None:
                units.append(u)
                coders.append(c)
                values.append(v - 1)
    return np.array(units), np.array(coders), np.array(values)


def test_alpha_matches_krippendorff_2011() -> None:
    units, _, values = _flat(K2011)
    assert krippendorff_alpha(units, values, n_values=5) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, values, n_values=5, metric="interval") == pytest.approx(0.849, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_nan_without_pairs() -> None:
    units = np.array([0, 0, 1, 1, 2, 2])
    values = np.array([1, 1, 0, 0, 1, 1])
    assert krippendorff_alpha(units, values, n_values=2) == pytest.approx(1.0)
    assert np.isnan(krippendorff_alpha(np.array([0, 1]), np.array([1, 0]), n_values=2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=200)
    b = np.where(rng.random(200) < 0.7, a, rng.integers(0, 3, size=200))
    assert cohen_kappa(a, b, n_values=3) == pytest.approx(cohen_kappa_score(a, b))


def test_pairwise_uses_only_common_units_and_per_label_agreement() -> None:
    units, coders, values = _flat(K2011)
    pairs = {(p.coder_a, p.coder_b): p for p in pairwise(units, coders, values, n_values=5)}
    assert set(pairs) == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}
    ab = pairs[(0, 1)]
    assert ab.n_units == 9 and ab.percent == pytest.approx(8 / 9)
    a = np.array([r for r in K2011[0][:9]]) - 1
    b = np.array([r for r in K2011[1][:9]]) - 1
    assert ab.kappa == pytest.approx(cohen_kappa_score(a, b))
    per = per_label_agreement(units, values, n_values=5)
    assert per.shape == (5,) and np.all((per >= 0) & (per <= 1))
    assert per[4] == pytest.approx(1.0)  # every 5 was matched by the unit's other coders
