"""The FRACTAL suite as named methods (method.md §3-5): each turns training bags into a sentence scorer.

Pipelines (stages are fresh models unless said otherwise):
- naive: every sentence inherits its bag's label (no training).
- prior_only: the cosine target (1 + cos) / 2 is the score (no training).
- bagloss: BagLoss alone.
- priors: BagLoss + the cosine and correlation priors (each only when its weight is > 0).
- pslab: priors, then PsLab pseudo-labels and a fresh instance model (FRACTAL without gold).
- hybrid: an instance model on gold sentence labels gives frozen soft targets (hybrid prior); BagLoss + priors
  + hybrid prior; then PsLab with the gold labels kept. Needs some gold labels. ``TrainConfig.teacher_implied``
  adds the sentence labels implied by the response labels to the teacher's data (off: no valid gain).
- supervised: an instance model on all gold sentence labels (the ceiling).
- auto: fits prior_only (calibrated), bagloss, priors (a small grid of cosine weights), pslab and, with gold,
  hybrid on the same embeddings and keeps the best by a held-out figure (``fractal_core.fitting.auto``); records why.
- fractal: the recommended default, the same as auto. ``TrainConfig.pslab`` decides whether hybrid ends with
  PsLab.
PsLab is undefined for mean (LLP) bags: there the soft bag model is the output. Which priors run is decided by
their weights: the tuned defaults use the cosine prior only (correlation weight 0).

Names, descriptions and stage plans live in ``fractal_core.fitting.registry`` (torch-free); ``_fit_method`` follows
``registry.training_stages`` (tests/fractal_core/test_registry.py checks it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.model import SentenceScorer, build_scorer
from fractal_core.fitting.train import ProgressFn, StageResult, cpu_threads, train_stage
from fractal_core.mil.aggregate import positive_score
from fractal_core.mil.losses import (
    bag_log_likelihood,
    bag_loss,
    correlation_prior,
    cosine_prior,
    instance_loss,
    pref_bag_loss,
    proportion_target,
    soft_cross_entropy,
)
from fractal_core.mil.pslab import pseudo_labels

METHODS: dict[str, str] = registry.method_descriptions()
"""{name: one-line description under the tuned defaults}, in registry order."""
TRAINED = frozenset(m.name for m in registry.METHOD_LIST if m.trained)


@dataclass
class FitResult:
    """A fitted scorer (None for the training-free baselines) and what each stage did."""

    method: str
    model: SentenceScorer | None
    stages: list[StageResult] = field(default_factory=list)
    calibration: dict[str, Any] | None = (
        None  # auto: the fitted Calibration of the scores (fractal_core.fitting.auto)
    )
    selection: dict[str, Any] | None = (
        None  # auto: what was chosen, the criterion and every candidate's figures
    )
    candidates: list[Any] = field(
        default_factory=list
    )  # auto: each fitted candidate (auto.CandidateFit), not stored

    def history(self) -> list[dict[str, Any]]:
        return [s.__dict__ for s in self.stages]


def resolve_method(method: str, train: BagSet, *, pslab: bool = True) -> str:
    """Map "fractal" to the concrete pipeline for this data; reject unknown names and impossible requests
    (``registry.resolve_method`` on whether ``train`` carries gold labels)."""
    return registry.resolve_method(method, has_gold=bool((train.gold >= 0).any()), pslab=pslab)


def _weights(config: TrainConfig, use: set[str]) -> dict[str, float]:
    raw = {
        k: float(getattr(config.weights, k)) for k in ("bag", "cosine", "correlation", "hybrid") if k in use
    }
    raw = {k: v for k, v in raw.items() if v > 0}  # a zero-weight term is neither built nor computed
    total = sum(raw.values())
    if total <= 0:
        raise ValueError("loss weights of the used terms sum to 0")
    return {k: v / total for k, v in raw.items()}


def _bag_objective(config: TrainConfig, aggregation: str, weights: dict[str, float]):
    def objective(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
        logp = model(batch)  # (N, C)
        n = batch.n_bags
        loss = logp.new_zeros(())
        if "bag" in weights:
            loss = loss + weights["bag"] * bag_loss(
                logp,
                batch.bag_index,
                batch.labels,
                aggregation=aggregation,
                variant=config.bag_variant,
                temperature=config.lse_temperature,
                proportion=config.proportion_loss,
            )
        if "cosine" in weights:
            assert batch.cos_target is not None
            loss = loss + weights["cosine"] * cosine_prior(logp, batch.bag_index, n, batch.cos_target)
        if "correlation" in weights:
            assert batch.pair_i is not None and batch.pair_j is not None and batch.pair_r is not None
            loss = loss + weights["correlation"] * correlation_prior(
                logp, batch.bag_index, n, batch.pair_i, batch.pair_j, batch.pair_r
            )
        if "hybrid" in weights:
            assert batch.hyb_target is not None
            loss = loss + weights["hybrid"] * soft_cross_entropy(logp, batch.hyb_target)
        return loss

    return objective


def _instance_objective():
    """Plain instance NLL on ``batch.gold`` (gold, pseudo- or implied labels; -1 ignored)."""

    def objective(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
        return instance_loss(model(batch), batch.gold)

    return objective


def make_validator(valid: BagSet | None, *, aggregation: str, config: TrainConfig):
    """Early-stopping score (higher is better) of a scorer: :func:`logp_validator` on ``model(valid)``."""
    rule, mode = logp_validator(valid, aggregation=aggregation, config=config)
    if rule is None or valid is None:
        return None, mode

    def validate(model: SentenceScorer) -> float:
        with torch.inference_mode():
            return rule(model(valid))

    return validate, mode


def logp_validator(valid: BagSet | None, *, aggregation: str, config: TrainConfig):
    """The early-stopping rule as a function of the validation sentences' log-probabilities (N, C): sentence AUC
    on validation gold, else the exact bag log-likelihood (mean over bags; for mean bags the Poisson-binomial
    likelihood of the count). Returns ``(rule or None, mode)``; any scorer (the MLP, a fine-tuned encoder)
    early-stops by it."""
    if valid is None or valid.n_bags == 0:
        return None, "train_loss"
    gold = valid.gold
    labelled = gold >= 0
    positives = int((gold[labelled] >= 1).sum())
    enough_gold = int(labelled.sum()) >= config.min_gold_for_valid and 0 < positives < int(labelled.sum())
    mode = config.valid_metric
    if mode == "auto":
        mode = "sentence" if enough_gold else "bag"
    if mode == "sentence" and not enough_gold:
        raise ValueError("valid_metric='sentence' needs gold labels of both classes on the validation bags")

    def validate_sentence(logp: torch.Tensor) -> float:
        score = positive_score(logp)
        return auc_roc((gold[labelled] >= 1).cpu().numpy(), score[labelled].cpu().numpy())

    def validate_bag(logp: torch.Tensor) -> float:
        return float(bag_log_likelihood(logp, valid.bag_index, valid.labels, aggregation=aggregation).mean())

    return (validate_sentence if mode == "sentence" else validate_bag), mode


def first_error_annotated(bags: BagSet) -> bool:
    """Whether the gold labels follow the first-error protocol of step data: in every bag with a positive,
    nothing after its first positive is labelled, and some bag has sentences there (steps after the first
    wrong one are not judged, because they follow from it)."""
    positive = bags.gold >= 1
    if not bool(positive.any()):
        return False
    flat = torch.arange(bags.n_sentences, device=bags.device)
    first = torch.full((bags.n_bags,), bags.n_sentences, dtype=torch.long, device=bags.device)
    first = first.scatter_reduce(0, bags.bag_index[positive], flat[positive], reduce="amin")
    after = flat > first[bags.bag_index]
    return bool(after.any()) and not bool((after & (bags.gold >= 0)).any())


def scorer_spec(config: TrainConfig, *data: BagSet | None) -> dict[str, object]:
    """The scorer every stage of a fit builds (``model.build_scorer``), its direction read from the data.

    ``context_direction="auto"`` is causal when the gold labels of ``data`` follow the first-error protocol of
    reasoning steps (:func:`first_error_annotated`), else bidirectional.
    """
    if config.scorer == "mlp":
        return {"kind": "mlp"}
    direction = config.context_direction
    if direction == "auto":
        steps = any(b is not None and b.n_bags and first_error_annotated(b) for b in data)
        direction = "causal" if steps else "bidirectional"
    return {"kind": config.scorer, "causal": direction == "causal"}


def _fresh(
    spec: dict[str, object],
    dim: int,
    n_classes: int,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> SentenceScorer:
    return build_scorer(spec, dim, n_classes=n_classes, hidden=config.hidden, generator=generator).to(device)


def _gold_bags(data: BagSet) -> BagSet:
    """The bags with at least one gold sentence label (instance models train on these only)."""
    return data.select(torch.unique(data.bag_index[data.gold >= 0]))


def implied_labels(bags: BagSet, aggregation: str, *, n_classes: int = 2) -> torch.Tensor:
    """Sentence labels that the response label alone implies -> (N,) long, -1 where nothing is implied.

    max (binary or ordinal): a response labelled 0 has only level-0 sentences (a label Y > 0 only bounds its
    sentences by Y, which is not a label). min: a response at the top level ``n_classes - 1`` has only top-level
    sentences. mean: nothing is implied (by convention of the hybrid teacher; proportions are soft).
    """
    if aggregation == "max":
        per_bag = torch.where(bags.labels == 0, 0, -1)
    elif aggregation == "min":
        top = n_classes - 1
        per_bag = torch.where(bags.labels == top, top, -1)
    elif aggregation == "mean":
        per_bag = torch.full_like(bags.labels, -1)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return per_bag.long()[bags.bag_index]


def _teacher_bags(train: BagSet, aggregation: str, n_classes: int, config: TrainConfig) -> BagSet:
    """The hybrid teacher's training bags: gold-labelled ones, plus (``teacher_implied``) the ones whose
    response label implies sentence labels; gold wins where both exist."""
    if not config.teacher_implied:
        return _gold_bags(train)
    labels = torch.where(train.gold >= 0, train.gold, implied_labels(train, aggregation, n_classes=n_classes))
    return _gold_bags(BagSet(**{**train.__dict__, "gold": labels}))


def fit_method(
    method: str,
    train: BagSet,
    valid: BagSet | None,
    *,
    aggregation: str,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    progress: ProgressFn | None = None,
    init: SentenceScorer | None = None,
) -> FitResult:
    """Run one method's pipeline on prepared bags. ``train.gold`` holds the gold labels the method may use.

    ``init``: the bag stage starts from a copy of this fitted scorer instead of a fresh one (a warm start, e.g.
    ``auto``'s priors candidates from its BagLoss fit).
    """
    with cpu_threads(config.cpu_threads, train.device):
        return _fit_method(
            method,
            train,
            valid,
            aggregation=aggregation,
            n_classes=n_classes,
            config=config,
            seed=seed,
            progress=progress,
            init=init,
        )


def _fit_method(
    method: str,
    train: BagSet,
    valid: BagSet | None,
    *,
    aggregation: str,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    progress: ProgressFn | None,
    init: SentenceScorer | None = None,
) -> FitResult:
    method = resolve_method(method, train, pslab=config.pslab)
    if method == "auto":
        from fractal_core.fitting.auto import fit_auto

        return fit_auto(
            train,
            valid,
            aggregation=aggregation,
            n_classes=n_classes,
            config=config,
            seed=seed,
            progress=progress,
        )
    result = FitResult(method=method, model=None)
    if method not in TRAINED:
        return result
    generator = torch.Generator().manual_seed(seed)
    dim = int(train.sent_emb.shape[1])
    device = train.device
    validate, _ = make_validator(valid, aggregation=aggregation, config=config)
    spec = scorer_spec(config, train, valid)

    def stage(name: str, model: SentenceScorer, data: BagSet, objective) -> SentenceScorer:
        result.stages.append(
            train_stage(
                model,
                data,
                objective,
                config=config,
                generator=generator,
                validate=validate,
                stage=name,
                progress=progress,
            )
        )
        return model

    if method == "supervised":
        model = _fresh(spec, dim, n_classes, config, generator, device)
        result.model = stage(registry.STAGE_SUPERVISED, model, _gold_bags(train), _instance_objective())
        return result

    use = {"bag"}
    if method in ("priors", "pslab", "hybrid"):
        use |= {"cosine", "correlation"}
        if config.weights.cosine > 0:
            train = train.with_cosine_target()
            if (
                aggregation == "mean"
            ):  # the prior keeps its ranking inside a bag but meets the bag's proportion
                assert train.cos_target is not None
                train.cos_target = proportion_target(train.cos_target, train.bag_index, train.labels)
        if config.weights.correlation > 0:  # O(sum of squared bag sizes): skipped when unused (the default)
            train = train.with_correlation_pairs()
    if method == "hybrid":
        use.add("hybrid")
        teacher = stage(
            registry.STAGE_TEACHER,
            _fresh(spec, dim, n_classes, config, generator, device),
            _teacher_bags(train, aggregation, n_classes, config),
            _instance_objective(),
        )
        with torch.inference_mode():
            train.hyb_target = teacher(train).exp()  # frozen soft targets, computed once
    weights = _weights(config, use)
    model = stage(
        registry.STAGE_BAG,
        copy.deepcopy(init) if init is not None else _fresh(spec, dim, n_classes, config, generator, device),
        train,
        _bag_objective(config, aggregation, weights),
    )
    # The "pslab" method always ends with PsLab; "hybrid" when the config says so.
    if (method == "pslab" or (method == "hybrid" and config.pslab)) and aggregation in ("max", "min"):
        with torch.inference_mode():
            labels = pseudo_labels(
                model(train), train.bag_index, train.labels, aggregation=aggregation, gold=train.gold
            )
        pseudo = BagSet(**{**train.__dict__, "gold": labels})
        model = stage(
            registry.STAGE_PSLAB,
            _fresh(spec, dim, n_classes, config, generator, device),
            pseudo,
            _instance_objective(),
        )
    result.model = model
    return result


def preference_bags(
    bags: BagSet, first: torch.Tensor, second: torch.Tensor, second_better: torch.Tensor
) -> BagSet:
    """Bags laid out as pairs: bag 2k is ``first[k]``, bag 2k+1 is ``second[k]``, whose label holds the preference."""
    order = torch.stack([first, second], 1).flatten()
    paired = bags.select(order)  # a response may appear in several pairs
    labels = torch.stack([torch.zeros_like(second_better), second_better], 1).flatten().to(paired.labels)
    return BagSet(**{**paired.__dict__, "labels": labels})


def _preference_loss(model: SentenceScorer, batch: BagSet) -> torch.Tensor:
    first = torch.arange(0, batch.n_bags, 2, device=batch.device)
    second = first + 1
    return pref_bag_loss(model(batch), batch.bag_index, batch.n_bags, first, second, batch.labels[second])


def fit_preference(
    train: BagSet, valid: BagSet | None, *, config: TrainConfig, seed: int, progress: ProgressFn | None = None
) -> FitResult:
    """PrefBagLoss (method.md §3): learn sentence scores from "response B is better than response A" pairs.

    ``train``/``valid`` come from :func:`preference_bags`. A response's score is the mean of its sentence
    scores and P(B2 > B1) = s2 / (s1 + s2). Early stopping on the validation pairs' loss.
    """
    generator = torch.Generator().manual_seed(seed)
    spec = scorer_spec(config, train, valid)
    model = _fresh(spec, int(train.sent_emb.shape[1]), 2, config, generator, train.device)

    def validate(m: SentenceScorer) -> float:
        assert valid is not None
        with torch.inference_mode():
            return -float(_preference_loss(m, valid))

    with cpu_threads(config.cpu_threads, train.device):
        stage = train_stage(
            model,
            train,
            _preference_loss,
            config=config,
            generator=generator,
            validate=validate if valid is not None and valid.n_bags else None,
            stage="preference",
            progress=progress,
            group_size=2,
        )
    return FitResult(method="preference", model=model, stages=[stage])
