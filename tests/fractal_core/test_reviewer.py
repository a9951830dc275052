"""The reviewer's view against brute-force enumeration of every labelling; the flat and one-response forms; the
first-error distribution and the F-key rules; accept-the-rest never contradicting the response label."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fractal_core.mil.reviewer import (
    DEFAULT_FIRST_ERROR_RULE,
    FIRST_ERROR_RULES,
    accept_rest,
    calibrate,
    first_error_distribution,
    first_error_distribution_flat,
    fit_platt,
    label_conditioned,
    label_conditioned_flat,
    pick_first_error,
    pick_first_error_flat,
)
from fractal_core.mil.semantics import check_consistency

NAN = float("nan")


def _event(aggregation: str, z: tuple[int, ...], label: float) -> bool:
    if aggregation == "max":
        return max(z) == (label >= 1)
    if aggregation == "min":
        return min(z) == (label >= 1)
    return sum(z) == round(label * len(z))


def brute(
    p: np.ndarray, entered: np.ndarray, label: float | None, aggregation: str
) -> tuple[np.ndarray, bool]:
    """P(z_i = 1 | label, entered) by enumerating every binary labelling; (marginals, False) when the evidence
    has probability zero (or the label is unknown)."""
    n = len(p)
    known = ~np.isnan(entered)
    marginal = np.where(known, entered >= 1, p).astype(np.float64)
    if label is None:
        return marginal, False
    mass = np.zeros(n)
    total = 0.0
    for z in itertools.product((0, 1), repeat=n):
        if any(known[i] and z[i] != (entered[i] >= 1) for i in range(n)):
            continue
        if not _event(aggregation, z, label):
            continue
        w = math.prod(p[i] if z[i] else 1 - p[i] for i in range(n) if not known[i])
        total += w
        mass += w * np.asarray(z, dtype=np.float64)
    if total == 0.0:
        return marginal, False
    return mass / total, True


def _case(rng: np.random.Generator, aggregation: str) -> tuple[np.ndarray, np.ndarray, float | None]:
    n = int(rng.integers(1, 9))
    p = rng.uniform(0.02, 0.98, n)
    if rng.random() < 0.2:
        p[rng.integers(n)] = rng.choice([1e-4, 1 - 1e-4])
    entered = np.full(n, NAN)
    mask = rng.random(n) < rng.choice([0.0, 0.3, 0.7, 1.0])
    entered[mask] = rng.integers(0, 2, int(mask.sum()))
    if rng.random() < 0.15:
        return p, entered, None
    label = float(rng.integers(0, n + 1)) / n if aggregation == "mean" else float(rng.integers(0, 2))
    return p, entered, label


@pytest.mark.parametrize("aggregation", ["max", "min", "mean"])
def test_view_equals_enumeration_over_every_labelling(aggregation: str) -> None:
    rng = np.random.default_rng({"max": 0, "min": 1, "mean": 2}[aggregation])
    seen_possible = seen_impossible = 0
    for _ in range(300):
        p, entered, label = _case(rng, aggregation)
        want, possible = brute(p, entered, label, aggregation)
        got = label_conditioned(p, entered, label, aggregation=aggregation)
        np.testing.assert_allclose(got, want, atol=1e-9, rtol=1e-7, err_msg=f"{p} {entered} {label}")
        seen_possible += possible
        seen_impossible += (not possible) and label is not None
    assert seen_possible > 100 and seen_impossible > 5  # both branches exercised


@pytest.mark.parametrize("aggregation", ["max", "min", "mean"])
def test_flat_form_equals_one_response_form(aggregation: str) -> None:
    rng = np.random.default_rng(7)
    cases = [_case(rng, aggregation) for _ in range(40)]
    # shuffle the flat order of responses (each response's sentences keep their order)
    index = np.concatenate([np.full(len(c[0]), b) for b, c in enumerate(cases)])
    scores = np.concatenate([c[0] for c in cases])
    entered = np.concatenate([c[1] for c in cases])
    labels = np.array([NAN if c[2] is None else c[2] for c in cases])
    perm = rng.permutation(len(cases))
    order = np.concatenate([np.flatnonzero(index == b) for b in perm])
    flat = label_conditioned_flat(
        scores[order], entered[order], index[order], labels, aggregation=aggregation
    )
    one = np.concatenate([label_conditioned(*cases[b], aggregation=aggregation) for b in perm])
    np.testing.assert_allclose(flat, one, atol=1e-12)
    if aggregation != "mean":
        first_flat = first_error_distribution_flat(
            scores[order], entered[order], index[order], labels, aggregation=aggregation
        )
        first_one = np.concatenate(
            [first_error_distribution(*cases[b], aggregation=aggregation) for b in perm]
        )
        np.testing.assert_allclose(first_flat, first_one, atol=1e-12)
    for rule in FIRST_ERROR_RULES:
        picks = pick_first_error_flat(
            scores[order], entered[order], index[order], labels, aggregation=aggregation, rule=rule
        )
        singles = [pick_first_error(*cases[b], aggregation=aggregation, rule=rule) for b in range(len(cases))]
        assert [None if v < 0 else int(v) for v in picks] == singles


def test_long_mean_responses_stay_finite_and_sum_to_the_count() -> None:
    rng = np.random.default_rng(3)
    sizes = [1, 60, 200, 7]
    index = np.repeat(np.arange(4), sizes)
    p = rng.uniform(0.0, 1.0, index.size)
    labels = np.array([1.0, 0.25, 0.6, 3 / 7])
    got = label_conditioned_flat(p, np.full(index.size, NAN), index, labels, aggregation="mean")
    assert np.isfinite(got).all()
    sums = np.bincount(index, weights=got)
    np.testing.assert_allclose(sums, np.round(labels * np.array(sizes)), atol=1e-6)


def brute_first(p: np.ndarray, entered: np.ndarray, label: float | None) -> np.ndarray:
    n = len(p)
    known = ~np.isnan(entered)
    mass = np.zeros(n)
    for z in itertools.product((0, 1), repeat=n):
        if any(known[i] and z[i] != (entered[i] >= 1) for i in range(n)) or not any(z):
            continue
        mass[z.index(1)] += math.prod(p[i] if z[i] else 1 - p[i] for i in range(n) if not known[i])
    if label == 0.0 and not (known & (np.nan_to_num(entered) >= 1)).any():
        return np.zeros(n)
    return mass / mass.sum() if mass.sum() > 0 else mass


def test_first_error_distribution_equals_enumeration() -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        p, entered, label = _case(rng, "max")
        got = first_error_distribution(p, entered, label, aggregation="max")
        np.testing.assert_allclose(got, brute_first(p, entered, label), atol=1e-9)
        # min responses: the first problem is the first step at level 0, the same law with p -> 1 - p
        flipped = np.where(np.isnan(entered), entered, 1 - entered)
        min_label = None if label is None else 1.0 - label
        np.testing.assert_allclose(
            first_error_distribution(1 - p, flipped, min_label, aggregation="min"), got, atol=1e-9
        )


def test_rules_pick_what_they_say() -> None:
    p = np.array([0.55, 0.3, 0.9, 0.1])
    none = np.full(4, NAN)
    assert pick_first_error(p, none, 1.0, aggregation="max", rule="top_given_label") == 2
    assert (
        pick_first_error(p, none, 1.0, aggregation="max", rule="first_error_mode") == 0
    )  # 0.55 vs 0.9*0.45*0.7
    # a calibration that shrinks every score moves the mode to the highest step
    shrink = (1.0, -4.0)
    assert pick_first_error(p, none, 1.0, aggregation="max", rule="calibrated_mode", calibration=shrink) == 2
    assert pick_first_error(p, none, 1.0, aggregation="max", rule="calibrated_mode") == 0  # identity
    assert pick_first_error(p, none, 0.0, aggregation="max") is None
    assert pick_first_error(p, none, None, aggregation="max") == 2  # unknown label: read as having a problem
    # step 2 entered as a problem: only earlier unlabelled steps are candidates
    entered = np.array([NAN, NAN, 1.0, NAN])
    assert pick_first_error(p, entered, 1.0, aggregation="max", rule="top_given_label") == 0
    entered = np.array([0.0, 0.0, 1.0, NAN])
    assert pick_first_error(p, entered, 1.0, aggregation="max") == 2  # no candidate left: the entered problem
    assert (
        pick_first_error(p, np.zeros(4), 1.0, aggregation="max") is None
    )  # contradicted, nothing to point at
    assert pick_first_error(1 - p, none, 0.0, aggregation="min") == 2  # min: the problem is level 0
    assert pick_first_error(p, none, 0.5, aggregation="mean") is None
    assert DEFAULT_FIRST_ERROR_RULE in FIRST_ERROR_RULES
    with pytest.raises(ValueError):
        pick_first_error(p, none, 1.0, aggregation="max", rule="argmax")


def test_calibration_fit_recovers_a_distorted_logit() -> None:
    rng = np.random.default_rng(5)
    true_z = rng.normal(-1.0, 1.5, 20000)
    gold = (rng.random(true_z.size) < 1 / (1 + np.exp(-true_z))).astype(np.int64)
    distorted = 1 / (1 + np.exp(-(true_z - 1.0) / 2.0))  # logit = (z - 1) / 2
    scale, bias = fit_platt(distorted, gold)
    assert abs(scale - 2.0) < 0.15 and abs(bias - 1.0) < 0.15
    np.testing.assert_allclose(calibrate(distorted, (scale, bias)), 1 / (1 + np.exp(-true_z)), atol=0.05)
    assert fit_platt(distorted, np.zeros(true_z.size, dtype=np.int64)) == (1.0, 0.0)


def _consistent(labels: np.ndarray, label: float, aggregation: str) -> bool:
    return check_consistency(aggregation, label, [int(v) for v in labels], mean_slack=0.0) is None


@pytest.mark.parametrize("aggregation", ["max", "min", "mean"])
def test_accept_rest_never_contradicts_the_response_label(aggregation: str) -> None:
    rng = np.random.default_rng(13)
    filled = 0
    for _ in range(300):
        p, entered, label = _case(rng, aggregation)
        out = accept_rest(p, entered, label, aggregation=aggregation)
        known = ~np.isnan(entered)
        assert (out[known] == entered[known]).all()
        if label is None:
            assert (out[~known] == (p[~known] >= 0.5)).all()
            continue
        entered_ok = check_consistency(
            aggregation, label, [None if np.isnan(v) else int(v) for v in entered], mean_slack=0.0
        )
        if entered_ok is not None:
            assert (out[~known] == -1).all()  # a contradiction is left for a person
            continue
        assert ((out == 0) | (out == 1)).all()
        assert _consistent(out, label, aggregation), (p, entered, label, out)
        filled += int((~known).sum())
    assert filled > 100


def test_accept_rest_examples() -> None:
    p = np.array([0.2, 0.7, 0.4])
    none = np.full(3, NAN)
    assert accept_rest(p, none, 0.0, aggregation="max").tolist() == [0, 0, 0]  # the 0.70 does not survive
    assert accept_rest(np.array([0.2, 0.3, 0.1]), none, 1.0, aggregation="max").tolist() == [0, 1, 0]
    assert accept_rest(p, np.array([1.0, NAN, NAN]), 1.0, aggregation="max").tolist() == [1, 1, 0]
    assert accept_rest(p, none, 2 / 3, aggregation="mean").tolist() == [0, 1, 1]
    assert accept_rest(np.array([0.8, 0.9]), np.full(2, NAN), 0.0, aggregation="min").tolist() == [0, 1]
    # ordinal: a max response labelled 2 keeps positives at an unknown level, zeros are filled
    out = accept_rest(np.array([0.1, 0.8, 0.3]), none, 2.0, aggregation="max", n_levels=3)
    assert out.tolist() == [0, -1, 0]
    assert accept_rest(
        np.array([0.1, 0.8]), np.full(2, NAN), 1.0, aggregation="max", n_levels=3
    ).tolist() == [0, 1]


def test_edge_cases() -> None:
    # one sentence
    assert label_conditioned(np.array([0.3]), np.array([NAN]), 1.0, aggregation="max").tolist() == [1.0]
    assert label_conditioned(np.array([0.3]), np.array([NAN]), 0.0, aggregation="min").tolist() == [0.0]
    assert label_conditioned(np.array([0.3]), np.array([NAN]), None, aggregation="max").tolist() == [0.3]
    # everything entered: the indicators, whatever the label says
    entered = np.array([0.0, 1.0, 0.0])
    for agg in ("max", "min", "mean"):
        got = label_conditioned(np.array([0.9, 0.1, 0.5]), entered, 0.0, aggregation=agg)
        assert got.tolist() == [0.0, 1.0, 0.0]
    # an empty response
    assert label_conditioned(np.zeros(0), np.zeros(0), 1.0, aggregation="max").shape == (0,)
    assert pick_first_error(np.zeros(0), np.zeros(0), 1.0, aggregation="max") is None
    # stored scores of exactly 0 and 1 do not divide by zero
    got = label_conditioned(np.array([0.0, 0.0]), np.full(2, NAN), 1.0, aggregation="max")
    np.testing.assert_allclose(got, [0.5, 0.5])
    got = label_conditioned(np.array([1.0, 1.0]), np.full(2, NAN), 0.0, aggregation="min")
    np.testing.assert_allclose(got, [0.5, 0.5])
    # ordinal max: conditions on {max >= 1}; an entered level above the label is a contradiction (marginals)
    p = np.array([0.2, 0.5, 0.4])
    got = label_conditioned(p, np.full(3, NAN), 2.0, aggregation="max", n_levels=3)
    np.testing.assert_allclose(got, label_conditioned(p, np.full(3, NAN), 1.0, aggregation="max"))
    got = label_conditioned(p, np.array([2.0, NAN, NAN]), 1.0, aggregation="max", n_levels=3)
    np.testing.assert_allclose(got, [1.0, 0.5, 0.4])
    with pytest.raises(ValueError):
        label_conditioned(p, np.array([3.0, NAN, NAN]), 1.0, aggregation="max", n_levels=3)
    with pytest.raises(ValueError):
        label_conditioned(p, np.full(3, NAN), 1.0, aggregation="median")
    with pytest.raises(ValueError):
        label_conditioned(np.array([NAN]), np.array([NAN]), 1.0, aggregation="max")


def test_view_scores_apply_a_step_calibration_only_where_it_was_chosen_for_the_view() -> None:
    from fractal_core.mil.reviewer import calibrate, view_map, view_scores

    step = {"scale": 0.5, "bias": -1.0, "given_label": True}
    stored = [0.3, None, 0.9]
    got = view_scores(stored, step)
    assert got[1] is None
    assert np.allclose([got[0], got[2]], calibrate(np.array([0.3, 0.9]), (0.5, -1.0)))
    assert view_map(step) == (0.5, -1.0)
    # Not chosen for the view, absent (a version trained before), or a map that would reverse the ranking: raw.
    for off in ({**step, "given_label": False}, None, {}, {**step, "scale": -0.2}, {**step, "scale": 0.0}):
        assert view_map(off) is None
        assert view_scores(stored, off) == stored
