"""From response records to a ``BagSet``: embed every sentence and context window once (cached on disk)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fractal_core.bags import BagSet
from fractal_core.encoder import Encoder
from fractal_core.records import ResponseRecord


def gold_array(records: Sequence[ResponseRecord]) -> np.ndarray:
    """Flat gold levels (N,) int64, -1 where a sentence (or a whole response) has no gold label."""
    parts = [
        np.array([-1 if v is None else int(v) for v in r.sentence_labels], dtype=np.int64)
        if r.sentence_labels is not None
        else np.full(len(r.spans), -1, dtype=np.int64)
        for r in records
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def sentence_bag_index(records: Sequence[ResponseRecord]) -> np.ndarray:
    """Owner bag of every flat sentence (N,) int64."""
    sizes = np.array([len(r.spans) for r in records], dtype=np.int64)
    return np.repeat(np.arange(len(records), dtype=np.int64), sizes)


def embed_records(
    records: Sequence[ResponseRecord],
    encoder: Encoder,
    *,
    device: torch.device | str = "cpu",
    window_words: int = 200,
    window_stride: int = 150,
    progress: Callable[[int, int], None] | None = None,
) -> BagSet:
    """Embed ``records`` into a ``BagSet`` on ``device``.

    Sentences (N, d) and context windows (W, d) are encoded once each (the encoder's cache skips known text).
    Bag labels are ``response_label`` (NaN allowed for unlabelled responses at scoring time). ``progress`` gets
    ``(done, total)`` unique sentence texts as the encoder goes (cached texts count as done at once).
    """
    if not records:
        raise ValueError("no responses to embed")
    sentences = [s.text for r in records for s in r.spans]
    sent_emb = encoder.encode(sentences, progress=progress)  # (N, d)
    ctx_emb, win_owner = encoder.encode_windows(
        [r.context for r in records], max_words=window_words, stride_words=window_stride
    )  # (W, d), (W,)
    labels = np.array([float(r.response_label) for r in records], dtype=np.float32)
    return BagSet(
        sent_emb=torch.as_tensor(np.ascontiguousarray(sent_emb, dtype=np.float32)).to(device),
        bag_index=torch.as_tensor(sentence_bag_index(records)).to(device),
        ctx_emb=torch.as_tensor(np.ascontiguousarray(ctx_emb, dtype=np.float32)).to(device),
        win_bag=torch.as_tensor(np.asarray(win_owner, dtype=np.int64)).to(device),
        labels=torch.as_tensor(labels).to(device),
        gold=torch.as_tensor(gold_array(records)).to(device),
    )
