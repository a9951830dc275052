"""What the Pairs page colours: each sentence of a pair by how much it explains the preference, from the stored
scores and the labels people entered (``fractal_core.mil.preference_posterior``: P(wrong | the rejected
response has more wrong sentences, the entered labels)). A labelled sentence is known (its colour is its
label); the others are re-conditioned on it, so the colours move as labels are entered."""

from __future__ import annotations

from collections.abc import Sequence

from app.review import entered_labels
from db.rows import ResponseDetail, SentenceRow


def _scores(sentences: Sequence[SentenceRow]) -> list[float] | None:
    """The scores the given-label view reads (``view_score``), or None when a sentence is not scored."""
    values = [s.view_score if s.view_score is not None else s.score for s in sentences]
    return None if any(v is None for v in values) else [float(v) for v in values if v is not None]


def pair_colours(
    chosen: ResponseDetail, rejected: ResponseDetail, strength: float
) -> tuple[list[float | None], list[float | None]]:
    """Colours (chosen, rejected), one per sentence in [0, 1], given the preference and the gold labels the
    responses carry (``review.entered_labels``: the labels the user's view shows); ``None`` everywhere while
    either response is unscored."""
    a, b = _scores(chosen.sentences), _scores(rejected.sentences)
    if a is None or b is None:
        return [None] * len(chosen.sentences), [None] * len(rejected.sentences)
    import numpy as np

    from fractal_core.fitting.pairs import colour_scored_pairs

    labels = np.concatenate([entered_labels(chosen), entered_labels(rejected)])  # NaN: none
    colour = colour_scored_pairs(
        np.array([*a, *b]), np.array([len(a), len(b)]), np.array([strength]), labels
    ).tolist()
    return list(colour[: len(a)]), list(colour[len(a) :])


__all__ = ["pair_colours"]
