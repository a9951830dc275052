"""One scorer for several criteria: the instance scorer's trunk shared, one output head per criterion.

The trunk is any :class:`~fractal_core.fitting.model.SentenceScorer` (the MLP or the contextual one) whose
output layer is widened to every head at once: a binary head is one logit column, an ordinal head with C levels
C columns, so all heads are one matrix product. Heads of the same task (aggregation and number of levels) form a
*group*: :func:`group_logp` lays a group's g heads out as g stacked copies of the sentences, (g*N, C)
log-probabilities over a bag index of g*B bags, so the suite's losses run once per group on the stacked layout
(their mean over g*B bags is the mean over the group's criteria of each criterion's mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.model import SentenceScorer, build_scorer, init_linear
from fractal_core.mil.reductions import segment_argmax


@dataclass(frozen=True)
class Criterion:
    """A criterion's task: its name, how its response label aggregates, its number of label levels."""

    name: str
    aggregation: str
    n_classes: int

    @property
    def width(self) -> int:
        """Output columns of its head: one logit for binary labels, one per level for ordinal ones."""
        return 1 if self.n_classes == 2 else self.n_classes


@dataclass(frozen=True)
class HeadGroup:
    """Heads ``heads`` (indices into the criteria) sharing ``aggregation`` and ``n_classes``; ``columns`` (g,
    width) are their output columns."""

    aggregation: str
    n_classes: int
    heads: tuple[int, ...]
    columns: torch.Tensor


def head_groups(criteria: tuple[Criterion, ...]) -> list[HeadGroup]:
    """The criteria grouped by task, in order of first appearance (a handful of groups at most: three
    aggregations times the label kinds in use)."""
    starts = [0]
    for c in criteria:
        starts.append(starts[-1] + c.width)
    keys: dict[tuple[str, int], list[int]] = {}
    for j, c in enumerate(criteria):
        keys.setdefault((c.aggregation, c.n_classes), []).append(j)
    groups = []
    for (aggregation, n_classes), heads in keys.items():
        width = criteria[heads[0]].width
        columns = torch.tensor([[starts[j] + w for w in range(width)] for j in heads], dtype=torch.long)
        groups.append(HeadGroup(aggregation, n_classes, tuple(heads), columns))
    return groups


def group_logp(z: torch.Tensor, group: HeadGroup) -> torch.Tensor:
    """Log-probabilities (g*N, C) of a group's heads from the logits (N, W), head-major (rows j*N .. j*N+N-1
    belong to the group's j-th head)."""
    cols = group.columns.to(z.device)  # (g, width)
    picked = z[:, cols]  # (N, g, width)
    if group.n_classes == 2:
        logit = picked[..., 0].T.reshape(-1)  # (g*N,)
        return torch.stack([nn.functional.logsigmoid(-logit), nn.functional.logsigmoid(logit)], dim=1)
    logp = torch.log_softmax(picked, dim=2)  # (N, g, C)
    return logp.transpose(0, 1).reshape(-1, group.n_classes)


def stacked_index(bag_index: torch.Tensor, n_bags: int, g: int) -> torch.Tensor:
    """The bag index (g*N,) of g stacked copies of the sentences: copy j's bags are j*B .. j*B+B-1."""
    offset = torch.arange(g, device=bag_index.device).view(-1, 1) * n_bags
    return (offset + bag_index.view(1, -1)).reshape(-1)


def unstack(values: torch.Tensor, g: int) -> torch.Tensor:
    """(g*N, ...) head-major -> (N, g, ...)."""
    return values.reshape(g, -1, *values.shape[1:]).transpose(0, 1)


