"""Accept the model's labels for the rest of a response, never contradicting its label."""

from __future__ import annotations

import numpy as np

from fractal_core.mil.reviewer.evidence import Evidence
from fractal_core.mil.reviewer.given_label import view_given_label


def accept_rest(
    scores: np.ndarray,
    entered: np.ndarray,
    response_label: float | None,
    *,
    aggregation: str,
    n_levels: int = 2,
) -> np.ndarray:
    """Labels for every sentence of one response (n,) int64, the unlabelled ones filled from the view: what
    "accept the model's labels for the rest" stores. Entered labels are returned unchanged.

    Never contradicts the response label: ``max`` labelled 0 -> every unlabelled sentence 0; labelled >= 1 ->
    view >= 0.5 is positive, and when no sentence is positive (entered or filled) the unlabelled one with the
    highest view is; ``min`` mirrors this (labelled >= 1 -> all positive; labelled 0 keeps at least its least
    likely positive sentence at 0); ``mean`` -> the k highest views are positive, k the count the proportion
    implies minus the entered positives. Unknown label: view (= marginal) >= 0.5.

    -1 means "left unlabelled": every unlabelled sentence when the entered labels already contradict the
    response label (a person resolves that first), and, for ordinal data (``n_levels`` > 2), a positive
    sentence whose level the label does not pin down (the scores only say P(level >= 1)).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.array([np.nan if response_label is None else float(response_label)])
    ev = Evidence(s, entered, np.zeros(len(s), dtype=np.int64), y, aggregation, n_levels)
    out = np.where(ev.known, ev.gold, -1).astype(np.int64)
    if not len(s) or not ev.unl.any():
        return out
    if ev.has_label[0] and not ev.usable[0]:
        return out
    view = view_given_label(ev)
    order = np.lexsort((np.arange(len(s)), -view))  # highest view first, earlier first on ties
    ranked_unl = order[ev.unl[order]]
    positive = ev.unl & (view >= 0.5)
    top_level = n_levels - 1
    lo, hi = 1, top_level  # the levels a positive sentence may take under the label
    if ev.usable[0]:
        label = float(y[0])
        if aggregation == "max":
            hi = int(label)
            if label >= 1 and ev.pos_entered[0] == 0 and not positive.any():
                positive[ranked_unl[0]] = True
        elif aggregation == "min":
            lo = max(int(label), 1)
            if label < 1 and ev.neg_entered[0] == 0 and positive[ev.unl].all():
                positive[ranked_unl[-1]] = False
        else:
            positive = np.zeros(len(s), dtype=bool)
            positive[ranked_unl[: int(ev.count_left[0])]] = True
    level = lo if lo == hi else -1
    return np.where(ev.unl, np.where(positive, level, 0), out).astype(np.int64)
