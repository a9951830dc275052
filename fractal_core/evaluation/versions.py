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


def _response_counts(n_responses: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, R) float: how often each response is drawn in each of ``n`` replicates that draw ``n_responses``
    responses uniformly with replacement (one bincount for every replicate at once)."""
    draws = rng.integers(0, n_responses, size=(n, n_responses))  # (n, R)
    flat = (draws + n_responses * np.arange(n)[:, None]).ravel()
    return np.bincount(flat, minlength=n * n_responses).reshape(n, n_responses).astype(np.float64)


def response_weights(
    response_index: np.ndarray, n_responses: int, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Bootstrap weights (n, N) per sentence: how often its response was drawn in each of ``n`` replicates.

    ``response_index`` (N,) maps each sentence to its response in ``0..n_responses-1``; every replicate draws
    ``n_responses`` responses uniformly with replacement, and each sentence inherits its response's count.
    """
    return _response_counts(n_responses, rng, n)[:, response_index]  # (n, N)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact AUC-ROC (ties count 1/2) of ``scores`` (N,) against ``positive`` (N,) under each row of sentence
    ``weights`` (n, N) -> (n,); NaN in a row without positive or negative weight.

    With unit weights this is the Mann-Whitney AUC of ``fractal_core.evaluation.metrics.auc_roc``. Sentences are
    sorted once; per row, one cumulative sum of the negatives' weight in score order gives, at each positive's
    tie group, the negative weight strictly below it and inside the group (read at the group's two ends), so a
    row costs O(N) and no loop runs over replicates or sentences.
    """
    if len(scores) == 0:
        return np.full(len(weights), np.nan)
    order = np.argsort(scores, kind="mergesort")
    s, pos = scores[order], np.asarray(positive, dtype=bool)[order]
    bounds = np.flatnonzero(np.diff(s)) + 1
    first = np.concatenate([[0], bounds])  # (G,) first sorted index of each tie group
    last = np.concatenate([bounds, [len(s)]]) - 1  # (G,) its last
    group = np.cumsum(np.isin(np.arange(len(s)), bounds))  # (N,) tie group of each sorted sentence
    w = weights[:, order]  # (n, N)
    neg_cum = np.cumsum(np.where(pos, 0.0, w), axis=1)  # (n, N) negative weight up to each sorted index
    neg_cum = np.concatenate([np.zeros((len(w), 1)), neg_cum], axis=1)  # (n, N + 1): index 0 = nothing
    p = np.flatnonzero(pos)  # sorted indices of the positives
    below = neg_cum[:, first[group[p]]]  # (n, P) negative weight strictly below each positive's group
    within = neg_cum[:, last[group[p]] + 1] - below  # (n, P) negative weight tied with it
    pos_w = w[:, p]  # (n, P)
    total_pos, total_neg = pos_w.sum(axis=1), neg_cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_w * (below + 0.5 * within)).sum(axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


_KERNEL_MAX_ELEMENTS = 8_000_000  # (R x R) and (positives x R) tables held at once; beyond: per-sentence AUC


def _auc_kernel(
    scores: np.ndarray, positive: np.ndarray, responses: np.ndarray, n_responses: int
) -> np.ndarray:
    """K (R, R): K[r, q] = pairs (positive sentence of response r, negative sentence of response q) that the
    scores order right, ties counting 1/2. A replicate drawing response r c_r times has the AUC numerator
    c^T K c, so every replicate costs one (R,) x (R, R) product instead of a pass over its sentences.

    Counts come from one sorted array of negatives keyed by (response, score rank): for each positive and each
    response, two binary searches give the negatives below and tied (integer keys: exact for any scores).
    """
    _, rank = np.unique(scores, return_inverse=True)  # (N,) dense score rank, ties share one
    width = int(rank.max()) + 2
    neg_keys = np.sort(responses[~positive] * width + rank[~positive])  # (N_neg,)
    start = np.searchsorted(neg_keys, np.arange(n_responses) * width)  # (R,) first negative of each response
    pos = np.flatnonzero(positive)
    pos = pos[np.argsort(responses[pos], kind="stable")]  # grouped by response: one reduceat sums each group
    query = (np.arange(n_responses)[None, :] * width + rank[pos][:, None]).ravel()  # (P * R,)
    below = np.searchsorted(neg_keys, query, side="left").reshape(len(pos), n_responses) - start
    upto = np.searchsorted(neg_keys, query, side="right").reshape(len(pos), n_responses) - start
    credit = below + 0.5 * (upto - below)  # (P, R)
    kernel = np.zeros((n_responses, n_responses))
    if len(pos):
        owner = responses[pos]  # (P,) sorted
        firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        kernel[owner[firsts]] = np.add.reduceat(credit, firsts, axis=0)  # rows: responses with positives
    return kernel


class _Figures:
    """AUC-ROC, Brier score and accuracy at 0.5 of one version under replicates given as response counts.

    Everything is summed per response once, so a replicate's figures are products of its (R,) counts with
    those sums (and with :func:`_auc_kernel` for the AUC). Gold sets too large for the kernel fall back to
    :func:`weighted_auc` on per-sentence weights (the same number, computed over sentences).
    """

    def __init__(self, scores: np.ndarray, positive: np.ndarray, responses: np.ndarray, n_responses: int):
        y = positive.astype(np.float64)
        self.scores, self.positive, self.responses = scores, positive, responses
        self.n_pos = np.bincount(responses, weights=y, minlength=n_responses)  # (R,)
        self.n_neg = np.bincount(responses, weights=1.0 - y, minlength=n_responses)
        self.brier = np.bincount(responses, weights=(scores - y) ** 2, minlength=n_responses)
        self.correct = np.bincount(
            responses, weights=((scores >= 0.5) == positive).astype(np.float64), minlength=n_responses
        )
        small = max(n_responses, int(positive.sum())) * n_responses <= _KERNEL_MAX_ELEMENTS
        self.kernel = _auc_kernel(scores, positive, responses, n_responses) if small else None

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """(3, n) figures for response counts (n, R)."""
        total_pos, total_neg = counts @ self.n_pos, counts @ self.n_neg
        sentences = total_pos + total_neg
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.kernel is not None:
                auc = ((counts @ self.kernel) * counts).sum(axis=1) / (total_pos * total_neg)
                auc = np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)
            else:
                auc = weighted_auc(self.scores, self.positive, counts[:, self.responses])
            brier = np.where(sentences > 0, counts @ self.brier / sentences, np.nan)
            accuracy = np.where(sentences > 0, counts @ self.correct / sentences, np.nan)
        return np.stack([auc, brier, accuracy])


def _bootstrap(
    figures: list[_Figures], n_responses: int, n_sentences: int, resamples: int, seed: int
) -> list[np.ndarray]:
    """(3, resamples) figures of each version on the same replicates (paired), in chunks of replicates small
    enough for per-sentence weights (the fallback of :class:`_Figures`) to fit in bounded memory."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n_sentences, 1))
    parts: list[list[np.ndarray]] = [[] for _ in figures]
    for lo in range(0, resamples, per_chunk):
        counts = _response_counts(n_responses, rng, min(per_chunk, resamples - lo))
        for part, fig in zip(parts, figures, strict=True):
            part.append(fig(counts))
    return [np.concatenate(part, axis=1) for part in parts]


def paired_auc_replicates(
    scores: np.ndarray,
    labels: np.ndarray,
    response_index: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> np.ndarray:
    """AUC-ROC of several scorers of the same gold sentences on the same bootstrap replicates (C, resamples).

    ``scores`` (C, N) one row per scorer; ``labels`` (N,) gold levels (>= 1 is a problem); ``response_index``
    (N,) any integer id of each sentence's response (the unit drawn, as in :func:`compare_versions`). Every
    row is computed on the same seeded draws, so the spread of a difference of two rows is the paired
    bootstrap spread of the difference of their AUCs. A replicate that drew no problem or no fine sentence is
    NaN in every row; with fewer than two responses there are no replicates (C, 0).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positive = np.asarray(labels) >= 1
    if s.shape[1:] != positive.shape or positive.shape != np.shape(response_index) or positive.ndim != 1:
        raise ValueError(
            f"scores must be (C, N), labels and response_index (N,): "
            f"{s.shape} {positive.shape} {np.shape(response_index)}"
        )
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    _, responses = np.unique(np.asarray(response_index), return_inverse=True)
    n_responses = int(responses.max()) + 1 if len(responses) else 0
    if n_responses < 2:
        return np.empty((len(s), 0))
    figures = [_Figures(row, positive, responses, n_responses) for row in s]
    return np.stack([boot[0] for boot in _bootstrap(figures, n_responses, s.shape[1], resamples, seed)])


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
    if n_responses == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    figures = _Figures(s, positive, responses, n_responses)
    value = float(figures(np.ones((1, n_responses)))[0, 0])
    if n_responses < 2 or not math.isfinite(value):
        return Estimate(value, float("nan"), float("nan"))
    [boot] = _bootstrap([figures], n_responses, len(s), resamples, seed)
    return Estimate(value, *_interval(boot[0], level))


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

    boot_a, boot_b = np.empty((3, 0)), np.empty((3, 0))
    if n_responses == 0:
        point = np.full(3, np.nan), np.full(3, np.nan)
    else:
        fig_a, fig_b = (
            _Figures(a, positive, responses, n_responses),
            _Figures(b, positive, responses, n_responses),
        )
        unit = np.ones((1, n_responses))  # every response once: the figures on the gold set itself
        point = fig_a(unit)[:, 0], fig_b(unit)[:, 0]
        if n_responses >= 2 and 0 < n_pos < n:
            boot_a, boot_b = _bootstrap([fig_a, fig_b], n_responses, n, resamples, seed)

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
