"""The joint fit of several criteria: one :class:`~fractal_core.fitting.heads.MultiHeadScorer`, the suite's losses
of every criterion summed.

Training bags carry every criterion at once: ``labels`` (B, k) and ``gold`` (N, k) (-1: no gold), the cosine
target per criterion (N, k) (a ``mean`` criterion's moved to its bags' proportions, as in the single fit). A
``BagSet`` gathers them along the bags like its one-criterion tensors, so minibatches are ordinary ``select``s.

Methods: ``bagloss``, ``priors`` (BagLoss + the priors the config weights) and ``pslab`` (then PsLab
pseudo-labels and a fresh model on them; a ``mean`` criterion, where PsLab is undefined, keeps its bag objective
in that stage). Their plans and loss weights come from the one registry (``registry.resolve``). Each loss term
runs once per head group (:func:`~fractal_core.fitting.heads.head_groups`) on the stacked layout, not once per
criterion; a group's mean is multiplied by its size so that it is the sum over its criteria. Each group's sum is
then divided by its value under the fresh model (:func:`balancing_scales`), so tasks of different loss scales
(a proportion's squared error against a max bag's log-loss) pull on the shared trunk alike. Early stopping adds
up every criterion's validation rule (``objectives.logp_validator``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.heads import Criterion, HeadGroup, MultiHeadScorer, group_logp, stacked_index
from fractal_core.fitting.methods import scorer_spec
from fractal_core.fitting.objectives import balance_sample, logp_validator
from fractal_core.fitting.objectives import balancing_scales as scales_from_start
from fractal_core.fitting.train import ProgressFn, StageResult, cpu_threads, train_stage
from fractal_core.mil.losses import (
    bag_loss,
    correlation_prior,
    cosine_prior,
    instance_loss,
    proportion_target,
)
from fractal_core.mil.pslab import pseudo_labels

CRITERIA_METHODS = registry.CRITERIA_METHODS  # the one home: the torch-free registry

MultiObjective = Callable[[MultiHeadScorer, BagSet], torch.Tensor]


def criterion_bags(bags: BagSet, j: int) -> BagSet:
    """Criterion ``j``'s view of multi-criterion bags: labels (B,), gold (N,), its cosine target (N,)."""
    return replace(
        bags,
        labels=bags.labels[:, j],
        gold=bags.gold[:, j],
        cos_target=None if bags.cos_target is None else bags.cos_target[:, j],
        _layout_cache=None,
    )


def with_cosine_targets(bags: BagSet, criteria: tuple[Criterion, ...]) -> BagSet:
    """The cosine target of every criterion (N, k): the same (1 + cos) / 2 for every head, moved to each bag's
    proportion for ``mean`` criteria (``losses.proportion_target``, all such heads at once)."""
    one = replace(
        bags, labels=bags.labels[:, 0], gold=bags.gold[:, 0], _layout_cache=None
    ).with_cosine_target()
    assert one.cos_target is not None
    target = one.cos_target.view(-1, 1).repeat(1, len(criteria))  # (N, k)
    means = [j for j, c in enumerate(criteria) if c.aggregation == "mean"]
    if means:
        g = len(means)
        index = stacked_index(bags.bag_index, bags.n_bags, g)
        moved = proportion_target(one.cos_target.repeat(g), index, bags.labels[:, means].T.reshape(-1))
        target[:, means] = moved.view(g, -1).T
    return replace(bags, cos_target=target, pair_i=one.pair_i, pair_j=one.pair_j, pair_r=one.pair_r)


