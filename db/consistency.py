"""MIL consistency between a response label and its sentence labels (pure; used when saving corrections).

A bag's label Y follows from its sentence labels y_i through the aggregation: ``max`` (Y = max y_i),
``min`` (Y = min y_i), ``mean`` (Y = fraction of positive sentences). With some sentences still unlabelled
(``None``) the check asks whether *any* completion of the labels could produce Y, so a half-labelled
response only warns once it can no longer be made consistent.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_consistency(
    aggregation: str, response_label: float, sentence_labels: Sequence[int | None], *, mean_slack: float = 0.5
) -> str | None:
    """A one-line warning when ``sentence_labels`` contradict ``response_label`` under ``aggregation``.

    Args:
        aggregation: ``"max"``, ``"min"`` or ``"mean"``.
        response_label: the bag label Y (0/1 binary, 0..C-1 ordinal, a fraction in [0, 1] for ``mean``).
        sentence_labels: one entry per sentence, ``None`` where not labelled.
        mean_slack: for ``mean`` bags, how many sentences' worth (``mean_slack / n``) a proportion may be off
            (0.5: a rounded proportion is fine; 0 plus 1e-6 matches the strict file reader).

    Returns:
        None when some completion of the unlabelled sentences yields ``response_label``, else why not.
    """
    known = [y for y in sentence_labels if y is not None]
    n_unknown = len(sentence_labels) - len(known)
    if not sentence_labels:
        return None
    if aggregation == "max":
        top = max(known) if known else None
        if top is not None and top > response_label:
            return (
                f"response label is {_fmt(response_label)} (max) but a sentence is labelled {top}: "
                "no sentence may exceed the response label"
            )
        if n_unknown == 0 and top is not None and top < response_label:
            if response_label >= 1 and top == 0:
                return f"response label is {_fmt(response_label)} (max) but no sentence is labelled positive"
            return f"response label is {_fmt(response_label)} (max) but the highest sentence label is {top}"
        return None
    if aggregation == "min":
        low = min(known) if known else None
        if low is not None and low < response_label:
            return (
                f"response label is {_fmt(response_label)} (min: every sentence positive) but a sentence "
                f"is labelled {low}"
            )
        if n_unknown == 0 and low is not None and low > response_label:
            return (
                f"response label is {_fmt(response_label)} (min) but every sentence is labelled "
                f"{low} or higher"
            )
        return None
    if aggregation == "mean":
        n = len(sentence_labels)
        positives = sum(1 for y in known if y >= 1)
        lowest, highest = positives / n, (positives + n_unknown) / n
        slack = mean_slack / n + 1e-6
        if response_label < lowest - slack or response_label > highest + slack:
            if n_unknown:
                return (
                    f"response label is {_fmt(response_label)} (proportion) but the labels allow only "
                    f"{lowest:.2f}..{highest:.2f}"
                )
            return f"response label is {_fmt(response_label)} (proportion) but the labels give {lowest:.2f}"
        return None
    raise ValueError(f"unknown aggregation {aggregation!r}; expected max, min or mean")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
