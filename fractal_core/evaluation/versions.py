"""Two model versions on the same gold sentences: paired differences with a bootstrap over responses.

A newer version should replace the active one only when the gold labels give no reason to think it is worse.
Both versions score the same gold sentences, so their errors are correlated: the difference of two separate
intervals would be far too wide, and resampling sentences would ignore that sentences of one response are not
independent (one confusing response moves all of its sentences). Each bootstrap replicate therefore draws
*responses* with replacement (seeded) and recomputes both versions' figures on the same draw; the interval of
the difference is the percentile interval of the replicates.

The rule (:func:`compare_versions`, ``not_worse``): version B is *not worse than A beyond noise* when the lower
end of the interval of ``AUC(B) - AUC(A)`` lies above ``-margin``. An equal version passes (its difference is 0
in every replicate); a version whose AUC is lower by more than the noise of the gold set allows is held back;
with too few gold labels to tell (a wide interval, or no positive or no negative sentence) the evidence is
missing and the rule does not pass either: a person decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MARGIN = 0.02
"""AUC points B may lose against A and still count as not worse (a smaller loss is within what retraining on
the same data moves by)."""

DEFAULT_LEVEL = 0.95
"""Two-sided coverage of the bootstrap percentile intervals."""

DEFAULT_RESAMPLES = 2000
"""Bootstrap replicates (responses drawn with replacement)."""

_CHUNK_ELEMENTS = (
    4_000_000  # (replicates x sentences) weights held at once: bounded memory on large gold sets
)


@dataclass(frozen=True)
class Estimate:
    """A figure on the gold set and its bootstrap percentile interval (``nan`` when undefined)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class VersionComparison:
    """Version A against version B on the same gold sentences. Differences are ``B - A``.

    ``auc``/``brier``/``accuracy`` hold (A, B, B - A) estimates. Brier score (mean squared error of the score
    against the 0/1 label) is lower-is-better; AUC-ROC and accuracy at 0.5 are higher-is-better.
    """

    auc: tuple[Estimate, Estimate, Estimate]
    brier: tuple[Estimate, Estimate, Estimate]
    accuracy: tuple[Estimate, Estimate, Estimate]
    n_sentences: int
    n_positives: int
    n_responses: int
    resamples: int  # replicates in which both classes were drawn (the AUC is defined)
    level: float
    margin: float
    seed: int
    not_worse: bool  # B is not worse than A beyond noise (see the module docstring)
    reason: str  # one sentence saying why ``not_worse`` is what it is

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe summary (NaN becomes None) to store beside a model version."""

        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        def triple(t: tuple[Estimate, Estimate, Estimate]) -> dict[str, list[float | None]]:
            return {
                k: [clean(e.value), clean(e.low), clean(e.high)]
                for k, e in zip(("a", "b", "diff"), t, strict=True)
            }

        return {
            "auc": triple(self.auc),
            "brier": triple(self.brier),
            "accuracy": triple(self.accuracy),
            "n_sentences": self.n_sentences,
            "n_positives": self.n_positives,
            "n_responses": self.n_responses,
            "resamples": self.resamples,
            "level": self.level,
            "margin": self.margin,
            "seed": self.seed,
            "not_worse": self.not_worse,
            "reason": self.reason,
        }


def response_weights(
    response_index: np.ndarray, n_responses: int, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Bootstrap weights (n, N) per sentence: how often its response was drawn in each of ``n`` replicates.

    ``response_index`` (N,) maps each sentence to its response in ``0..n_responses-1``; every replicate draws
    ``n_responses`` responses with replacement (multinomial counts), and each sentence inherits its response's
    count.
    """
    counts = rng.multinomial(n_responses, np.full(n_responses, 1.0 / n_responses), size=n)  # (n, R)
    return counts[:, response_index].astype(np.float64)  # (n, N)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact AUC-ROC (ties count 1/2) of ``scores`` (N,) against ``positive`` (N,) under each row of sentence
    ``weights`` (n, N) -> (n,); NaN in a row without positive or negative weight.

    With unit weights this is the Mann-Whitney AUC of ``fractal_core.evaluation.metrics.auc_roc``. Sentences are
    sorted once; per row, the negative weight below each tie group comes from one cumulative sum, so a row costs
    O(N) and no loop runs over replicates or sentences.
    """
    if len(scores) == 0:
        return np.full(len(weights), np.nan)
    order = np.argsort(scores, kind="mergesort")
    s, pos = scores[order], positive[order]
    w = weights[:, order]  # (n, N)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s)) + 1])  # first index of each tie group
    group = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(s)]])))  # (N,)
    neg_w = np.where(pos, 0.0, w)  # (n, N)
    pos_w = np.where(pos, w, 0.0)
    neg_in_group = np.add.reduceat(neg_w, starts, axis=1)  # (n, G)
    neg_below = np.cumsum(neg_in_group, axis=1) - neg_in_group  # (n, G) negative weight strictly below
    credit = neg_below[:, group] + 0.5 * neg_in_group[:, group]  # (n, N) wins + half ties per sentence
    total_pos, total_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_w * credit).sum(axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def _weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of ``values`` (N,) under each row of ``weights`` (n, N) -> (n,)."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ values / total, np.nan)


def _figures(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(3, n): AUC-ROC, Brier score and accuracy at 0.5 of one version under each weight row."""
    y = positive.astype(np.float64)
    return np.stack(
        [
            weighted_auc(scores, positive, weights),
            _weighted_means((scores - y) ** 2, weights),
            _weighted_means(((scores >= 0.5) == positive).astype(np.float64), weights),
        ]
    )


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def auc_estimate(
    scores: np.ndarray,
    labels: np.ndarray,
    response_index: np.ndarray,
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """One version's AUC-ROC on gold sentences with its bootstrap interval over responses (shapes as in
    :func:`compare_versions`); NaN when a class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels) >= 1
    _, responses = np.unique(np.asarray(response_index), return_inverse=True)
    n_responses = int(responses.max()) + 1 if len(responses) else 0
    value = float(weighted_auc(s, positive, np.ones((1, len(s))))[0]) if len(s) else float("nan")
    if n_responses < 2 or not math.isfinite(value):
        return Estimate(value, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // len(s))
    boot = np.concatenate(
        [
            weighted_auc(
                s, positive, response_weights(responses, n_responses, rng, min(per_chunk, resamples - lo))
            )
            for lo in range(0, resamples, per_chunk)
        ]
    )
    return Estimate(value, *_interval(boot, level))


def compare_versions(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    response_index: np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> VersionComparison:
    """Version A (``scores_a``) against version B (``scores_b``) on the same gold sentences.

    Shapes: ``scores_a``, ``scores_b`` (N,) scores P(problem) in [0, 1]; ``labels`` (N,) gold levels (>= 1 is a
    problem); ``response_index`` (N,) any integer id of each sentence's response (the bootstrap's unit).
    Replicates are drawn from ``np.random.default_rng(seed)``: the same inputs and seed give the same intervals.
    """
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    positive = np.asarray(labels) >= 1
    if not (a.shape == b.shape == positive.shape == np.shape(response_index)) or a.ndim != 1:
        raise ValueError(
            f"scores_a, scores_b, labels and response_index must be (N,) each: "
            f"{a.shape} {b.shape} {positive.shape} {np.shape(response_index)}"
        )
    if not (0.0 < level < 1.0) or resamples < 1 or margin < 0:
        raise ValueError("level must lie in (0, 1), resamples be >= 1 and margin >= 0")
    _, responses = np.unique(np.asarray(response_index), return_inverse=True)
    n_responses = int(responses.max()) + 1 if len(responses) else 0
    n_pos = int(positive.sum())
    n = len(a)

    point_weights = np.ones((1, n))
    point = _figures(a, positive, point_weights)[:, 0], _figures(b, positive, point_weights)[:, 0]
    boot_a, boot_b = np.empty((3, 0)), np.empty((3, 0))
    if n_responses >= 2 and 0 < n_pos < n:
        rng = np.random.default_rng(seed)
        per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
        parts_a, parts_b = [], []
        for lo in range(0, resamples, per_chunk):  # bounded memory: chunks of replicates, not sentences
            w = response_weights(responses, n_responses, rng, min(per_chunk, resamples - lo))
            parts_a.append(_figures(a, positive, w))
            parts_b.append(_figures(b, positive, w))
        boot_a, boot_b = np.concatenate(parts_a, axis=1), np.concatenate(parts_b, axis=1)

    def triple(k: int) -> tuple[Estimate, Estimate, Estimate]:
        est_a = Estimate(float(point[0][k]), *_interval(boot_a[k], level))
        est_b = Estimate(float(point[1][k]), *_interval(boot_b[k], level))
        diff = Estimate(float(point[1][k] - point[0][k]), *_interval(boot_b[k] - boot_a[k], level))
        return est_a, est_b, diff

    auc, brier, accuracy = triple(0), triple(1), triple(2)
    valid = int(np.isfinite(boot_b[0] - boot_a[0]).sum())
    low = auc[2].low
    if n_pos == 0 or n_pos == n:
        passed, reason = False, "the gold set has no problem sentence or no fine one: AUC is undefined"
    elif n_responses < 2:
        passed, reason = False, "the gold sentences come from one response: no interval can be drawn"
    elif low > -margin:
        passed = True
        reason = (
            f"AUC difference {auc[2].value:+.3f}, {level:.0%} interval [{low:+.3f}, {auc[2].high:+.3f}]: "
            f"its lower end is above -{margin:g}"
        )
    else:
        passed = False
        reason = (
            f"AUC difference {auc[2].value:+.3f}, {level:.0%} interval [{low:+.3f}, {auc[2].high:+.3f}]: "
            f"a loss of more than {margin:g} cannot be ruled out on {n_responses} gold responses"
        )
    return VersionComparison(
        auc=auc,
        brier=brier,
        accuracy=accuracy,
        n_sentences=n,
        n_positives=n_pos,
        n_responses=n_responses,
        resamples=valid,
        level=level,
        margin=margin,
        seed=seed,
        not_worse=passed,
        reason=reason,
    )
