"""What a reviewer should see: sentence scores given the response label and the labels already entered, the
first problem of a step response, "accept the rest", and the Platt map of the scores (numpy only).

- :mod:`~fractal_core.mil.reviewer.given_label`: P(level_i >= 1 | response label, entered labels), the rules
  per aggregation;
- :mod:`~fractal_core.mil.reviewer.first_error`: the first-error distribution and the F key's rules;
- :mod:`~fractal_core.mil.reviewer.accept`: the labels "accept the model's labels for the rest" stores;
- :mod:`~fractal_core.mil.reviewer.platt`: the Platt map (``calibrated_mode``, and a model's step calibration
  where its given-label view uses one);
- :mod:`~fractal_core.mil.reviewer.evidence`: the checked inputs they share and which direction is a problem.
"""

from __future__ import annotations

from fractal_core.mil.reviewer.accept import accept_rest
from fractal_core.mil.reviewer.evidence import problem_is_positive
from fractal_core.mil.reviewer.first_error import (
    DEFAULT_FIRST_ERROR_RULE,
    FIRST_ERROR_RULES,
    first_error_distribution,
    first_error_distribution_flat,
    pick_first_error,
    pick_first_error_flat,
)
from fractal_core.mil.reviewer.given_label import label_conditioned, label_conditioned_flat
from fractal_core.mil.reviewer.platt import PlattMap, calibrate, fit_platt, view_map, view_scores

__all__ = [
    "DEFAULT_FIRST_ERROR_RULE",
    "FIRST_ERROR_RULES",
    "PlattMap",
    "accept_rest",
    "calibrate",
    "first_error_distribution",
    "first_error_distribution_flat",
    "fit_platt",
    "label_conditioned",
    "label_conditioned_flat",
    "pick_first_error",
    "pick_first_error_flat",
    "problem_is_positive",
    "view_map",
    "view_scores",
]
