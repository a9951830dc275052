"""Flat ragged bags on one device: sentence embeddings + bag index, context windows + owner bag.

A ``BagSet`` holds everything training needs for a set of bags, with the constant targets of the priors
(cosine target, correlation pairs, frozen hybrid predictions) computed once. ``select`` makes a minibatch
with gathers only (no Python loop over bags).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from fractal_core.mil.reductions import gather_ranges, segment_count, segment_max

if TYPE_CHECKING:
    from fractal_core.embedding.mapped import MappedRows

_CHUNK = 65_536  # rows per step when a whole-set target is computed in pieces
CHUNK_BAGS = 4_096
"""Bags per step of a whole-set pass over reduced-precision embeddings (:meth:`BagSet.chunks`)."""


def _starts(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts, 0) - counts


@dataclass
class BagSet:
    """Tensors for B bags, N sentences, W context windows (all on one device).

    sent_emb (N, d) float32, L2-normalised; bag_index (N,) long, sorted ascending;
    ctx_emb (W, d); win_bag (W,) long sorted ascending, at least one window per bag;
    the embeddings may also be float16 (e.g. a memory-mapped file: half the memory of float32, read lazily):
    ``select`` then returns float32 minibatches, and whole-set targets are computed in float32 chunks.
    labels (B,) float: bag label (level or proportion); gold (N,) long, -1 where unknown.
    Optional constant targets: cos_target (N,), hyb_target (N, C), pairs (pair_i, pair_j, pair_r) (P,).
    sent_pages: the file mapping ``sent_emb`` is a view of (``fractal_core.embedding.mapped``), if any: every gather of
    sentence rows drops the pages it made resident, so a pass over the set never holds the file in memory.
    """

    sent_emb: torch.Tensor
    bag_index: torch.Tensor
    ctx_emb: torch.Tensor
    win_bag: torch.Tensor
    labels: torch.Tensor
    gold: torch.Tensor
    cos_target: torch.Tensor | None = None
    hyb_target: torch.Tensor | None = None
    pair_i: torch.Tensor | None = None
    pair_j: torch.Tensor | None = None
    pair_r: torch.Tensor | None = None
    sent_pages: MappedRows | None = field(default=None, repr=False, compare=False)
    _layout_cache: tuple[torch.Tensor, ...] | None = field(default=None, repr=False, compare=False)

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sentence counts, sentence starts, window counts, window starts), each (B,) long.

        Computed once per index tensors and reused by every ``select`` (a minibatch would otherwise rescan all N
        sentences, making an epoch cost O(N^2 / batch)); the cache is keyed by the index tensors' identity, so
        a ``replace`` with new indices recomputes it.
        """
        cached = self._layout_cache
        if cached is not None and cached[0] is self.bag_index and cached[1] is self.win_bag:
            return cached[2], cached[3], cached[4], cached[5]
        counts, win_counts = self.sentence_counts(), self.window_counts()
        starts, win_starts = _starts(counts), _starts(win_counts)
        self._layout_cache = (self.bag_index, self.win_bag, counts, starts, win_counts, win_starts)
        return counts, starts, win_counts, win_starts

    @property
    def n_bags(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_sentences(self) -> int:
        return int(self.bag_index.shape[0])

    @property
    def device(self) -> torch.device:
        return self.sent_emb.device

    def sentence_counts(self) -> torch.Tensor:
        return segment_count(self.bag_index, self.n_bags, torch.long)

    def window_counts(self) -> torch.Tensor:
        return segment_count(self.win_bag, self.n_bags, torch.long)

    def to(self, device: torch.device | str) -> BagSet:
        moved: dict[str, Any] = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v)
            for k, v in self.__dict__.items()
            if k != "_layout_cache"
        }
        if moved["sent_emb"] is not self.sent_emb:  # copied to another device: no longer the mapping
            moved["sent_pages"] = None
        return BagSet(**moved)

    def _read_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``sent_emb[rows]`` as float32 (K, d); from a file mapping, its pages are dropped right after."""
        out = self.sent_emb[rows].float()
        if self.sent_pages is not None:
            self.sent_pages.release()
        return out

    def sentence_window_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (sentence, window of its bag) pair -> pair_sent (Q,), pair_win (Q,)."""
        win_counts = self.window_counts()
        per_sentence = win_counts[self.bag_index]
        pair_sent = torch.repeat_interleave(torch.arange(self.n_sentences, device=self.device), per_sentence)
        pair_win = gather_ranges(_starts(win_counts)[self.bag_index], per_sentence)
        return pair_sent, pair_win

    def with_cosine_target(self) -> BagSet:
        """t_i = (1 + cos(e(c), e(s_i))) / 2, max over the bag's context windows."""
        pair_sent, pair_win = self.sentence_window_pairs()
        cos = torch.empty(pair_sent.shape[0], device=self.device)  # (Q,)
        for lo in range(0, pair_sent.shape[0], _CHUNK):  # bounded memory: (chunk, d) at a time, not (Q, d)
            hi = lo + _CHUNK
            cos[lo:hi] = (self._read_rows(pair_sent[lo:hi]) * self.ctx_emb[pair_win[lo:hi]].float()).sum(1)
        target = segment_max((1.0 + cos) / 2.0, pair_sent, self.n_sentences).clamp(0.0, 1.0)
        return replace(self, cos_target=target)

    def with_correlation_pairs(self, max_pairs: int = 20_000_000) -> BagSet:
        """All ordered sentence pairs inside each bag with R_ij = (1 + pearson(e_i, e_j)) / 2."""
        counts = self.sentence_counts()
        n_pairs_per_bag = counts * counts
        total = int(n_pairs_per_bag.sum())
        if total > max_pairs:
            raise ValueError(
                f"{total} sentence pairs exceed max_pairs={max_pairs}; split very long responses"
            )
        pair_bag = torch.repeat_interleave(torch.arange(self.n_bags, device=self.device), n_pairs_per_bag)
        k = torch.arange(total, device=self.device) - _starts(n_pairs_per_bag)[pair_bag]
        size = counts[pair_bag]
        first = _starts(counts)[pair_bag]
        pair_i = first + torch.div(k, size, rounding_mode="floor")
        pair_j = first + k % size
        emb = self.sent_emb.float()
        if self.sent_pages is not None:
            self.sent_pages.release()
        centred = emb - emb.mean(1, keepdim=True)
        centred = torch.nn.functional.normalize(centred, dim=1)
        r = (1.0 + (centred[pair_i] * centred[pair_j]).sum(1)) / 2.0
        return replace(self, pair_i=pair_i, pair_j=pair_j, pair_r=r.clamp(0.0, 1.0))

    @property
    def full_precision(self) -> bool:
        """Whether the embeddings are float32 (else stored in reduced precision, read in upcast chunks)."""
        return self.sent_emb.dtype == torch.float32 and self.ctx_emb.dtype == torch.float32

    def chunks(self, n_bags: int = CHUNK_BAGS) -> Iterator[BagSet]:
        """The bags in order, ``n_bags`` at a time, each chunk a float32 :meth:`select` (at least one chunk):
        how a whole-set pass over float16 (e.g. memory-mapped) embeddings stays bounded in memory."""
        ids = torch.arange(self.n_bags, device=self.device)
        for lo in range(0, max(self.n_bags, 1), n_bags):
            yield self.select(ids[lo : lo + n_bags])

    def per_sentence(self, fn: Callable[[BagSet], torch.Tensor], n_bags: int = CHUNK_BAGS) -> torch.Tensor:
        """``fn`` (a chunk -> one row per sentence of it) over :meth:`chunks`, the rows written in place into
        one (N, ...) tensor. Not a list of chunk outputs joined at the end: each small output kept between two
        chunks' large float32 temporaries fragmented the heap, and a 1M-sentence scoring pass then grew the
        process by ~1.4 GB in some runs (glibc does not return a hole it cannot reuse)."""
        out: torch.Tensor | None = None
        lo = 0
        for chunk in self.chunks(n_bags):
            part = fn(chunk)  # (n, ...)
            if out is None:
                out = part.new_empty((self.n_sentences, *part.shape[1:]))
            out[lo : lo + part.shape[0]] = part
            lo += part.shape[0]
        assert out is not None and lo == self.n_sentences
        return out

    def bag_range(self, lo: int, hi: int) -> BagSet:
        """Bags ``lo..hi-1`` as views of this set's tensors: nothing is copied or upcast (a memory-mapped
        float16 matrix stays on disk). Constant targets are sliced along; pair targets are not kept."""
        counts, starts, win_counts, win_starts = self._layout()
        if not 0 <= lo <= hi <= self.n_bags:
            raise ValueError(f"bag range {lo}..{hi} outside 0..{self.n_bags}")
        s_lo, s_hi = (int(starts[b]) if b < self.n_bags else self.n_sentences for b in (lo, hi))
        w_total = int(self.win_bag.shape[0])
        w_lo, w_hi = (int(win_starts[b]) if b < self.n_bags else w_total for b in (lo, hi))
        return BagSet(
            sent_emb=self.sent_emb[s_lo:s_hi],
            bag_index=self.bag_index[s_lo:s_hi] - lo,
            ctx_emb=self.ctx_emb[w_lo:w_hi],
            win_bag=self.win_bag[w_lo:w_hi] - lo,
            labels=self.labels[lo:hi],
            gold=self.gold[s_lo:s_hi],
            cos_target=None if self.cos_target is None else self.cos_target[s_lo:s_hi],
            hyb_target=None if self.hyb_target is None else self.hyb_target[s_lo:s_hi],
            sent_pages=self.sent_pages,
        )

    def select(self, bags: torch.Tensor) -> BagSet:
        """The bags ``bags`` (K,) long, renumbered 0..K-1 in the given order, with their targets."""
        counts, starts, win_counts, win_starts = self._layout()
        sent = gather_ranges(starts[bags], counts[bags])
        new_bag_index = torch.repeat_interleave(torch.arange(bags.shape[0], device=self.device), counts[bags])
        win = gather_ranges(win_starts[bags], win_counts[bags])
        new_win_bag = torch.repeat_interleave(
            torch.arange(bags.shape[0], device=self.device), win_counts[bags]
        )
        out = BagSet(
            sent_emb=self._read_rows(sent),
            bag_index=new_bag_index,
            ctx_emb=self.ctx_emb[win].float(),
            win_bag=new_win_bag,
            labels=self.labels[bags],
            gold=self.gold[sent],
            cos_target=None if self.cos_target is None else self.cos_target[sent],
            hyb_target=None if self.hyb_target is None else self.hyb_target[sent],
        )
        if self.pair_i is not None and self.pair_j is not None and self.pair_r is not None:
            # Pairs are stored grouped by bag, n_b^2 per bag: gather the selected bags' runs and renumber.
            n_pairs = counts * counts
            picked = gather_ranges(_starts(n_pairs)[bags], n_pairs[bags])
            old_bag = self.bag_index[self.pair_i[picked]]
            new_start = _starts(counts[bags])
            new_of_old = torch.full((self.n_bags,), -1, dtype=torch.long, device=self.device)
            new_of_old[bags] = torch.arange(bags.shape[0], device=self.device)
            offset = new_start[new_of_old[old_bag]] - starts[old_bag]
            out.pair_i = self.pair_i[picked] + offset
            out.pair_j = self.pair_j[picked] + offset
            out.pair_r = self.pair_r[picked]
        return out
