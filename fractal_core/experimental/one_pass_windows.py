"""The one-pass scorer's input: each response read once as ``[CLS] context [SEP] step 1 [SEP] ... step n [SEP]``.

A response longer than ``window_tokens`` is cut into overlapping windows. Every window keeps the context; its
step stream is a slice of the response's steps (each cut to ``sentence_tokens`` and closed by ``[SEP]``) that
ends at the end of the last step it scores and starts up to ``S`` tokens earlier (``S``: the window's room for
steps), so the steps just before the scored ones are read too (an earlier step may be cut from the left). Step
j is scored in window ``0`` when its stream ends within ``S`` tokens, else in window ``1 + (end - S - 1) // F``
with ``F = S - S // 2`` fresh tokens per window: half of every later window is overlap, and a step never
exceeds it, so every scored step fits whole and is scored in exactly one window.

Every token carries a *block*: 0 for ``[CLS]``, the context and its ``[SEP]``, ``i + 1`` for step i's tokens and
its ``[SEP]``, -1 for padding. :func:`attention_bias` turns blocks into the additive mask: block-causal (a block
sees the blocks <= its own: the context sees itself, step i sees the context and steps <= i) or full. All
assembled with array indexing: no Python loop over steps, windows or responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.features import gold_array, sentence_bag_index
from fractal_core.experimental.finetune_config import FinetuneConfig
from fractal_core.experimental.token_bags import flat_tokens
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.methods import first_error_annotated
from fractal_core.mil.reductions import gather_ranges, segment_count


@dataclass
class PassWindows:
    """The windows of B responses (N steps, M windows), built once.

    input_ids, block, pool_row (M, L) long: token ids (padded), block ids (-1 padding) and, on the tokens a step
    is pooled from in the window that scores it, that step's flat row (else -1); lengths (M,); window_bag (M,)
    sorted; step_window (N,) the window scoring each step; bag_index (N,) sorted; labels (B,); gold (N,) long,
    -1 where unknown; causal: the mask mode the windows are read with.
    """

    input_ids: torch.Tensor
    block: torch.Tensor
    pool_row: torch.Tensor
    lengths: torch.Tensor
    window_bag: torch.Tensor
    step_window: torch.Tensor
    bag_index: torch.Tensor
    labels: torch.Tensor
    gold: torch.Tensor
    causal: bool

    @property
    def n_bags(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_sentences(self) -> int:
        return int(self.bag_index.shape[0])

    @property
    def n_windows(self) -> int:
        return int(self.window_bag.shape[0])

    def _ranges(self, index: torch.Tensor, bags: torch.Tensor) -> torch.Tensor:
        counts = segment_count(index, self.n_bags, torch.long)
        return gather_ranges((torch.cumsum(counts, 0) - counts)[bags], counts[bags])

    def select(self, bags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For bags (K,): their windows (w,), their step rows (n,) in bag order, and each step row's new bag
        index 0..K-1 (n,)."""
        rows = self._ranges(self.bag_index, bags)
        counts = segment_count(self.bag_index, self.n_bags, torch.long)[bags]
        return (
            self._ranges(self.window_bag, bags),
            rows,
            torch.repeat_interleave(torch.arange(len(bags)), counts),
        )

    def bagset(self) -> BagSet:
        """A :class:`BagSet` view (no embeddings) for the suite's bag-level rules and metrics."""
        return BagSet(
            sent_emb=torch.zeros(self.n_sentences, 0),
            bag_index=self.bag_index,
            ctx_emb=torch.zeros(self.n_bags, 0),
            win_bag=torch.arange(self.n_bags),
            labels=self.labels,
            gold=self.gold,
        )


def record_bags(records: Sequence[ResponseRecord], gold: np.ndarray | None = None) -> BagSet:
    """The records' bags without embeddings (response labels; their gold labels, or ``gold`` (N,) instead):
    what the bag rules and the metrics read."""
    return BagSet(
        sent_emb=torch.zeros(sum(len(r.spans) for r in records), 0),
        bag_index=torch.from_numpy(sentence_bag_index(records)),
        ctx_emb=torch.zeros(len(records), 0),
        win_bag=torch.arange(len(records)),
        labels=torch.tensor([float(r.response_label) for r in records]),
        gold=torch.from_numpy(gold_array(records) if gold is None else np.asarray(gold, dtype=np.int64)),
    )


def causal_mode(config: FinetuneConfig, records: Sequence[ResponseRecord]) -> bool:
    """Whether windows are read block-causally: ``attention="auto"`` follows the context scorer's rule (gold
    labels that stop after the first positive, i.e. step data, -> causal), else the setting."""
    if config.attention != "auto":
        return config.attention == "causal"
    view = record_bags(records)
    return bool(view.n_sentences) and first_error_annotated(view)


