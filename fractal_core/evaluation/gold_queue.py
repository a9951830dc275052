"""The gold queue over records (the app's per-response score arrays): which responses to label next
(:func:`select_gold`) and why each was proposed, one short sentence per pick with the figures the strategy ranks
by (:func:`selection_reasons`, :func:`explain_gold`). The strategies themselves: ``selection``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.evaluation.selection import (
    STRATEGIES,
    bag_posterior,
    bag_probability,
    binary_entropy,
    binary_labels,
    select_gold_indices,
)
from fractal_core.mil.reductions import segment_count, segment_mean, segment_sum
from fractal_core.mil.variants import DEFAULT_BAG_VARIANT


def flat_scores(
    records: Sequence[ResponseRecord], scores: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Validated flat (score (N,), bag_index (N,), labels (B,), aggregation) of the app's per-response arrays."""
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} score arrays")
    aggregations = {r.aggregation for r in records}
    if len(aggregations) != 1:
        raise ValueError(f"responses mix aggregations {sorted(aggregations)}")
    sizes = [len(r.spans) for r in records]
    for i, (n, s) in enumerate(zip(sizes, scores, strict=True)):
        if np.asarray(s).shape != (n,):
            raise ValueError(f"record {i}: {n} sentences but scores of shape {np.asarray(s).shape}")
    flat = torch.as_tensor(np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]))
    bag_index = torch.repeat_interleave(torch.arange(len(records)), torch.as_tensor(sizes))
    labels = torch.as_tensor(
        [np.nan if r.response_label is None else float(r.response_label) for r in records],
        dtype=torch.float64,
    )
    return flat, bag_index, labels, aggregations.pop()


_UNSURE = (0.2, 0.8)  # a sentence score inside this range counts as "unsure" in the reason strings


def selection_reasons(
    score: torch.Tensor,
    bag_index: torch.Tensor,
    labels: torch.Tensor,
    picks: Sequence[int],
    *,
    aggregation: str,
    strategy: str,
    variant: str = DEFAULT_BAG_VARIANT,
) -> list[str]:
    """Why each picked bag was proposed, one short sentence per pick (the Gold queue shows them).

    ``variant``: the bag aggregation behind P(Y = 1), as in :func:`select_gold_indices`.

    The figures are the ones the strategy ranks by (computed for every bag at once): the response label, how
    many sentences stay unsure given that label, the mean entropy, P(Y = 1) under the scores.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n_bags = int(labels.shape[0])
    score, bag_index, labels = score.detach().cpu().double(), bag_index.cpu(), labels.detach().cpu().double()
    post = bag_posterior(score, bag_index, labels, aggregation=aggregation)
    unsure_given = segment_sum(((post > _UNSURE[0]) & (post < _UNSURE[1])).double(), bag_index, n_bags)
    unsure = segment_sum(((score > _UNSURE[0]) & (score < _UNSURE[1])).double(), bag_index, n_bags)
    sizes = segment_count(bag_index, n_bags, torch.float64)
    post_entropy = segment_mean(binary_entropy(post), bag_index, n_bags) / np.log(
        2
    )  # in bits: 1 = a coin flip
    entropy = segment_mean(binary_entropy(score), bag_index, n_bags) / np.log(2)
    p_yes = bag_probability(score, bag_index, n_bags, aggregation=aggregation, variant=variant)
    y = binary_labels(labels, aggregation)
    out = []
    for b in picks:  # formatting only: the figures above are computed for all bags at once
        n = int(sizes[b])
        label = "unlabelled" if torch.isnan(labels[b]) else f"label {float(labels[b]):g}"
        given = f"{int(unsure_given[b])} of {n} sentences unsure given the {label} (entropy {float(post_entropy[b]):.2f} bit)"
        if strategy == "random":
            reason = f"random draw (the paper's protocol); {label}, {n} sentences"
        elif strategy == "uncertainty":
            reason = (
                f"{int(unsure[b])} of {n} sentence scores unsure (mean entropy {float(entropy[b]):.2f} bit)"
            )
        elif strategy == "posterior":
            reason = given
        elif strategy == "balanced":
            reason = f"most informative among the {label} responses (label shares kept): {given}"
        elif strategy == "representative":
            reason = (
                f"most uncertain among the {label} responses of its length ({n} sentences; label and length "
                f"shares of the pool kept): {int(unsure[b])} of {n} sentence scores unsure "
                f"(mean entropy {float(entropy[b]):.2f} bit)"
            )
        elif strategy == "representative-posterior":
            reason = (
                f"most informative among the {label} responses of its length (label and length shares of the "
                f"pool kept): {given}"
            )
        elif strategy == "stratified":
            reason = f"random draw keeping the pool's label and length shares; {label}, {n} sentences"
        elif strategy == "inconsistency":
            what = "an error somewhere" if aggregation == "max" else "every sentence positive"
            if aggregation == "mean":
                reason = f"{label} but the scores average {float(p_yes[b]):.2f}"
            elif torch.isnan(y[b]):
                reason = f"unlabelled; the scores give P({what}) = {float(p_yes[b]):.2f}"
            else:
                reason = f"{label} but the scores give P({what}) = {float(p_yes[b]):.2f}"
        else:  # diverse
            reason = f"unlike the responses picked before it, and {given}"
        out.append(reason)
    return out


def explain_gold(
    records: Sequence[ResponseRecord], scores: Sequence[np.ndarray], picks: Sequence[int], *, strategy: str
) -> list[str]:
    """:func:`selection_reasons` for the app's records: one reason per index of ``picks``."""
    if not picks:
        return []
    flat, bag_index, labels, aggregation = flat_scores(records, scores)
    return selection_reasons(flat, bag_index, labels, picks, aggregation=aggregation, strategy=strategy)


def select_gold(
    records: Sequence[ResponseRecord],
    scores: Sequence[np.ndarray],
    *,
    k: int,
    strategy: str = "posterior",
    seed: int = 0,
    already: Sequence[int] | None = None,
    embeddings: Sequence[np.ndarray] | None = None,
) -> list[int]:
    """The app's gold queue: indices into ``records`` of the ``k`` responses to label next, in priority order.

    scores: per response, (n_sentences,) P(label >= 1) from the current model; embeddings: per response,
    (n_sentences, d) sentence embeddings (only ``diverse`` needs them). All records must share one aggregation.
    """
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} score arrays")
    if not records:
        return []
    flat, bag_index, labels, aggregation = flat_scores(records, scores)
    emb = None
    if strategy == "diverse":
        if embeddings is None:
            raise ValueError("strategy 'diverse' needs the sentence embeddings of every response")
        dim = next((np.asarray(e).shape[-1] for e in embeddings if len(e)), 1)
        sent = torch.as_tensor(
            np.concatenate([np.asarray(e, dtype=np.float64).reshape(-1, dim) for e in embeddings])
        )
        emb = torch.nn.functional.normalize(segment_mean(sent, bag_index, len(records)), dim=1)
    return select_gold_indices(
        flat,
        bag_index,
        labels,
        aggregation=aggregation,
        k=k,
        strategy=strategy,
        seed=seed,
        already=already,
        bag_embedding=emb,
    )


__all__ = ["explain_gold", "flat_scores", "select_gold", "selection_reasons"]
