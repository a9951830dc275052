from __future__ import annotations

import pytest

from db.consistency import check_consistency


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
