"""The instance scorer: an MLP over [e(context); e(sentence)] (method.md §2).

2d -> h -> h/2 -> C with GELU. The first layer factorises as W_c e(c) + W_s e(s), so the context part is
computed once per window, not once per sentence. A sentence's prediction is taken from the context window
where its positive score is highest (the max over windows).
"""

from __future__ import annotations

import torch
from torch import nn

from fractal_core.aggregate import log_positive
from fractal_core.bags import BagSet
from fractal_core.segments import segment_argmax


class SentenceScorer(nn.Module):
    """Scores sentences given their context; outputs log-probabilities over ``n_classes`` levels."""

    def __init__(
        self,
        dim: int,
        *,
        n_classes: int = 2,
        hidden: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        hidden = hidden or dim
        self.dim = dim
        self.n_classes = n_classes
        self.context_proj = nn.Linear(dim, hidden, bias=False)
        self.sentence_proj = nn.Linear(dim, hidden)
        self.mid = nn.Linear(hidden, hidden // 2)
        # Binary heads use one logit (sigmoid); ordinal heads a softmax over the levels.
        self.out = nn.Linear(hidden // 2, 1 if n_classes == 2 else n_classes)
        self.act = nn.GELU()
        self._init(generator)

    def _init(self, generator: torch.Generator | None) -> None:
        # Seeded init without touching the global RNG (same scheme as nn.Linear's default).
        for layer in (self.context_proj, self.sentence_proj, self.mid, self.out):
            nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=generator)
            if layer.bias is not None:
                bound = 1.0 / layer.weight.shape[1] ** 0.5
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        z = self.out(self.act(self.mid(self.act(hidden))))  # (Q, 1) or (Q, C)
        if self.n_classes == 2:
            z = z.squeeze(1)
            return torch.stack([nn.functional.logsigmoid(-z), nn.functional.logsigmoid(z)], dim=1)
        return torch.log_softmax(z, dim=1)

    def forward(self, bags: BagSet) -> torch.Tensor:
        """Sentence log-probabilities (N, C) for every sentence of ``bags``."""
        ctx = self.context_proj(bags.ctx_emb)  # (W, h), once per window
        sent = self.sentence_proj(bags.sent_emb)  # (N, h)
        if bags.ctx_emb.shape[0] == bags.n_bags:  # one window per bag: the common, fast case
            return self._head(sent + ctx[bags.bag_index])  # win_bag == arange(B) here
        pair_sent, pair_win = bags.sentence_window_pairs()
        logp = self._head(sent[pair_sent] + ctx[pair_win])  # (Q, C)
        best = segment_argmax(log_positive(logp), pair_sent, bags.n_sentences)  # (N,)
        return logp[best]