def build_pass_windows(
    records: Sequence[ResponseRecord], tokenizer: Any, config: FinetuneConfig, *, causal: bool
) -> PassWindows:
    """The windows of ``records`` (see the module doc), assembled with array indexing."""
    if not records:
        raise ValueError("no responses")
    if config.window_tokens < 16:
        raise ValueError("window_tokens must be at least 16")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id or 0
    ctx_flat, ctx_start, ctx_len = flat_tokens(tokenizer, [r.context for r in records], config.context_tokens)
    sent_flat, sent_start, sent_len = flat_tokens(
        tokenizer, [s.text for r in records for s in r.spans], config.sentence_tokens
    )
    bag = sentence_bag_index(records)  # (N,)
    n, n_bags = bag.shape[0], len(records)
    if n == 0:
        raise ValueError("no sentences")
    q_len = np.minimum(ctx_len, (config.window_tokens - 2) // 2)  # the context never takes more than half
    room = config.window_tokens - 2 - q_len  # (B,) S: tokens for steps per window
    overlap = room // 2
    fresh = room - overlap  # F
    s_len = np.minimum(sent_len, overlap[bag] - 1)  # a step + its [SEP] always fits in the overlap
    piece = s_len + 1  # (N,) stream tokens of each step
    cum = np.cumsum(piece)
    bag_first = np.concatenate([[0], np.cumsum(np.bincount(bag, minlength=n_bags))[:-1]])
    bag_offset = (cum - piece)[bag_first]  # (B,) stream start of each response
    end = cum - bag_offset[bag]  # (N,) local stream end of each step
    k = np.where(end <= room[bag], 0, 1 + (end - room[bag] - 1) // fresh[bag])
    _, first, step_window = np.unique(bag * (int(k.max()) + 1) + k, return_index=True, return_inverse=True)
    step_window = step_window.reshape(-1)
    m = first.shape[0]
    last = np.concatenate([first[1:], [n]]) - 1
    window_bag = bag[first]  # (M,)
    hi = end[last]
    lo = np.maximum(0, hi - room[window_bag])
    # The flat step stream: each step's tokens then its [SEP].
    total = int(cum[-1])
    t = np.arange(total)
    owner = np.repeat(np.arange(n), piece)  # (T,) the step each stream token belongs to
    local = t - (cum - piece)[owner]
    stream_ids = np.where(
        local < s_len[owner], sent_flat[np.minimum(sent_start[owner] + local, max(len(sent_flat) - 1, 0))], sep_id
    ) if len(sent_flat) else np.full(total, sep_id)  # fmt: skip
    stream_block = owner - bag_first[bag[owner]] + 1
    # Pooled tokens: the step's own tokens, or its [SEP] when it has none.
    stream_pool = (local < s_len[owner]) | (s_len[owner] == 0)
    # Window grid: [CLS] context [SEP] stream[lo:hi].
    q_w = q_len[window_bag]
    lengths = 2 + q_w + (hi - lo)
    width = int(lengths.max())
    pos = np.arange(width)[None, :]
    in_ctx = (pos >= 1) & (pos <= q_w[:, None])
    in_stream = (pos >= q_w[:, None] + 2) & (pos < lengths[:, None])
    ids = np.full((m, width), pad_id, dtype=np.int64)
    block = np.full((m, width), -1, dtype=np.int64)
    block[pos < lengths[:, None]] = 0
    ids[:, 0] = cls_id
    ids[np.arange(m), q_w + 1] = sep_id
    c_rows, c_cols = np.nonzero(in_ctx)
    ids[c_rows, c_cols] = ctx_flat[ctx_start[window_bag[c_rows]] + c_cols - 1]
    s_rows, s_cols = np.nonzero(in_stream)
    flat = bag_offset[window_bag[s_rows]] + lo[s_rows] + s_cols - q_w[s_rows] - 2
    ids[s_rows, s_cols] = stream_ids[flat]
    block[s_rows, s_cols] = stream_block[flat]
    pool_row = np.full((m, width), -1, dtype=np.int64)
    scored = stream_pool[flat] & (step_window[owner[flat]] == s_rows)
    pool_row[s_rows[scored], s_cols[scored]] = owner[flat][scored]
    labels = np.array([float(r.response_label) for r in records], dtype=np.float32)
    return PassWindows(
        input_ids=torch.from_numpy(ids),
        block=torch.from_numpy(block),
        pool_row=torch.from_numpy(pool_row),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        window_bag=torch.from_numpy(window_bag),
        step_window=torch.from_numpy(step_window.astype(np.int64)),
        bag_index=torch.from_numpy(bag),
        labels=torch.from_numpy(labels),
        gold=torch.from_numpy(gold_array(records)),
        causal=causal,
    )


def attention_bias(block: torch.Tensor, *, causal: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive attention mask (w, 1, L, L) of windows with block ids ``block`` (w, L): 0 where a query may
    attend a key, the dtype's lowest value elsewhere (padding keys always; later blocks too when ``causal``)."""
    keys = block[:, None, :] >= 0  # (w, 1, L)
    allowed = (
        keys & (block[:, None, :] <= block[:, :, None]) if causal else keys.expand(-1, block.shape[1], -1)
    )
    bias = torch.zeros(allowed.shape, dtype=dtype, device=block.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


__all__ = ["PassWindows", "attention_bias", "build_pass_windows", "causal_mode", "record_bags"]
