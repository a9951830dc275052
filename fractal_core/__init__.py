"""FRACTAL: sentence-level scores from response-level labels (the library; never imports the store or the UI).

The public names are loaded on first use, so ``import fractal_core.io`` stays light (no torch import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fractal_core.config import LossWeights, TrainConfig
    from fractal_core.encoder import EncoderConfig
    from fractal_core.errors import InputError
    from fractal_core.estimator import FractalModel
    from fractal_core.methods import METHODS
    from fractal_core.records import ResponseRecord, Span

_EXPORTS = {
    "FractalModel": "fractal_core.estimator",
    "TrainConfig": "fractal_core.config",
    "LossWeights": "fractal_core.config",
    "EncoderConfig": "fractal_core.encoder",
    "InputError": "fractal_core.errors",
    "METHODS": "fractal_core.methods",
    "ResponseRecord": "fractal_core.records",
    "Span": "fractal_core.records",
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
