"""Word windows of long texts (contexts): what the encoder embeds for a context longer than it reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def context_windows(
    texts: Sequence[str], *, max_words: int = 200, stride_words: int = 150
) -> tuple[list[str], np.ndarray]:
    """The word windows :meth:`fractal_core.embedding.encoder.Encoder.encode_windows`
    embeds: ``(windows, owner)`` with ``owner`` ``(n_windows,)``
    int64 index into ``texts``."""
    if max_words < 1 or not 1 <= stride_words <= max_words:
        raise ValueError("need max_words >= 1 and 1 <= stride_words <= max_words")
    windows: list[str] = []
    owners: list[int] = []
    for index, text in enumerate(texts):
        words = text.split()
        starts = range(0, max(len(words) - max_words, 0) + stride_words, stride_words)
        for start in starts:
            windows.append(" ".join(words[start : start + max_words]))
            owners.append(index)
            if start + max_words >= len(words):
                break
    return windows, np.asarray(owners, dtype=np.int64)


__all__ = ["context_windows"]
