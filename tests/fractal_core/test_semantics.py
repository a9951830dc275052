"""Response semantics (fractal_core.mil.semantics): consistency, aggregate score, uncertainty, disagreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractal_core.mil import semantics
from fractal_core.mil.aggregate import aggregate, bag_positive_score
from fractal_core.mil.semantics import check_consistency


@pytest.mark.parametrize(
    ("aggregation", "label", "sentences", "contradiction"),
    [
        ("max", 1, [0, 0, 0], True),  # a bad bag needs a bad sentence
        ("max", 1, [0, None, 0], False),  # the unlabelled one may be it
        ("max", 1, [0, 1, 0], False),
        ("max", 0, [0, 1, None], True),  # a good bag cannot hold a bad sentence
        ("max", 0, [None, None], False),
        ("max", 2, [0, 1, 1], True),  # ordinal: the top level must appear
        ("max", 2, [2, 1], False),
        ("max", 1, [2, None], True),
        ("min", 1, [1, 0], True),  # every sentence must be positive
        ("min", 1, [1, None], False),
        ("min", 0, [1, 1], True),
        ("min", 0, [1, None], False),
        ("mean", 0.5, [1, 0, 1, 0], False),
        ("mean", 0.5, [1, 1, 1, 1], True),
        ("mean", 0.5, [1, 1, None, None], False),
        ("mean", 0.9, [0, 0, None, None], True),
    ],
)
def test_check_consistency(
    aggregation: str, label: float, sentences: list[int | None], contradiction: bool
) -> None:
    warning = check_consistency(aggregation, label, sentences)
    assert (warning is not None) is contradiction
    if warning:
        assert "response label" in warning


def test_warning_names_the_problem() -> None:
    assert (
        check_consistency("max", 1, [0, 0])
        == "response label is 1 (max) but no sentence is labelled positive"
    )


def test_mean_slack_is_configurable() -> None:
    assert check_consistency("mean", 0.3, [1, 0, 0, 0]) is None  # within half a sentence
    assert check_consistency("mean", 0.3, [1, 0, 0, 0], mean_slack=0.0) is not None


def test_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="unknown aggregation"):
        check_consistency("median", 1, [1])


# ------------------------------------------------------------------ response figures (fractal_core.mil.semantics)


def test_ordinal_response_whose_sentences_all_score_zero_disagrees() -> None:
    # Levels 0..2, max aggregation: a response labelled 1 whose sentences all score 0 contradicts its label.
    # Dividing the label by the top level (the old SQL) gave |0 - 1/2| = 0.5, which the "> 0.5" filter hid.
    score = np.zeros(3)
    out = semantics.summarise(score, np.zeros(3, dtype=np.int64), np.array([1.0]), aggregation="max")
    assert out.disagreement[0] == pytest.approx(1.0) and out.disagreement[0] > 0.5
    # Level 2 with a clearly positive sentence does not disagree in the binary view the scores live in.
    out = semantics.summarise(
        np.array([0.0, 0.95]), np.zeros(2, dtype=np.int64), np.array([2.0]), aggregation="max"
    )
    assert out.disagreement[0] == pytest.approx(0.05)


@pytest.mark.parametrize("aggregation", ["max", "min"])
@pytest.mark.parametrize("variant", ["hard", "prob", "lse"])
def test_response_score_is_the_training_aggregation(aggregation: str, variant: str) -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, 40)
    index = np.repeat(np.arange(40), sizes)
    p = rng.uniform(0.01, 0.99, len(index))
    logp = torch.log(torch.tensor(np.stack([1 - p, p], 1)))
    expected = bag_positive_score(
        aggregate(logp, torch.tensor(index), 40, aggregation=aggregation, variant=variant, temperature=0.1)
    )
    got = semantics.response_scores(p, index, 40, aggregation=aggregation, variant=variant, temperature=0.1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_mean_scores_uncertainty_and_empty_responses() -> None:
    index = np.array([0, 0, 2])  # response 1 has no sentences
    out = semantics.summarise(np.array([0.2, 0.6, 0.5]), index, np.array([0.5, 0.0, 1.0]), aggregation="mean")
    np.testing.assert_allclose(out.score[[0, 2]], [0.4, 0.5])
    assert np.isnan(out.score[1]) and np.isnan(out.uncertainty[1]) and np.isnan(out.disagreement[1])
    np.testing.assert_allclose(out.uncertainty[[0, 2]], [(0.4 + 0.8) / 2, 1.0])  # mean of 1 - |2p - 1|
    np.testing.assert_allclose(out.disagreement[[0, 2]], [0.1, 0.5])
    assert semantics.uncertainty(0.5) == 1.0 and semantics.uncertainty(1.0) == 0.0


def test_vectorised_consistency_matches_the_one_response_check() -> None:
    cases = [
        ("max", 1, [0, 0, 0]),
        ("max", 1, [0, None, 0]),
        ("max", 0, [0, 1, None]),
        ("max", 2, [0, 1, 1]),
        ("max", 0, [None, None]),
    ]
    gold = np.array([-1 if v is None else v for _, _, labels in cases for v in labels])
    index = np.repeat(np.arange(len(cases)), [len(c[2]) for c in cases])
    labels = np.array([float(c[1]) for c in cases])
    out = semantics.summarise(np.full(len(gold), 0.5), index, labels, aggregation="max", gold=gold)
    expected = [
        -1 if all(v is None for v in c[2]) else int(semantics.check_consistency("max", c[1], c[2]) is None)
        for c in cases
    ]
    assert out.consistent.tolist() == expected == [0, 1, 0, 0, -1]
