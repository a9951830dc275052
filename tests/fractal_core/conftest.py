"""Fixtures of the library's tests: the bundled encoder in float32 and its vectors of the sample texts, made once
per module and only read by the tests (test_encoder.py, test_encoder_int8.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.fractal_core.encoder_texts import TEXTS

if TYPE_CHECKING:
    from fractal_core.embedding.encoder import Encoder


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    """The bundled encoder in float32 without a cache (deterministic: the reference the other precisions and
    batchings are compared with)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fractal_core.embedding.encoder import Encoder, EncoderConfig

    return Encoder(EncoderConfig(cache_dir="", precision="float32"))


@pytest.fixture(scope="module")
def reference_vectors(encoder: Encoder) -> np.ndarray:
    """``encoder.encode(TEXTS)``, read-only."""
    vectors = encoder.encode(TEXTS)
    vectors.flags.writeable = False
    return vectors
