"""FRACTAL: sentence-level scores from response-level labels (the library; never imports the store or the UI).

The public names are loaded on first use, so ``import fractal_core.data.io`` stays light (no torch import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fractal_core.data.records import ResponseRecord, Span
    from fractal_core.embedding.encoder import EncoderConfig
    from fractal_core.errors import InputError
    from fractal_core.fitting.config import LossWeights, TrainConfig
    from fractal_core.fitting.estimator import FractalModel
    from fractal_core.fitting.methods import METHODS

_EXPORTS = {
    "FractalModel": "fractal_core.fitting.estimator",
    "TrainConfig": "fractal_core.fitting.config",
    "LossWeights": "fractal_core.fitting.config",
    "EncoderConfig": "fractal_core.embedding.encoder",
    "InputError": "fractal_core.errors",
    "METHODS": "fractal_core.fitting.methods",
    "ResponseRecord": "fractal_core.data.records",
    "Span": "fractal_core.data.records",
}
__all__ = [
    "METHODS",
    "EncoderConfig",
    "FractalModel",
    "InputError",
    "LossWeights",
    "ResponseRecord",
    "Span",
    "TrainConfig",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fractal_core' has no attribute {name!r}")
