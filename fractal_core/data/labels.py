"""Which labels a label kind allows: the one rule the reader, the store and the app apply.

A dataset's label kind is ``binary`` (levels 0 and 1), ``ordinal`` (integer levels 0..``max_label``, at most
:data:`~fractal_core.data.records.MAX_LABEL`) or ``proportion`` (mean bags: a response label in [0, 1] over
binary sentence labels). Before a dataset fixes its kind, a bag's aggregation says what it may hold
(:func:`kind_of_aggregation`): ``mean`` bags are proportions, ``min`` bags binary, ``max`` bags ordinal up to
``MAX_LABEL``.

:func:`check_label` (a sentence label) and :func:`check_response_label` raise
:class:`~fractal_core.errors.InputError` naming the field and the allowed values; callers add the file and line.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Literal

from fractal_core.data.records import MAX_LABEL
from fractal_core.errors import InputError

LabelKind = Literal["binary", "ordinal", "proportion"]


def highest_level(label_kind: str, max_label: float) -> int:
    """The highest sentence level of a kind: ``max_label`` for ordinal data, else 1."""
    return int(max_label) if label_kind == "ordinal" else 1


def label_levels(label_kind: str, max_label: float) -> list[int]:
    """Every sentence label a kind allows, lowest first (what an annotator may choose from)."""
    return list(range(highest_level(label_kind, max_label) + 1))


def kind_of_aggregation(aggregation: str) -> tuple[LabelKind, float]:
    """``(kind, max_label)`` that bags of this aggregation may hold before a dataset narrows it."""
    if aggregation == "mean":
        return "proportion", 1.0
    if aggregation == "min":
        return "binary", 1.0
    return "ordinal", float(MAX_LABEL)


def _allowed(label_kind: str, max_label: float) -> str:
    top = highest_level(label_kind, max_label)
    return "0 or 1" if top == 1 else f"an integer from 0 to {top}"


def _subject(label_kind: str, subject: str | None) -> str:
    article = "an" if label_kind[:1] in "aeiou" else "a"
    return subject or f"{article} {label_kind} label is"


def check_label(
    value: object, label_kind: str, max_label: float, *, field: str = "label", subject: str | None = None
) -> int | None:
    """A sentence label as stored: ``None`` (unlabelled) or an integer level the kind allows.

    Integral numbers (Python or NumPy, not booleans) are accepted; anything else raises InputError, worded
    ``is 3; a binary label is 0 or 1`` (``subject`` replaces ``a binary label is``).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"must be an integer or null, got {value!r}", field=field)
    level = int(value)
    if not 0 <= level <= highest_level(label_kind, max_label):
        raise InputError(
            f"is {level}; {_subject(label_kind, subject)} {_allowed(label_kind, max_label)}", field=field
        )
    return level


def check_response_label(
    value: object,
    label_kind: str,
    max_label: float,
    *,
    field: str = "response_label",
    subject: str | None = None,
) -> float:
    """A response label as stored: a proportion in [0, 1] for proportion data, else an allowed integer level
    (InputError otherwise, worded as in :func:`check_label`)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"must be a number, got {value!r}", field=field)
    label = float(value)
    if not math.isfinite(label):
        raise InputError(f"must be a finite number, got {label}", field=field)
    if label_kind == "proportion":
        if not 0.0 <= label <= 1.0:
            raise InputError(f"is {label:g}; {_subject(label_kind, subject)} a number in [0, 1]", field=field)
        return label
    top = highest_level(label_kind, max_label)
    if not label.is_integer() or not 0 <= label <= top:
        raise InputError(
            f"is {label:g}; {_subject(label_kind, subject)} {_allowed(label_kind, max_label)}", field=field
        )
    return label
