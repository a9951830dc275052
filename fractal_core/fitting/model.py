"""The instance scorer: an MLP over [e(context); e(sentence)].

2d -> h -> h/2 -> C with GELU. The first layer factorises as W_c e(c) + W_s e(s), so the context part is
computed once per window, not once per sentence. A sentence's prediction is taken from the context window
where its positive score is highest (the max over windows).
"""

from __future__ import annotations

import torch
from torch import nn

from fractal_core.fitting.bags import BagSet
from fractal_core.mil.aggregate import log_positive
from fractal_core.mil.reductions import segment_argmax, segment_count


def init_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """Seeded init without touching the global RNG (same scheme as nn.Linear's default)."""
    nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=generator)
    if layer.bias is not None:
        bound = 1.0 / layer.weight.shape[1] ** 0.5
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


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
        for layer in (self.context_proj, self.sentence_proj, self.mid, self.out):
            init_linear(layer, generator)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer's logits (Q, outputs) of first-layer activations (Q, h)."""
        return self.out(self.act(self.mid(self.act(hidden))))

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        z = self._logits(hidden)  # (Q, 1) or (Q, C)
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
        """Sentence log-probabilities (N, C) for every sentence of ``bags``.

        Embeddings stored in reduced precision (float16, e.g. memory-mapped) are upcast to float32 first: a
        whole-set pass without gradients (scoring, validation, pseudo-labels) reads them in chunks of bags
        (:meth:`BagSet.chunks`), so it never holds the whole set in float32.
        """
        if not bags.full_precision:
            if torch.is_grad_enabled():
                return self(bags.select(torch.arange(bags.n_bags, device=bags.device)))
            return bags.per_sentence(self)
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


def neighbour_summaries(
    values: torch.Tensor, position: torch.Tensor, size: torch.Tensor, *, causal: bool
) -> list[torch.Tensor]:
    """For every sentence, summaries of the other sentences of its bag, each (N, k) like ``values`` (N, k):
    the mean of the earlier ones and the previous one (zeros for a first sentence); bidirectional adds the mean
    of the later ones and the next one (zeros for a last sentence).

    ``position``/``size`` come from :func:`sentence_positions`. Prefix sums are one float64 cumulative sum over
    the flat sentences minus each bag's offset: no loop over bags, and a sentence's earlier summaries do not
    depend on anything after it.
    """
    n = values.shape[0]
    flat = torch.arange(n, device=values.device)
    start = flat - position  # flat index of the bag's first sentence
    cumulative = torch.cumsum(values.double(), 0)  # (N, k)
    before_bag = cumulative[start] - values[start].double()
    upto = cumulative - before_bag  # sum over the bag's sentences 0..i
    has_prev = (position > 0).unsqueeze(1)
    earlier = ((upto - values.double()) / position.clamp_min(1).unsqueeze(1)).to(values.dtype)
    zeros = torch.zeros_like(values)
    out = [
        torch.where(has_prev, earlier, zeros),
        torch.where(has_prev, values[(flat - 1).clamp_min(0)], zeros),
    ]
    if not causal:
        has_next = (position < size - 1).unsqueeze(1)
        total = cumulative[start + size - 1] - before_bag  # the whole bag's sum
        later = ((total - upto) / (size - 1 - position).clamp_min(1).unsqueeze(1)).to(values.dtype)
        following = values[(flat + 1).clamp_max(n - 1)]
        out += [torch.where(has_next, later, zeros), torch.where(has_next, following, zeros)]
    return out


def position_features(bags: BagSet, *, causal: bool) -> torch.Tensor:
    """Constant scalars of each sentence's place in its bag (N, 4) causal or (N, 8) bidirectional.

    Causal: first sentence?, log(1 + position), cosine of e(s_i) to the previous sentence and to the mean of the
    earlier ones. Bidirectional adds the relative position i / (n - 1), log n, and the cosines to the next
    sentence and to the mean of the later ones.
    """
    emb = bags.sent_emb  # (N, d)
    position, size = sentence_positions(bags.bag_index, bags.n_bags)
    summaries = neighbour_summaries(emb, position, size, causal=causal)
    pos = position.to(emb.dtype)
    columns = [
        (position == 0).to(emb.dtype),
        torch.log1p(pos),
        _cosine(emb, summaries[1]),
        _cosine(emb, summaries[0]),
    ]
    if not causal:
        columns += [
            pos / (size - 1).clamp_min(1).to(emb.dtype),
            torch.log(size.to(emb.dtype)),
            _cosine(emb, summaries[3]),
            _cosine(emb, summaries[2]),
        ]
    return torch.stack(columns, dim=1)


class ContextScorer(SentenceScorer):
    """The MLP plus what the sentence's response says around it: the earlier (and, bidirectional, the later)
    sentences and its position. ``causal=True`` for reasoning steps: a step's score never depends on later ones.

    Each sentence is first reduced to ``rank`` dimensions (a learned projection); the summaries of its neighbours
    (:func:`neighbour_summaries`) and, with ``products``, their elementwise products with its own reduction, plus
    the position scalars, enter the first layer beside e(sentence). The low rank keeps the cost near the MLP's
    (BENCHMARKS.md) and the extra capacity small; windows and head are the MLP's.
    """

    def __init__(
        self,
        dim: int,
        *,
        n_classes: int = 2,
        hidden: int | None = None,
        causal: bool = True,
        products: bool = True,
        rank: int = 64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(dim, n_classes=n_classes, hidden=hidden, generator=generator)
        self.causal = causal
        self.products = products
        self.rank = rank
        sides = 1 if causal else 2
        n_features = sides * ((4 if products else 2) * rank + 4)
        self.reduce = nn.Linear(dim, rank, bias=False)
        self.feature_proj = nn.Linear(n_features, self.sentence_proj.out_features, bias=False)
        nn.init.kaiming_uniform_(self.reduce.weight, a=5**0.5, generator=generator)
        # Zero at the start: the scorer begins as the MLP and takes up context where the loss asks for it.
        nn.init.zeros_(self.feature_proj.weight)

    def spec(self) -> dict[str, object]:
        return {"kind": "context", "causal": self.causal, "products": self.products, "rank": self.rank}

    def _sentence_hidden(self, bags: BagSet) -> torch.Tensor:
        position, size = sentence_positions(bags.bag_index, bags.n_bags)
        reduced = self.reduce(bags.sent_emb)  # (N, r)
        summaries = neighbour_summaries(reduced, position, size, causal=self.causal)  # 2 or 4 x (N, r)
        if self.products:
            summaries += [reduced * s for s in summaries]
        with torch.no_grad():
            scalars = position_features(bags, causal=self.causal)  # (N, 4 or 8), constant
        features = torch.cat([*summaries, scalars], dim=1)  # (N, F)
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
        rank = spec.get("rank", 64)
        return ContextScorer(
            dim,
            n_classes=n_classes,
            hidden=hidden,
            causal=bool(spec.get("causal", True)),
            products=bool(spec.get("products", True)),
            rank=int(rank) if isinstance(rank, int | float | str) else 64,
            generator=generator,
        )
    raise ValueError(f"unknown scorer kind {kind!r}; expected 'mlp' or 'context'")
