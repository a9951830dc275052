"""From response records to a ``BagSet``: embed every sentence and context window once (cached on disk)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import Encoder
from fractal_core.embedding.mapped import MappedRows
from fractal_core.fitting.bags import BagSet


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
    store: str | Path | None = None,
    chunk_sentences: int = 16_384,
) -> BagSet:
    """Embed ``records`` into a ``BagSet`` on ``device``.

    Sentences (N, d) and context windows (W, d) are encoded once each (the encoder's cache skips known text).
    Bag labels are ``response_label`` (NaN allowed for unlabelled responses at scoring time). ``progress`` gets
    ``(done, total)`` unique sentence texts as the encoder goes (cached texts count as done at once).

    ``store``: a directory for the sentence embeddings. The records are then embedded ``chunk_sentences``
    sentences at a time and written to a float16 file there (``sentences.npy``), which the returned set reads
    lazily through a memory mapping that keeps few of its pages resident (``fractal_core.embedding.mapped``); the windows are kept as float16 in memory. Memory stays bounded by a chunk, not
    the dataset, and nothing changes numerically: the encoder's vectors are float16-exact (``Encoder.encode``).
    ``progress`` then counts sentences. Without ``store`` every embedding is float32 in memory.
    """
    if not records:
        raise ValueError("no responses to embed")
    labels = np.array([float(r.response_label) for r in records], dtype=np.float32)
    index = sentence_bag_index(records)
    if store is None:
        sentences = [s.text for r in records for s in r.spans]
        sent_emb = np.ascontiguousarray(encoder.encode(sentences, progress=progress), dtype=np.float32)
        ctx_emb, win_owner = encoder.encode_windows(
            [r.context for r in records], max_words=window_words, stride_words=window_stride
        )  # (W, d), (W,)
        ctx_emb = np.ascontiguousarray(ctx_emb, dtype=np.float32)
        pages = None
        sent = torch.from_numpy(sent_emb)
    else:
        pages, ctx_emb, win_owner = _embed_to_store(
            records, encoder, Path(store), window_words, window_stride, progress, chunk_sentences
        )
        sent = pages.open()
    moved = sent.to(device)
    if pages is not None and moved is not sent:  # copied to the device whole: the mapping is done with
        pages.release()
        pages = None
    return BagSet(
        sent_emb=moved,
        bag_index=torch.as_tensor(index).to(device),
        ctx_emb=torch.from_numpy(ctx_emb).to(device),
        win_bag=torch.as_tensor(np.asarray(win_owner, dtype=np.int64)).to(device),
        labels=torch.as_tensor(labels).to(device),
        gold=torch.as_tensor(gold_array(records)).to(device),
        sent_pages=pages,
    )


def _embed_to_store(
    records: Sequence[ResponseRecord],
    encoder: Encoder,
    store: Path,
    window_words: int,
    window_stride: int,
    progress: Callable[[int, int], None] | None,
    chunk_sentences: int,
) -> tuple[MappedRows, np.ndarray, np.ndarray]:
    """:func:`embed_records` with ``store``: (the float16 (N, d) file, float16 windows (W, d), owners (W,))."""
    sizes = np.array([len(r.spans) for r in records], dtype=np.int64)
    ends = np.cumsum(sizes)
    n = int(ends[-1])
    # Record boundaries of the chunks: each chunk ends at the first record reaching the next multiple.
    cuts = np.unique(np.searchsorted(ends, np.arange(chunk_sentences, n, chunk_sentences)) + 1)
    bounds = [0, *[int(c) for c in cuts if c < len(records)], len(records)]
    store.mkdir(parents=True, exist_ok=True)
    matrix: MappedRows | None = None
    windows: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for a, b in itertools.pairwise(bounds):  # a handful of chunks, each one vectorised encoder call
        lo = int(ends[a - 1]) if a else 0
        texts = [s.text for r in records[a:b] for s in r.spans]

        def report(done: int, total: int, lo: int = lo, k: int = len(texts)) -> None:
            if progress is not None:
                progress(lo + round(k * done / max(total, 1)), n)

        vectors = encoder.encode(texts, progress=report)  # (k, d)
        if matrix is None:
            matrix = MappedRows.create(store / "sentences.npy", n, vectors.shape[1])
        matrix.write(lo, vectors)  # a file write: the rows never become pages of this process
        win, owner = encoder.encode_windows(
            [r.context for r in records[a:b]], max_words=window_words, stride_words=window_stride
        )
        windows.append(np.asarray(win, dtype=np.float16))
        owners.append(np.asarray(owner, dtype=np.int64) + a)
    assert matrix is not None
    return matrix, np.concatenate(windows), np.concatenate(owners)
