"""Segment (ragged-bag) reductions over a flat sentence axis.

A batch of bags is a flat tensor of sentences plus ``bag_index`` (N,) with values in [0, B). Every function here
is a scatter/segment reduction: no Python loop over bags.
"""

from __future__ import annotations

import torch


def segment_sum(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Sum of ``values`` (N, ...) per bag -> (B, ...)."""
    out = values.new_zeros((n_bags, *values.shape[1:]))
    return out.index_add(0, bag_index, values)


def segment_count(bag_index: torch.Tensor, n_bags: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Number of sentences per bag -> (B,)."""
    return torch.zeros(n_bags, dtype=dtype, device=bag_index.device).index_add(
        0, bag_index, torch.ones_like(bag_index, dtype=dtype)
    )


def segment_mean(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Mean of ``values`` (N, ...) per bag -> (B, ...); empty bags give 0."""
    counts = segment_count(bag_index, n_bags, values.dtype).clamp_min(1)
    total = segment_sum(values, bag_index, n_bags)
    return total / counts.view(-1, *([1] * (values.dim() - 1)))


def segment_max(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Max of ``values`` (N, ...) per bag -> (B, ...); gradient flows to the arg-max only."""
    idx = bag_index.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    lowest = float("-inf") if values.is_floating_point() else torch.iinfo(values.dtype).min
    out = values.new_full((n_bags, *values.shape[1:]), lowest)
    return out.scatter_reduce(0, idx, values, reduce="amax", include_self=True)


def segment_min(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Min of ``values`` (N, ...) per bag -> (B, ...)."""
    return -segment_max(-values, bag_index, n_bags)


def segment_logsumexp(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """log(sum(exp(values))) per bag, stable -> (B, ...)."""
    peak = segment_max(values.detach(), bag_index, n_bags)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    shifted = torch.exp(values - peak[bag_index])
    return torch.log(segment_sum(shifted, bag_index, n_bags)) + peak


def segment_argmax(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Flat index of the first maximum of ``values`` (N,) in each bag -> (B,) long; -1 for empty bags."""
    n = values.shape[0]
    peak = segment_max(values, bag_index, n_bags)
    is_peak = values == peak[bag_index]
    positions = torch.arange(n, device=values.device)
    candidate = torch.where(is_peak, positions, torch.full_like(positions, n))
    first = torch.full((n_bags,), n, dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, bag_index, candidate, reduce="amin", include_self=True)
    return torch.where(first == n, torch.full_like(first, -1), first)


def segment_argmin(values: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Flat index of the first minimum of ``values`` (N,) per bag -> (B,) long; -1 for empty bags."""
    return segment_argmax(-values, bag_index, n_bags)


def gather_ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenate ``arange(starts[k], starts[k] + counts[k])`` for every k, vectorised -> (counts.sum(),)."""
    total = int(counts.sum().item())
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=starts.device)
    owner_start = torch.repeat_interleave(starts, counts)
    run_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return owner_start + torch.arange(total, device=starts.device) - run_start
