"""Preference pairs (a chosen and a rejected response) as bags the preference loss trains on, and their colouring.

Sentence scores stay what every other method learns, P(level >= 1): how likely a sentence is wrong. PrefBagLoss
(``fitting.preference``) makes the *second* bag of a pair the one with the higher mean score, so a pair is laid
out chosen first, rejected second, with P(rejected scores higher) = (1 + strength) / 2: strength 1 is a sure
preference, 0 none. The colouring given the preference is ``mil.preference_posterior``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.preference import preference_bags
from fractal_core.mil.preference_posterior import preference_posterior


def rejected_worse(strength: torch.Tensor) -> torch.Tensor:
    """P(the rejected response has the higher error score) (K,) from each pair's strength (K,) in [0, 1]."""
    return (1.0 + strength.float().clamp(0.0, 1.0)) / 2.0


def preference_triples(pairs: Sequence[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """``(chosen, rejected, strength)`` pairs as the ``(i, j, p)`` triples of ``FractalModel.fit_preferences``:
    j is the rejected response, p = P(it has the higher error score) (:func:`rejected_worse`)."""
    p = rejected_worse(torch.tensor([float(s) for _, _, s in pairs], dtype=torch.float64)).tolist()
    return [(int(c), int(r), q) for (c, r, _), q in zip(pairs, p, strict=True)]


def pair_bags(bags: BagSet, chosen: torch.Tensor, rejected: torch.Tensor, strength: torch.Tensor) -> BagSet:
    """Bags laid out as pairs for the preference loss and the colouring: bag 2k is ``bags``' response
    ``chosen[k]``, bag 2k + 1 is ``rejected[k]`` (K,) long; a response may appear in several pairs."""
    if not (chosen.shape == rejected.shape == strength.shape):
        raise ValueError("chosen, rejected and strength need one entry per pair")
    return preference_bags(bags, chosen, rejected, rejected_worse(strength))


def pair_strength(paired: BagSet) -> torch.Tensor:
    """Each pair's strength (K,) back from bags laid out by :func:`pair_bags`."""
    return (paired.labels[1::2].double() * 2.0 - 1.0).clamp(0.0, 1.0)


def colour_pairs(logp: torch.Tensor, paired: BagSet, *, labels: torch.Tensor | None = None) -> torch.Tensor:
    """What the Pairs page colours: P(level_i >= 1 | the preference[, the labels]) (N,) float64 for the
    sentences of bags laid out by :func:`pair_bags`, from the model's log-probabilities ``logp`` (N, C) on them
    and the levels people entered ``labels`` (N,), NaN where unlabelled."""
    return preference_posterior(logp, paired.bag_index, pair_strength(paired), labels=labels)


def colour_scored_pairs(
    scores: np.ndarray, sizes: np.ndarray, strength: np.ndarray, labels: np.ndarray | None = None
) -> np.ndarray:
    """The colouring given the preference from stored step probabilities, for every page and export: scores
    (N,) P(step wrong) of the sentences of K pairs laid out chosen, rejected, chosen, ... (``sizes`` (2K,)
    sentences per response), each pair's ``strength`` (K,), and the levels people entered ``labels`` (N,), NaN
    where unlabelled. Returns P(wrong | the rejected response lost, the labels) (N,) float64, at once."""
    p = torch.from_numpy(np.clip(np.asarray(scores, dtype=np.float64), 1e-9, 1.0 - 1e-9))
    sizes_t = torch.from_numpy(np.asarray(sizes, dtype=np.int64))
    bag_index = torch.repeat_interleave(torch.arange(len(sizes_t)), sizes_t)
    given = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.float64))
    colour = preference_posterior(
        torch.stack([torch.log1p(-p), p.log()], 1),
        bag_index,
        torch.from_numpy(np.asarray(strength, dtype=np.float64)),
        labels=given,
    )
    return colour.numpy()


__all__ = [
    "colour_pairs",
    "colour_scored_pairs",
    "pair_bags",
    "pair_strength",
    "preference_triples",
    "rejected_worse",
]
