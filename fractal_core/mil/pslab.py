"""PsLab: the most likely sentence labelling that agrees with each bag's label, vectorised."""

from __future__ import annotations

import torch

from fractal_core.mil.reductions import segment_argmax, segment_argmin, segment_max, segment_min

_NEG = -1e4  # log-probability of a class ruled out by a gold label


def apply_gold(logp: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Replace the predictions of gold-labelled sentences by (near) one-hot log-probabilities."""
    has_gold = gold >= 0
    onehot = torch.full_like(logp, _NEG).scatter(1, gold.clamp_min(0).view(-1, 1), 0.0)
    return torch.where(has_gold.view(-1, 1), onehot, logp)


def pseudo_labels(
    logp: torch.Tensor,
    bag_index: torch.Tensor,
    bag_labels: torch.Tensor,
    *,
    aggregation: str,
    gold: torch.Tensor | None = None,
) -> torch.Tensor:
    """Most likely labels (N,) long consistent with every bag label.

    logp (N, C) sentence log-probabilities; bag_labels (B,) levels. Gold labels (N,), -1 where unknown, are
    kept as they are and the rest is chosen around them.
    """
    if gold is not None:
        logp = apply_gold(logp, gold)
    n_bags = int(bag_labels.shape[0])
    target = bag_labels.long()
    if aggregation == "max" and logp.shape[1] > 2:
        return _ordinal_max(logp, bag_index, target, n_bags)
    p = logp[:, 1].exp() if logp.shape[1] == 2 else 1 - logp[:, 0].exp()
    y = (p > 0.5).long()
    bag_y = target[bag_index]
    if aggregation == "max":
        y = torch.where(bag_y == 0, torch.zeros_like(y), y)
        need = (target >= 1) & (segment_max(y, bag_index, n_bags) < 1)
        pick = segment_argmax(p, bag_index, n_bags)[need]
        y[pick] = 1
        return y
    if aggregation == "min":
        y = torch.where(bag_y == 1, torch.ones_like(y), y)
        need = (target == 0) & (segment_min(y, bag_index, n_bags) > 0)
        pick = segment_argmin(p, bag_index, n_bags)[need]
        y[pick] = 0
        return y
    raise ValueError(f"PsLab is undefined for aggregation {aggregation!r}")


def _ordinal_max(
    logp: torch.Tensor, bag_index: torch.Tensor, target: torch.Tensor, n_bags: int
) -> torch.Tensor:
    n_classes = logp.shape[1]
    y = logp.argmax(1)  # (N,)
    bag_y = target[bag_index]  # (N,)
    levels = torch.arange(n_classes, device=logp.device)
    # Too high somewhere: cap each sentence above Y at its most likely level <= Y.
    allowed = levels.view(1, -1) <= bag_y.view(-1, 1)  # (N, C)
    capped = torch.where(allowed, logp, torch.full_like(logp, float("-inf"))).argmax(1)
    y = torch.where(y > bag_y, capped, y)
    # Nobody reaches Y: raise the sentence most likely to be Y.
    need = segment_max(y, bag_index, n_bags) < target  # (B,)
    likely_y = logp.gather(1, bag_y.view(-1, 1)).squeeze(1)
    pick = segment_argmax(likely_y, bag_index, n_bags)[need]
    y[pick] = target[need]
    return y