def _group_view(batch: BagSet, group: HeadGroup) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(stacked bag index (g*N,), stacked labels (g*B,), g) of a group on ``batch``."""
    g = len(group.heads)
    heads = list(group.heads)
    return stacked_index(batch.bag_index, batch.n_bags, g), batch.labels[:, heads].T.reshape(-1), g


def group_losses(
    config: TrainConfig,
    weights: dict[str, float],
    groups: list[HeadGroup],
    *,
    instance: frozenset[int] = frozenset(),
) -> Callable[[MultiHeadScorer, BagSet], list[torch.Tensor]]:
    """Per head group, the sum over its criteria of BagLoss + priors (``weights``); groups whose index is in
    ``instance`` take the instance loss on ``batch.gold`` instead (the PsLab stage)."""

    def losses(model: MultiHeadScorer, batch: BagSet) -> list[torch.Tensor]:
        z = model(batch)  # (N, W)
        out = []
        for number, group in enumerate(groups):  # one term per task group, each over all its criteria
            logp = group_logp(z, group)  # (g*N, C)
            index, labels, g = _group_view(batch, group)
            heads = list(group.heads)
            if number in instance:
                out.append(g * instance_loss(logp, batch.gold[:, heads].T.reshape(-1)))
                continue
            n = g * batch.n_bags
            loss = z.new_zeros(())
            if "bag" in weights:
                loss = loss + weights["bag"] * bag_loss(
                    logp,
                    index,
                    labels,
                    aggregation=group.aggregation,
                    variant=config.bag_variant,
                    temperature=config.lse_temperature,
                    proportion=config.proportion_loss,
                )
            if "cosine" in weights:
                assert batch.cos_target is not None
                target = batch.cos_target[:, heads].T.reshape(-1)
                loss = loss + weights["cosine"] * cosine_prior(logp, index, n, target)
            if "correlation" in weights:
                assert batch.pair_i is not None and batch.pair_j is not None and batch.pair_r is not None
                shift = (torch.arange(g, device=z.device) * batch.n_sentences).view(-1, 1)
                loss = loss + weights["correlation"] * correlation_prior(
                    logp,
                    index,
                    n,
                    (shift + batch.pair_i).reshape(-1),
                    (shift + batch.pair_j).reshape(-1),
                    batch.pair_r.repeat(g),
                )
            out.append(g * loss)  # the group's mean over its criteria, times g: their sum
        return out

    return losses


def bag_objective(
    config: TrainConfig,
    weights: dict[str, float],
    groups: list[HeadGroup],
    *,
    instance: frozenset[int] = frozenset(),
    scales: Sequence[float] | None = None,
) -> MultiObjective:
    """The sum over head groups of :func:`group_losses`, each multiplied by its ``scales`` entry (default 1)."""
    losses = group_losses(config, weights, groups, instance=instance)
    factors = list(scales) if scales is not None else [1.0] * len(groups)

    def objective(model: MultiHeadScorer, batch: BagSet) -> torch.Tensor:
        return torch.stack([f * loss for f, loss in zip(factors, losses(model, batch), strict=True)]).sum()

    return objective


def balancing_scales(
    model: MultiHeadScorer, data: BagSet, losses: Callable[[MultiHeadScorer, BagSet], list[torch.Tensor]]
) -> list[float]:
    """1 / each group's loss under the fresh ``model`` on (up to) the first ``objectives.BALANCE_BAGS`` bags,
    so every group starts at 1 (``objectives.balancing_scales`` says why)."""
    with torch.no_grad():
        return scales_from_start(losses(model, balance_sample(data)))


def make_validator(
    valid: BagSet | None, criteria: tuple[Criterion, ...], config: TrainConfig
) -> Callable[[MultiHeadScorer], float] | None:
    """Early-stopping score: the sum over criteria of each one's rule (sentence AUC on its validation gold, else
    its exact bag log-likelihood). One model pass per epoch; the k rules read its heads."""
    if valid is None or valid.n_bags == 0:
        return None
    rules = [
        logp_validator(criterion_bags(valid, j), aggregation=c.aggregation, config=config)[0]
        for j, c in enumerate(criteria)
    ]

    def validate(model: MultiHeadScorer) -> float:
        with torch.inference_mode():
            per_head = model.head_logp(model(valid))
        return float(sum(rule(logp) for rule, logp in zip(rules, per_head, strict=True) if rule is not None))

    return validate


def fit_criteria(
    train: BagSet,
    valid: BagSet | None,
    criteria: tuple[Criterion, ...],
    *,
    method: str = "priors",
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> tuple[MultiHeadScorer, list[StageResult]]:
    """Train one multi-head scorer on every criterion of ``train`` (labels (B, k), gold (N, k))."""
    config = config or TrainConfig()
    if method not in CRITERIA_METHODS:
        raise ValueError(f"several criteria train with {', '.join(CRITERIA_METHODS)}, not {method!r}")
    if train.labels.dim() != 2 or train.labels.shape[1] != len(criteria):
        raise ValueError(f"labels must be (bags, {len(criteria)}) for {len(criteria)} criteria")
    plans = [
        registry.resolve(method, has_gold=False, aggregation=c.aggregation, config=config) for c in criteria
    ]
    weights = plans[0].loss_weights  # a method's weights depend on the config only, not on the aggregation
    with cpu_threads(config.cpu_threads, train.device):
        generator = torch.Generator().manual_seed(seed)
        dim = int(train.sent_emb.shape[1])
        spec = scorer_spec(config, *(criterion_bags(b, 0) for b in (train, valid) if b is not None))

        def fresh() -> MultiHeadScorer:
            return MultiHeadScorer(spec, dim, criteria, hidden=config.hidden, generator=generator).to(
                train.device
            )

        if "cosine" in weights:
            train = with_cosine_targets(train, criteria)
        if "correlation" in weights:
            pairs = replace(train, labels=train.labels[:, 0], gold=train.gold[:, 0], _layout_cache=None)
            pairs = pairs.with_correlation_pairs()
            train = replace(train, pair_i=pairs.pair_i, pair_j=pairs.pair_j, pair_r=pairs.pair_r)
        validate = make_validator(valid, criteria, config)
        stages: list[StageResult] = []

        def stage(
            name: str, model: MultiHeadScorer, data: BagSet, objective: MultiObjective
        ) -> MultiHeadScorer:
            stages.append(
                train_stage(
                    model,  # type: ignore[arg-type]  # the loop needs parameters and a forward, not its head
                    data,
                    objective,  # type: ignore[arg-type]
                    config=config,
                    generator=generator,
                    validate=None if validate is None else lambda m: validate(m),  # type: ignore[arg-type]
                    stage=name,
                    progress=progress,
                )
            )
            return model

        probe = fresh()
        groups = probe.groups
        losses = group_losses(config, weights, groups)
        scales = balancing_scales(probe, train, losses)
        model = stage(registry.STAGE_BAG, probe, train, bag_objective(config, weights, groups, scales=scales))
        pslab_groups = frozenset(
            number for number, group in enumerate(groups) if plans[group.heads[0]].runs(registry.STAGE_PSLAB)
        )
        if pslab_groups:
            with torch.inference_mode():
                z = model(train)
                gold = train.gold.clone()
                for number in pslab_groups:  # a handful of groups, each over all its criteria
                    group = groups[number]
                    index, labels, g = _group_view(train, group)
                    heads = list(group.heads)
                    pseudo = pseudo_labels(
                        group_logp(z, group),
                        index,
                        labels,
                        aggregation=group.aggregation,
                        gold=train.gold[:, heads].T.reshape(-1),
                    )
                    gold[:, heads] = pseudo.view(g, -1).T
            pseudo_train = replace(train, gold=gold)
            second = fresh()
            losses = group_losses(config, weights, groups, instance=pslab_groups)
            scales = balancing_scales(second, pseudo_train, losses)
            objective = bag_objective(config, weights, groups, instance=pslab_groups, scales=scales)
            model = stage(registry.STAGE_PSLAB, second, pseudo_train, objective)
        return model, stages


__all__ = ["CRITERIA_METHODS", "bag_objective", "criterion_bags", "fit_criteria", "with_cosine_targets"]
