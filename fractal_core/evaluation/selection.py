"""Active gold selection: which responses a user should label sentence by sentence next.

The paper draws the gold subset at random. Here a model trained without gold (e.g. ``pslab``) scores every
sentence first, and a strategy ranks the responses:

- ``random``: the paper's protocol (seeded).
- ``uncertainty``: mean binary entropy of the model's sentence scores in the response.
- ``posterior``: mean entropy of the sentence labels *given the response label* (``bag_posterior``). Under max
  aggregation a response labelled 0 has all its sentences at 0 already, so it costs budget and teaches nothing
  new; this strategy never picks such bags while uncertain ones remain.
- ``inconsistency``: the disagreement of ``fractal_core.mil.semantics`` (|aggregate score - Y| in the binary view), how
  badly AGG(scores) contradicts the response label; AGG is the bag variant given (by default the training
  default, ``mil.variants.DEFAULT_BAG_VARIANT``; the app passes the model's own variant so the queue agrees with
  the Review list's disagreement).
- ``diverse``: greedy k-center on mean sentence embeddings, each distance weighted by (a small floor plus) the
  posterior uncertainty, so the picks are both informative and spread over the data.
- ``balanced``: ``posterior`` inside each response-label stratum, with the strata's shares of the candidates kept
  (as random selection keeps them in expectation). ``posterior`` alone picks only responses whose label leaves
  the sentences open (Y = 1 under max), which starves a gold-trained model of negatives (BENCHMARKS.md).
- ``representative``: ``uncertainty`` inside each stratum of response label x response length (sentence-count
  quartile of the candidates), the strata's shares kept and interleaved, so every prefix of the order (e.g. a
  sentence budget) buys the pool's mix of labels and lengths. At equal sentences ``uncertainty`` alone bought
  more, shorter responses than random and varied more across seeds (BENCHMARKS.md).
- ``representative-posterior``: the same with ``posterior`` inside each stratum (``balanced`` plus the length
  strata: ``balanced`` alone bought more, shorter responses than random at equal sentences).
- ``stratified``: the same strata, a seeded random order inside each (random selection with its label and length
  mix fixed instead of left to chance).

Everything is a segment reduction over the flat sentence axis (the stratified orders are one lexicographic
sort); only ``diverse`` loops, once per pick (k), never over bags. Scores are P(label >= 1) in [0, 1]; ordinal
labels are read in their binary view (level >= 1). The queue over records and why each pick was proposed, in
words: ``gold_queue``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.mil import semantics
from fractal_core.mil.posterior import posterior_scores
from fractal_core.mil.reductions import segment_count, segment_mean
from fractal_core.mil.variants import DEFAULT_BAG_VARIANT

STRATEGIES = registry.STRATEGY_NAMES  # names and descriptions: fractal_core.fitting.registry
_EPS = 1e-6
_LENGTH_BINS = 4  # ``representative`` / ``stratified``: sentence-count quartiles of the candidates


def binary_labels(labels: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Bag labels in the binary view (B,) float: 1 / 0, NaN kept for unlabelled responses."""
    return torch.as_tensor(semantics.binary_labels(labels.detach().cpu().numpy(), aggregation))


def bag_probability(
    score: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    *,
    aggregation: str,
    variant: str = DEFAULT_BAG_VARIANT,
) -> torch.Tensor:
    """P(Y = 1) of each bag (B,) from sentence scores (N,) P(y_i = 1): ``fractal_core.mil.semantics.response_scores``
    (``prob``: noisy-OR for max, product for min under independent sentences; mean for mean)."""
    out = semantics.response_scores(
        score.detach().cpu().numpy(),
        bag_index.cpu().numpy(),
        n_bags,
        aggregation=aggregation,
        variant=variant,
    )
    return torch.as_tensor(out, dtype=score.dtype)


