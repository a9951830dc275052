"""The sentence scores the app shows: the library's reviewer view, P(level >= 1 | response label, labels entered).

Review colours, the sentence list and the Gold queue read the model through these functions, so they rank
sentences as well as the model can given what is already known (``fractal_core.mil.reviewer`` owns the rules);
they read ``SentenceRow.view_score`` (the stored score through the model version's step calibration where that
was chosen on valid for this view); the raw model score stays in ``SentenceRow.score`` for whoever shows it on
demand. Thin adapters from the store's
rows to the library's arrays: no rule of their own. numpy only (no torch), so a page run stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app import review
from db.rows import ResponseDetail
from fractal_core.mil.reviewer import label_conditioned, problem_is_positive


def review_colours(
    scores: Sequence[float | None],
    entered: Sequence[int | None],
    response_label: float | None,
    *,
    aggregation: str,
    n_levels: int = 2,
) -> list[float | None]:
    """What Review colours each sentence by (n,): the reviewer view of the stored scores given the response
    label and the labels entered so far (``None`` = not labelled); an entered sentence gets its indicator.

    The view needs the score of every unlabelled sentence (it conditions on all of them); when one is missing
    (not scored yet) nothing can be conditioned and the stored scores come back as they are (``None`` where
    unscored). The value is P(level >= 1); :func:`problem_probability` turns it into "is a problem".
    """
    if len(scores) != len(entered):
        raise ValueError(f"{len(scores)} scores but {len(entered)} entered labels")
    if any(s is None and e is None for s, e in zip(scores, entered, strict=True)):
        return list(scores)
    view = label_conditioned(
        np.array([np.nan if s is None else float(s) for s in scores], dtype=np.float64),
        np.array([np.nan if e is None else float(e) for e in entered], dtype=np.float64),
        response_label,
        aggregation=aggregation,
        n_levels=n_levels,
    )
    return [float(v) for v in view]


def problem_probability(view: float, aggregation: str) -> float:
    """The view as "this sentence is a problem", in the dataset's default direction (a positive sentence is a
    defect for max and mean responses, good for min: ``reviewer.problem_is_positive``)."""
    return float(view) if problem_is_positive(aggregation) else 1.0 - float(view)


def n_levels_of(label_kind: str, max_label: float) -> int:
    """How many sentence label levels a dataset has (2 for binary)."""
    return len(review.label_levels(label_kind, max_label))


def detail_view(detail: ResponseDetail, max_label: float) -> list[float | None]:
    """:func:`review_colours` of a stored response, with its current gold labels as the labels entered."""
    return review_colours(
        [s.view_score for s in detail.sentences],
        review.gold_labels(detail),
        detail.response_label,
        aggregation=detail.aggregation,
        n_levels=n_levels_of(detail.label_kind, max_label),
    )


def likely_problem(detail: ResponseDetail, max_label: float) -> tuple[int, float] | None:
    """(position, probability) of the unlabelled sentence most likely to be a problem given the response label
    and the labels entered (the earliest on ties); None when no unlabelled sentence is scored."""
    view = detail_view(detail, max_label)
    open_ = np.array(
        [v is not None and lab is None for v, lab in zip(view, review.gold_labels(detail), strict=True)]
    )
    if not open_.any():
        return None
    values = np.array([np.nan if v is None else v for v in view], dtype=np.float64)
    problem = np.where(open_, values if problem_is_positive(detail.aggregation) else 1.0 - values, -np.inf)
    best = int(np.argmax(problem))  # the earliest on ties
    return best, float(problem[best])


__all__ = ["detail_view", "likely_problem", "n_levels_of", "problem_probability", "review_colours"]
