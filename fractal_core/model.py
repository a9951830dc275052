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
from fractal_core.segments import segment_argmax, segment_count


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

    def spec(self) -> dict[str, object]:
        """What :func:`build_scorer` needs to rebuild this scorer before loading its weights."""
        return {"kind": "mlp"}

    def _sentence_hidden(self, bags: BagSet) -> torch.Tensor:
        """The sentence part of the first layer (N, h); the context window part is added per window."""
        return self.sentence_proj(bags.sent_emb)

    def forward(self, bags: BagSet) -> torch.Tensor:
        """Sentence log-probabilities (N, C) for every sentence of ``bags``."""
        ctx = self.context_proj(bags.ctx_emb)  # (W, h), once per window
        sent = self._sentence_hidden(bags)  # (N, h)
        if bags.ctx_emb.shape[0] == bags.n_bags:  # one window per bag: the common, fast case
            return self._head(sent + ctx[bags.bag_index])  # win_bag == arange(B) here
        pair_sent, pair_win = bags.sentence_window_pairs()
        logp = self._head(sent[pair_sent] + ctx[pair_win])  # (Q, C)
        best = segment_argmax(log_positive(logp), pair_sent, bags.n_sentences)  # (N,)
        return logp[best]


def sentence_positions(bag_index: torch.Tensor, n_bags: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of every sentence inside its bag (N,) long (0-based) and its bag's size (N,) long.

    ``bag_index`` is sorted ascending (the BagSet layout), so a bag's sentences are one contiguous run.
    """
    counts = segment_count(bag_index, n_bags, torch.long)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(bag_index.shape[0], device=bag_index.device) - starts[bag_index]
    return position, counts[bag_index]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a, b, dim=1, eps=1e-8)


def context_features(bags: BagSet, *, causal: bool, products: bool = True) -> torch.Tensor:
    """Constant features of each sentence's place in its response (N, F), from the frozen embeddings.

    Causal (steps: step i sees steps 1..i only): mean of the earlier sentences, the previous sentence, their
    products with the sentence itself, and scalars (first?, log position, cosine to the previous sentence and to
    the earlier mean). Bidirectional (other text) adds the same from the later sentences and the relative
    position. Prefix sums are one float64 cumulative sum over the flat sentences minus each bag's offset: no
    loop over bags.
    """
    emb = bags.sent_emb  # (N, d)
    n_sent = emb.shape[0]
    position, size = sentence_positions(bags.bag_index, bags.n_bags)  # (N,), (N,)
    start = torch.arange(n_sent, device=emb.device) - position  # flat index of the bag's first sentence
    cumulative = torch.cumsum(emb.double(), 0)  # (N, d)
    before_bag = cumulative[start] - emb[start].double()  # sum of everything before the bag
    upto = cumulative - before_bag  # sum of the bag's sentences 0..i
    has_prev = (position > 0).unsqueeze(1)
    earlier_mean = ((upto - emb.double()) / position.clamp_min(1).unsqueeze(1)).float()
    earlier_mean = torch.where(has_prev, earlier_mean, torch.zeros_like(earlier_mean))
    previous = torch.where(has_prev, emb[(torch.arange(n_sent, device=emb.device) - 1).clamp_min(0)], 0.0)
    pos = position.float()
    parts = [earlier_mean, previous, *([emb * earlier_mean, emb * previous] if products else [])]
    parts += [
        (position == 0).float().unsqueeze(1),
        torch.log1p(pos).unsqueeze(1),
        _cosine(emb, previous).unsqueeze(1),
        _cosine(emb, earlier_mean).unsqueeze(1),
    ]
    if not causal:
        has_next = (position < size - 1).unsqueeze(1)
        total = cumulative[start + size - 1] - before_bag  # (N, d): the whole bag's sum
        later_mean = ((total - upto) / (size - 1 - position).clamp_min(1).unsqueeze(1)).float()
        later_mean = torch.where(has_next, later_mean, torch.zeros_like(later_mean))
        following = torch.where(
            has_next, emb[(torch.arange(n_sent, device=emb.device) + 1).clamp_max(n_sent - 1)], 0.0
        )
        parts += [later_mean, following, *([emb * later_mean, emb * following] if products else [])]
        parts += [
            (pos / (size - 1).clamp_min(1).float()).unsqueeze(1),
            torch.log(size.float()).unsqueeze(1),
            _cosine(emb, following).unsqueeze(1),
            _cosine(emb, later_mean).unsqueeze(1),
        ]
    return torch.cat(parts, dim=1)  # (N, F)


def n_context_features(dim: int, *, causal: bool, products: bool = True) -> int:
    """Width F of :func:`context_features`: 4 vectors (2 without products) and 4 scalars per side."""
    per_side = (4 if products else 2) * dim + 4
    return per_side if causal else 2 * per_side


class ContextScorer(SentenceScorer):
    """The MLP plus what the sentence's response says around it: earlier (and, bidirectional, later) sentences
    and its position. ``causal=True`` for reasoning steps: a step's score never depends on later steps.

    The extra features enter the first layer beside e(sentence), so the rest (windows, head) is the MLP's.
    """

    def __init__(
        self,
        dim: int,
        *,
        n_classes: int = 2,
        hidden: int | None = None,
        causal: bool = True,
        products: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(dim, n_classes=n_classes, hidden=hidden, generator=generator)
        self.causal = causal
        self.products = products
        width = self.sentence_proj.out_features
        n_features = n_context_features(dim, causal=causal, products=products)
        self.feature_proj = nn.Linear(n_features, width, bias=False)
        # Zero at the start: the scorer begins as the MLP and takes up context only where the loss asks for it.
        nn.init.zeros_(self.feature_proj.weight)

    def spec(self) -> dict[str, object]:
        return {"kind": "context", "causal": self.causal, "products": self.products}

    def _sentence_hidden(self, bags: BagSet) -> torch.Tensor:
        features = context_features(bags, causal=self.causal, products=self.products)  # (N, F), constant
        return self.sentence_proj(bags.sent_emb) + self.feature_proj(features)


def build_scorer(
    spec: dict[str, object],
    dim: int,
    *,
    n_classes: int,
    hidden: int | None,
    generator: torch.Generator | None = None,
) -> SentenceScorer:
    """A fresh scorer of the kind ``spec`` names (``SentenceScorer.spec()``): the MLP or the contextual one."""
    kind = spec.get("kind", "mlp")
    if kind == "mlp":
        return SentenceScorer(dim, n_classes=n_classes, hidden=hidden, generator=generator)
    if kind == "context":
        return ContextScorer(
            dim,
            n_classes=n_classes,
            hidden=hidden,
            causal=bool(spec.get("causal", True)),
            products=bool(spec.get("products", True)),
            generator=generator,
        )
    raise ValueError(f"unknown scorer kind {kind!r}; expected 'mlp' or 'context'")
