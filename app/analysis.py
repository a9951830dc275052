"""Figures for the Models page: calibration bins over a model version's labelled sentence scores (read with
``db.repository.labelled_scores``); no queries here. The rules live in ``fractal_core.evaluation.metrics``, which
``fractal evaluate`` reports the step ECE by."""

from __future__ import annotations

from fractal_core.evaluation.metrics import calibration_error_of_bins, reliability_bins

reliability = reliability_bins
"""Calibration table: per score bin, mean score, observed positive rate and count."""

expected_calibration_error = calibration_error_of_bins
"""Count-weighted mean |positive rate - mean score| over non-empty bins (NaN when nothing is counted)."""

__all__ = ["expected_calibration_error", "reliability"]