def bag_posterior(
    score: torch.Tensor, bag_index: torch.Tensor, labels: torch.Tensor, *, aggregation: str
) -> torch.Tensor:
    """P(y_i = 1 | Y, scores) under independent sentences: the scores conditioned on the response label.

    score (N,) P(y_i = 1); labels (B,) levels (NaN = unlabelled: the score is kept). max: Y = 0 -> 0,
    Y >= 1 -> p_i / P(max = 1). min: Y = 1 -> 1, Y = 0 -> (p_i - prod p) / (1 - prod p). mean: unchanged
    (no closed form worth having). Returns (N,) in [0, 1].
    """
    if aggregation not in ("max", "min", "mean"):
        raise ValueError(f"unknown aggregation {aggregation!r}")
    p = score.clamp(_EPS, 1 - _EPS)
    # The binary view of fractal_core.mil.posterior (which also handles ordinal log-probabilities exactly).
    logp = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)  # (N, 2)
    return posterior_scores(logp, bag_index, labels, aggregation=aggregation).to(score.dtype)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return -(p * torch.log(p) + (1 - p) * torch.log1p(-p))


def strategy_scores(
    score: torch.Tensor,
    bag_index: torch.Tensor,
    labels: torch.Tensor,
    *,
    aggregation: str,
    strategy: str,
    variant: str = DEFAULT_BAG_VARIANT,
) -> torch.Tensor:
    """Priority of every bag (B,) under ``strategy`` (higher = label sooner); not defined for random/diverse."""
    n_bags = int(labels.shape[0])
    if strategy == "uncertainty":
        return segment_mean(binary_entropy(score), bag_index, n_bags)
    if strategy == "posterior":
        return segment_mean(
            binary_entropy(bag_posterior(score, bag_index, labels, aggregation=aggregation)),
            bag_index,
            n_bags,
        )
    if strategy == "inconsistency":
        agg = bag_probability(score, bag_index, n_bags, aggregation=aggregation, variant=variant)
        gap = semantics.disagreement(agg.numpy(), labels.detach().cpu().numpy(), aggregation)
        return torch.nan_to_num(
            torch.as_tensor(gap, dtype=score.dtype), nan=0.0
        )  # unlabelled: nothing to contradict
    raise ValueError(f"strategy {strategy!r} has no per-bag score; choose one of {', '.join(STRATEGIES)}")


