"""The fine-tuned scorer's input: every sentence of a set of responses as one token sequence, built once.

A sentence's sequence is ``[CLS] context [SEP] earlier sentences [SEP] sentence [SEP]``: the context keeps its
first ``context_tokens`` tokens, each sentence its first ``sentence_tokens``, and the earlier sentences of the
same response fill what is left of ``max_length`` from the *left* (prefix-causal: a step never sees a later
one). Assembled with array indexing, no loop over sentences.
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
from fractal_core.fitting.bags import BagSet
from fractal_core.mil.reductions import gather_ranges, segment_count


@dataclass
class TokenBags:
    """Token sequences of every sentence of B bags (N sentences), built once.

    input_ids (N, W) long, padded; lengths (N,) real tokens; pool_start, pool_end (N,) the scored sentence's
    token range; bag_index (N,) sorted; labels (B,) float; gold (N,) long, -1 where unknown.
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    pool_start: torch.Tensor
    pool_end: torch.Tensor
    bag_index: torch.Tensor
    labels: torch.Tensor
    gold: torch.Tensor

    @property
    def n_bags(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_sentences(self) -> int:
        return int(self.bag_index.shape[0])

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sentence counts, first rows) per bag, computed once per ``bag_index`` (not once per minibatch)."""
        cached = self.__dict__.get("_layout_cache")
        if cached is not None and cached[0] is self.bag_index:
            return cached[1], cached[2]
        counts = segment_count(self.bag_index, self.n_bags, torch.long)
        starts = torch.cumsum(counts, 0) - counts
        self.__dict__["_layout_cache"] = (self.bag_index, counts, starts)
        return counts, starts

    def rows_of(self, bags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat sentence rows of ``bags`` (K,) in that order, and their new bag index 0..K-1."""
        counts, starts = self._layout()
        rows = gather_ranges(starts[bags], counts[bags])
        return rows, torch.repeat_interleave(torch.arange(bags.shape[0]), counts[bags])

    def bagset(self) -> BagSet:
        """A :class:`BagSet` view (no embeddings) for the suite's bag-level rules and metrics."""
        empty = torch.zeros(self.n_sentences, 0)
        return BagSet(
            sent_emb=empty,
            bag_index=self.bag_index,
            ctx_emb=torch.zeros(self.n_bags, 0),
            win_bag=torch.arange(self.n_bags),
            labels=self.labels,
            gold=self.gold,
        )


def flat_tokens(tokenizer: Any, texts: list[str], keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize ``texts`` without specials, each cut to its first ``keep`` tokens -> (flat ids, starts, lengths)."""
    encoded = (
        tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    lengths = np.fromiter((min(len(ids), keep) for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter((t for ids in encoded for t in ids[:keep]), dtype=np.int64, count=int(lengths.sum()))
    starts = np.cumsum(lengths) - lengths
    return flat, starts, lengths


def build_token_bags(records: Sequence[ResponseRecord], tokenizer: Any, config: FinetuneConfig) -> TokenBags:
    """The sequences of every sentence of ``records`` (see the module doc), assembled with array indexing."""
    if not records:
        raise ValueError("no responses")
    specials = 4
    if config.max_length < specials + 2:
        raise ValueError("max_length must leave room for the context, the sentence and 4 special tokens")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id or 0
    budget = config.max_length - specials
    ctx_flat, ctx_start, ctx_len = flat_tokens(tokenizer, [r.context for r in records], config.context_tokens)
    sent_flat, sent_start, sent_len = flat_tokens(
        tokenizer, [s.text for r in records for s in r.spans], config.sentence_tokens
    )
    bag = sentence_bag_index(records)  # (N,)
    n = bag.shape[0]
    if n == 0:
        raise ValueError("no sentences")
    q_len = np.minimum(ctx_len[bag], budget // 2)  # the context never takes more than half the budget
    s_len = np.minimum(sent_len, budget - q_len)
    first_sentence = np.concatenate([[0], np.cumsum(np.bincount(bag, minlength=len(records)))[:-1]])
    prefix_begin = sent_start[first_sentence[bag]]  # flat token where the bag's first sentence starts
    p_len = np.minimum(
        sent_start - prefix_begin, budget - q_len - s_len
    )  # earlier tokens kept (from the left)
    p_start = sent_start - p_len
    one = np.ones(n, dtype=np.int64)
    seg_len = np.stack([one, q_len, one, p_len, one, s_len, one], axis=1)  # (N, 7)
    seg_end = np.cumsum(seg_len, axis=1)
    seg_begin = seg_end - seg_len
    total = seg_end[:, -1]
    width = int(total.max())
    pos = np.arange(width)
    segment = (pos[None, :, None] >= seg_end[:, None, :]).sum(2)  # (N, W) 0..6, 7 = padding
    local = pos[None, :] - np.take_along_axis(seg_begin, np.minimum(segment, 6), axis=1)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    ids[(segment == 0)] = cls_id
    ids[(segment == 2) | (segment == 4) | (segment == 6)] = sep_id
    q_rows, q_cols = np.nonzero(segment == 1)
    ids[q_rows, q_cols] = ctx_flat[ctx_start[bag[q_rows]] + local[q_rows, q_cols]]
    p_rows, p_cols = np.nonzero(segment == 3)
    ids[p_rows, p_cols] = sent_flat[p_start[p_rows] + local[p_rows, p_cols]]
    s_rows, s_cols = np.nonzero(segment == 5)
    ids[s_rows, s_cols] = sent_flat[sent_start[s_rows] + local[s_rows, s_cols]]
    # An empty sentence pools over its closing [SEP] (never over nothing).
    pool_start = seg_begin[:, 5]
    pool_end = np.maximum(seg_end[:, 5], pool_start + 1)
    labels = np.array([float(r.response_label) for r in records], dtype=np.float32)
    return TokenBags(
        input_ids=torch.from_numpy(ids),
        lengths=torch.from_numpy(total),
        pool_start=torch.from_numpy(pool_start),
        pool_end=torch.from_numpy(pool_end),
        bag_index=torch.from_numpy(bag),
        labels=torch.from_numpy(labels),
        gold=torch.from_numpy(gold_array(records)),
    )


__all__ = ["TokenBags", "build_token_bags", "flat_tokens"]
