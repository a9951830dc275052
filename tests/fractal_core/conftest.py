"""Fixtures of the library's tests: the bundled encoder in float32 and its vectors of the sample texts, made once
per module and only read by the tests (test_encoder.py, test_encoder_int8.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.fractal_core.encoder_texts import TEXTS


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    """The bundled encoder in float32 without a cache (deterministic: the reference the other precisions and
    batchings are compared with)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fractal_core.embedding.encoder import Encoder, EncoderConfig

    return Encoder(EncoderConfig(cache_dir="", precision="float32"))


@pytest.fixture(scope="module")
def reference_vectors(encoder) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``encoder.encode(TEXTS)``, read-only."""
    vectors = encoder.encode(TEXTS)
    vectors.flags.writeable = False
    return vectors
