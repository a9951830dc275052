"""How any scorer is measured: sentence, bag, given-the-label and first-error figures of its sentence
probabilities on bags with gold labels (frozen scorers, the fine-tuned encoder and the benchmarks alike)."""

from __future__ import annotations

import numpy as np
import torch

from fractal_core.evaluation.metrics import (
    bag_metrics,
    expected_calibration_error,
    first_error_accuracy,
    first_error_top_k,
    sentence_metrics,
)
from fractal_core.fitting.bags import BagSet
from fractal_core.mil.aggregate import aggregate, bag_positive_score, positive_score
from fractal_core.mil.posterior import first_error_log_distribution, posterior_scores


def first_error_metrics(gold: np.ndarray, logp: torch.Tensor, bags: BagSet) -> dict[str, float]:
    """Where the first gold positive of each erroneous response ranks (max bags in step order).

    Two readings of the same model: the marginal argmax (the paper's first-error accuracy) and the first-error
    distribution given the response has an error, P(first = i | Y >= 1) (``fractal_core.mil.posterior``), which is
    how the reviewer is pointed at a step. Top-1 accuracy and top-3 hit rate of each.
    """
    bag_index = bags.bag_index.cpu().numpy()
    marginal = positive_score(logp).cpu().numpy()
    given = first_error_log_distribution(logp, bags.bag_index, bags.n_bags).cpu().numpy()
    return {
        "first_error_acc": first_error_accuracy(gold, marginal, bag_index, bags.n_bags),
        "first_error_top3": first_error_top_k(gold, marginal, bag_index, bags.n_bags, k=3),
        "first_error_acc_given_y": first_error_accuracy(gold, given, bag_index, bags.n_bags),
        "first_error_top3_given_y": first_error_top_k(gold, given, bag_index, bags.n_bags, k=3),
    }


def evaluation_metrics(
    proba: torch.Tensor, bags: BagSet, *, aggregation: str, n_classes: int
) -> dict[str, float]:
    """Sentence and bag metrics of sentence probabilities ``proba`` (N, C) on bags with gold labels: bag-blind
    sentence metrics, bag metrics, the AUC given each response's label, the step ECE (``step_ece``: of
    P(level >= 1) on the labelled steps, 10 bins) and, for max bags, the first-error figures. Any scorer is
    measured by this one rule."""
    logp = proba.clamp_min(1e-12).log()
    score = positive_score(logp)
    levels = torch.arange(n_classes, dtype=proba.dtype, device=proba.device)
    gold = bags.gold.cpu().numpy()
    out = sentence_metrics(
        gold,
        score.cpu().numpy(),
        expected_level=(proba * levels).sum(1).cpu().numpy(),
        n_classes=n_classes,
    )
    out["step_ece"] = expected_calibration_error(gold, score.cpu().numpy())
    bag_out = aggregate(logp, bags.bag_index, bags.n_bags, aggregation=aggregation, variant="prob")
    out.update(
        bag_metrics(
            bags.labels.cpu().numpy(),
            bag_positive_score(bag_out).cpu().numpy(),
            aggregation=aggregation,
        )
    )
    # The product view: scores given each response's own label (the naive baseline is its degenerate case).
    conditioned = posterior_scores(logp, bags.bag_index, bags.labels, aggregation=aggregation)
    given = sentence_metrics(gold, conditioned.cpu().numpy())
    out["posterior_auc_roc"] = given["instance_auc_roc"]
    out["posterior_auprc"] = given["instance_auprc"]
    if aggregation == "max":
        out.update(first_error_metrics(gold, logp, bags))
    return out


__all__ = ["evaluation_metrics", "first_error_metrics"]