def select_gold_indices(
    score: torch.Tensor,
    bag_index: torch.Tensor,
    labels: torch.Tensor,
    *,
    aggregation: str,
    k: int,
    strategy: str = "posterior",
    seed: int = 0,
    already: Sequence[int] | torch.Tensor | None = None,
    bag_embedding: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    uncertainty_floor: float = 0.1,
    variant: str = DEFAULT_BAG_VARIANT,
) -> list[int]:
    """Indices of the ``k`` bags to label next.

    score (N,) sentence scores P(y >= 1); bag_index (N,) sorted or not; labels (B,) response labels (NaN if
    none); already: bag ids labelled before (never picked again); candidates (B,) bool: bags that may be picked
    (default all); bag_embedding (B, d): needed by ``diverse``; variant: the bag aggregation ``inconsistency``
    compares with the response label (``fractal_core.mil.semantics.response_scores``). Ties are broken by a seeded random jitter.
    Returns at most ``k`` distinct ids, in pick order.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n_bags = int(labels.shape[0])
    allowed = torch.ones(n_bags, dtype=torch.bool) if candidates is None else candidates.cpu().bool().clone()
    if already is not None:
        taken = torch.as_tensor(
            list(already) if not isinstance(already, torch.Tensor) else already, dtype=torch.long
        )
        allowed[taken.cpu()] = False
    # Bags without sentences have nothing to label.
    allowed &= segment_count(bag_index.cpu(), n_bags, torch.long) > 0
    k = min(int(k), int(allowed.sum()))
    if k <= 0:
        return []
    generator = torch.Generator().manual_seed(int(seed))
    jitter = torch.rand(n_bags, generator=generator, dtype=torch.float64)
    score, bag_index, labels = score.detach().cpu().double(), bag_index.cpu(), labels.detach().cpu().double()
    if strategy == "random":
        priority = jitter
    elif strategy == "diverse":
        if bag_embedding is None:
            raise ValueError("strategy 'diverse' needs bag_embedding (B, d)")
        return _diverse(
            score,
            bag_index,
            labels,
            aggregation=aggregation,
            k=k,
            allowed=allowed,
            emb=bag_embedding.detach().cpu(),
            jitter=jitter,
            floor=uncertainty_floor,
        )
    elif strategy == "balanced":
        priority = strategy_scores(score, bag_index, labels, aggregation=aggregation, strategy="posterior")
        label_stratum = _label_strata(binary_labels(labels, aggregation))
        return _stratified(priority + 1e-9 * jitter, label_stratum, allowed, k)
    elif strategy in ("representative", "representative-posterior", "stratified"):
        if strategy == "stratified":
            priority = jitter
        else:
            inner = "uncertainty" if strategy == "representative" else "posterior"
            priority = strategy_scores(score, bag_index, labels, aggregation=aggregation, strategy=inner)
            priority = priority + 1e-9 * jitter
        sizes = segment_count(bag_index, n_bags, torch.long)
        return _stratified(priority, _label_length_strata(labels, sizes, allowed, aggregation), allowed, k)
    else:
        priority = strategy_scores(
            score, bag_index, labels, aggregation=aggregation, strategy=strategy, variant=variant
        )
        priority = priority + 1e-9 * jitter  # seeded tie-break only
    priority = torch.where(allowed, priority, torch.full_like(priority, float("-inf")))
    return [int(i) for i in torch.topk(priority, k).indices]


def _label_strata(label: torch.Tensor) -> torch.Tensor:
    """Stratum of each bag (B,) long by its binary-view label: 0 = labelled 1, 1 = labelled 0, 2 = unlabelled."""
    return torch.where(torch.isnan(label), 2, torch.where(label >= 1, 0, 1)).long()


def length_bins(sizes: torch.Tensor, allowed: torch.Tensor, n_bins: int = _LENGTH_BINS) -> torch.Tensor:
    """Length bin of each bag (B,) long in 0..n_bins-1: the bag's sentence count against the count quantiles of
    the ``allowed`` bags (ties share a bin, so a bin may be empty)."""
    pool = sizes[allowed].double()
    if not len(pool):
        return torch.zeros_like(sizes, dtype=torch.long)
    edges = torch.quantile(pool, torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:-1])
    return torch.bucketize(sizes.double(), edges, right=True).clamp_max(n_bins - 1)


def _label_length_strata(
    labels: torch.Tensor, sizes: torch.Tensor, allowed: torch.Tensor, aggregation: str
) -> torch.Tensor:
    """Stratum of each bag (B,): its binary-view label stratum x its length bin."""
    label = _label_strata(binary_labels(labels, aggregation))
    return label * _LENGTH_BINS + length_bins(sizes, allowed)


def _stratified(priority: torch.Tensor, stratum: torch.Tensor, allowed: torch.Tensor, k: int) -> list[int]:
    """The first ``k`` allowed bags of an order that keeps each stratum's share at every prefix.

    Inside a stratum of m allowed bags, the bag ranked r-th by ``priority`` gets the key (r + 0.5) / m; the
    order is by key, equal keys by stratum id. So the first k picks hold about k * m / (allowed bags) of each
    stratum, the best of each, interleaved. Stable sorts only: no loop over bags or strata.
    """
    idx = torch.nonzero(allowed).flatten()
    if k <= 0 or not len(idx):
        return []
    group, prio = stratum[idx], priority[idx].double()
    # Sort by stratum, then by priority (descending) inside it: two stable sorts.
    order = torch.argsort(-prio, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    g = group[order]
    size = torch.bincount(g)
    start = torch.cumsum(size, 0) - size
    rank = torch.arange(len(g)) - start[g]
    key = (rank.double() + 0.5) / size[g].double()
    final = order[torch.argsort(key, stable=True)]  # stable: equal keys stay in stratum order
    return [int(i) for i in idx[final[:k]]]


def _diverse(
    score: torch.Tensor,
    bag_index: torch.Tensor,
    labels: torch.Tensor,
    *,
    aggregation: str,
    k: int,
    allowed: torch.Tensor,
    emb: torch.Tensor,
    jitter: torch.Tensor,
    floor: float,
) -> list[int]:
    """Greedy k-center on bag embeddings by cosine distance, distances weighted by (floor + normalised posterior
    uncertainty).

    ``emb`` (B, d) is read in its own precision (float32 from :func:`bag_embeddings`): each pick's cosines are
    one matrix-vector product over the rows' norms, so no unit (or float64) copy of the matrix is made beside
    it (at B = 200,000, d = 384 that copy was 614 MB). Distances and gains are float64.
    """
    weight = strategy_scores(score, bag_index, labels, aggregation=aggregation, strategy="posterior")
    weight = floor + weight / weight.max().clamp_min(_EPS)
    norm = torch.linalg.vector_norm(emb, dim=1).clamp_min(1e-12)  # (B,), F.normalize's floor
    dist = torch.full((emb.shape[0],), 2.0, dtype=torch.float64)  # max cosine distance: nothing chosen yet
    gain = torch.where(allowed, weight * dist + 1e-9 * jitter, torch.full_like(dist, float("-inf")))
    picks: list[int] = []
    for _ in range(k):  # one vectorised distance update per pick; k << B
        best = int(torch.argmax(gain))
        picks.append(best)
        cos = (emb @ emb[best]) / (norm * norm[best])  # (B,)
        dist = torch.minimum(dist, 1.0 - cos.double())
        gain = torch.where(allowed, weight * dist + 1e-9 * jitter, torch.full_like(dist, float("-inf")))
        gain[torch.as_tensor(picks)] = float("-inf")
    return picks


def within_sentence_budget(picks: Sequence[int], sizes: torch.Tensor, budget: int) -> list[int]:
    """The longest prefix of ``picks`` (a priority order) whose responses hold at most ``budget`` sentences in
    all (at least the first pick): annotation effort counted in sentences rather than responses."""
    if not picks:
        return []
    used = torch.cumsum(sizes.cpu()[torch.as_tensor(list(picks), dtype=torch.long)], 0)
    n = max(1, int((used <= budget).sum()))
    return list(picks[:n])


def bag_embeddings(bags: BagSet) -> torch.Tensor:
    """Mean sentence embedding of every bag, L2-normalised (B, d): the space ``diverse`` spreads picks over."""
    if not bags.full_precision:  # float16 (e.g. memory-mapped) embeddings: float32 means, chunk by chunk
        out = torch.empty((bags.n_bags, bags.sent_emb.shape[1]), dtype=torch.float32, device=bags.device)
        lo = 0
        for chunk in bags.chunks():  # written in place: no list of chunks beside their concatenation
            out[lo : lo + chunk.n_bags] = bag_embeddings(chunk)
            lo += chunk.n_bags
        return out
    return torch.nn.functional.normalize(segment_mean(bags.sent_emb, bags.bag_index, bags.n_bags), dim=1)


def select_gold_bags(
    bags: BagSet,
    score: torch.Tensor,
    *,
    k: int,
    strategy: str = "posterior",
    seed: int = 0,
    aggregation: str = "max",
    already: Sequence[int] | torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    variant: str = DEFAULT_BAG_VARIANT,
    sort: bool = True,
) -> torch.Tensor:
    """``select_gold_indices`` on a ``BagSet``: the chosen bag ids (K,) long, sorted (``sort=False``: in pick
    order, best first, as a queue needs them)."""
    emb = bag_embeddings(bags) if strategy == "diverse" else None
    picks = select_gold_indices(
        score,
        bags.bag_index,
        bags.labels,
        aggregation=aggregation,
        k=k,
        strategy=strategy,
        seed=seed,
        already=already,
        bag_embedding=emb,
        candidates=candidates,
        variant=variant,
    )
    return torch.as_tensor(sorted(picks) if sort else picks, dtype=torch.long)


__all__ = [
    "STRATEGIES",
    "bag_embeddings",
    "bag_posterior",
    "bag_probability",
    "binary_labels",
    "binary_entropy",
    "within_sentence_budget",
    "select_gold_bags",
    "select_gold_indices",
    "strategy_scores",
]
