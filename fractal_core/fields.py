"""Checks of typed settings' fields, run by the settings themselves on creation (``__post_init__``).

Each check raises :class:`~fractal_core.errors.InputError` naming the field and why, so a bad value from a file,
the command line or a job payload is refused where it enters, not deep inside training. Torch-free.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, get_args

from fractal_core.errors import InputError


def choice(name: str, value: object, literal: Any) -> None:
    """``value`` is one of the strings of the ``Literal`` type ``literal``."""
    options = get_args(literal)
    if value not in options:
        raise InputError(f"expected one of {', '.join(map(str, options))}, got {value!r}", field=name)


def boolean(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InputError(f"expected true or false, got {value!r}", field=name)


def integer(name: str, value: object, *, low: int | None = None, high: int | None = None) -> None:
    """An int (not a bool) in [``low``, ``high``]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"expected a whole number, got {value!r}", field=name)
    _in_range(name, int(value), low, high, closed=(True, True))


def number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    closed: tuple[bool, bool] = (True, True),
) -> None:
    """A finite int or float (not a bool) in the interval from ``low`` to ``high`` (``closed``: whether each
    end belongs to it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"expected a finite number, got {value!r}", field=name)
    _in_range(name, float(value), low, high, closed=closed)


def text(name: str, value: object, *, optional: bool = False, empty: bool = True) -> None:
    """A string (``optional``: or None; ``empty``: the empty string allowed)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or (not empty and not value):
        wanted = "a non-empty string" if not empty else "a string"
        raise InputError(f"expected {wanted}{' or null' if optional else ''}, got {value!r}", field=name)


def _in_range(
    name: str, value: float, low: float | None, high: float | None, *, closed: tuple[bool, bool]
) -> None:
    too_low = low is not None and (value < low if closed[0] else value <= low)
    too_high = high is not None and (value > high if closed[1] else value >= high)
    if too_low or too_high:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        bounds = f"{'[' if closed[0] and low is not None else '('}{left}, {right}{']' if closed[1] and high is not None else ')'}"
        raise InputError(f"must lie in {bounds}, got {value!r}", field=name)


__all__ = ["boolean", "choice", "integer", "number", "text"]