class MultiHeadScorer(nn.Module):
    """A shared trunk and one head per criterion; ``forward`` gives the logits (N, W) of every head."""

    def __init__(
        self,
        spec: dict[str, object],
        dim: int,
        criteria: tuple[Criterion, ...],
        *,
        hidden: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not criteria:
            raise ValueError("a multi-head scorer needs at least one criterion")
        self.criteria = criteria
        self.trunk: SentenceScorer = build_scorer(spec, dim, n_classes=2, hidden=hidden, generator=generator)
        self.trunk.out = nn.Linear(self.trunk.mid.out_features, sum(c.width for c in criteria))
        init_linear(self.trunk.out, generator)
        self.groups = head_groups(criteria)
        head_of = torch.cat([torch.full((c.width,), j, dtype=torch.long) for j, c in enumerate(criteria)])
        self.head_of_column: torch.Tensor
        self.register_buffer("head_of_column", head_of, persistent=False)

    @property
    def dim(self) -> int:
        return self.trunk.dim

    def spec(self) -> dict[str, object]:
        return self.trunk.spec()

    def forward(self, bags: BagSet) -> torch.Tensor:
        """Logits (N, W) of every head for every sentence; with several context windows, each head takes the
        window where its own positive score is highest. Float16 embeddings are read in float32 chunks."""
        if not bags.full_precision:
            if torch.is_grad_enabled():
                return self(bags.select(torch.arange(bags.n_bags, device=bags.device)))
            return bags.per_sentence(self)
        trunk = self.trunk
        ctx = trunk.context_proj(bags.ctx_emb)  # (W, h), once per window
        sent = trunk._sentence_hidden(bags)  # (N, h)
        if bags.ctx_emb.shape[0] == bags.n_bags:
            return trunk._logits(sent + ctx[bags.bag_index])  # (N, W)
        pair_sent, pair_win = bags.sentence_window_pairs()
        z = trunk._logits(sent[pair_sent] + ctx[pair_win])  # (Q, W)
        positive = self._log_positive(z)  # (Q, k)
        k, n, q = positive.shape[1], bags.n_sentences, z.shape[0]
        best = segment_argmax(positive.T.reshape(-1), stacked_index(pair_sent, n, k), k * n)  # (k*N,)
        best = best.view(k, n) - torch.arange(k, device=z.device).view(-1, 1) * q  # pair per (head, sentence)
        return z.gather(0, best[self.head_of_column].T)  # (N, W)

    def _log_positive(self, z: torch.Tensor) -> torch.Tensor:
        """A score increasing in each head's P(level >= 1) (Q, k): the logit of a binary head, the log of the
        probability above level 0 of an ordinal one."""
        out = z.new_empty(z.shape[0], len(self.criteria))
        for group in self.groups:  # a handful of groups, each over all its heads at once
            cols = group.columns.to(z.device)
            picked = z[:, cols]  # (Q, g, width)
            if group.n_classes == 2:
                out[:, list(group.heads)] = picked[..., 0]
            else:
                out[:, list(group.heads)] = torch.logsumexp(torch.log_softmax(picked, 2)[..., 1:], 2)
        return out

    def head_scorer(self, j: int) -> SentenceScorer:
        """Criterion ``j``'s scorer on its own: a single-criterion :class:`SentenceScorer` of the trunk's kind
        holding the shared trunk's weights and head ``j``'s output columns, so it scores that criterion as this
        model does (a single scorer takes the window where its own positive score is highest, as head ``j``
        does here) and saves, loads and serves as any single-criterion model's scorer."""
        criterion = self.criteria[j]
        start = sum(c.width for c in self.criteria[:j])
        trunk = self.trunk
        single = build_scorer(
            trunk.spec(), trunk.dim, n_classes=criterion.n_classes, hidden=trunk.context_proj.out_features
        )
        state = {k: v.detach().clone() for k, v in trunk.state_dict().items()}
        for name in ("out.weight", "out.bias"):
            state[name] = state[name][start : start + criterion.width]
        single.load_state_dict(state)
        return single.to(trunk.out.weight.device).eval()

    def head_logp(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per criterion, its log-probabilities (N, C) from the logits (N, W)."""
        out: list[torch.Tensor | None] = [None] * len(self.criteria)
        for group in self.groups:
            per_head = unstack(group_logp(z, group), len(group.heads))  # (N, g, C)
            for i, j in enumerate(group.heads):
                out[j] = per_head[:, i]
        return [t for t in out if t is not None]


__all__ = [
    "Criterion",
    "HeadGroup",
    "MultiHeadScorer",
    "group_logp",
    "head_groups",
    "stacked_index",
    "unstack",
]
