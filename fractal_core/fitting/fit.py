"""Fit any method by name: resolved once (``registry.resolve``), then ``auto``'s choice among fits or a single
method's pipeline. The one entry point the estimator and the experiments call."""

from __future__ import annotations

from fractal_core.fitting import registry
from fractal_core.fitting.auto import fit_auto
from fractal_core.fitting.context import FitContext, FitResult
from fractal_core.fitting.methods import fit_pipeline
from fractal_core.fitting.train import cpu_threads


def fit_method(method: str | registry.MethodPlan, context: FitContext) -> FitResult:
    """Fit ``method`` (a name, resolved here against ``context``'s data and config, or a plan resolved already)
    on ``context``; ``auto`` and ``fractal`` return the chosen candidate's result with its selection."""
    plan = context.plan(method) if isinstance(method, str) else method
    if plan.pipeline == "auto":
        with cpu_threads(plan.config.cpu_threads, context.device):  # calibrations and scoring too
            return fit_auto(plan, context)
    return fit_pipeline(plan, context)


__all__ = ["FitContext", "FitResult", "fit_method"]
