"""A single method resolved against the data and a config: its training stages in order and the weighted terms
of its bag objective (:class:`MethodPlan`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.method_table import method

# Training stage names, as reported to progress callbacks and stored in a model's history.
STAGE_TEACHER = "hybrid-teacher"  # instance model on gold labels whose predictions are the hybrid prior
STAGE_BAG = "bag"  # BagLoss (+ priors) on response labels
STAGE_PSLAB = "pslab"  # fresh instance model on maximum-likelihood pseudo-labels
STAGE_SUPERVISED = "supervised"  # instance model on gold sentence labels only
STAGE_EMBED = "embed"  # not a training stage: embedding look-up / computation before training


LOSS_TERMS: tuple[str, ...] = ("bag", "cosine", "correlation", "hybrid", "hazard")
"""The terms of a bag stage's objective, named like the fields of ``LossWeights``."""
_METHOD_TERMS: dict[str, tuple[str, ...]] = {
    "bagloss": ("bag",),
    "priors": ("bag", "cosine", "correlation"),
    "pslab": ("bag", "cosine", "correlation"),
    "hybrid": ("bag", "cosine", "correlation", "hybrid"),
    "hazard": ("hazard", "cosine"),
}


@dataclass(frozen=True)
class Candidate:
    """One fit ``auto`` makes: a single-method plan under its own config.

    ``warm_start``: its bag stage starts from the BagLoss candidate's scorer. ``fold``: hybrid trained without
    the gold of cross-fitting fold ``fold`` (0-based) and scored on it; ``None``: trained on all the gold.
    ``cosine``: the cosine weight of a priors candidate. ``blend``: no fit of its own; the BagLoss candidate's
    scorer and the cosine prior mixed by a logistic map of both logits fitted on the judged bags. ``refit``:
    trained on all the gold and judged by the pooled scores of its fold candidates (hybrid, hazard).
    """

    name: str
    plan: MethodPlan
    warm_start: bool = False
    fold: int | None = None
    cosine: float | None = None
    blend: bool = False
    refit: bool = False


@dataclass(frozen=True)
class MethodPlan:
    """A method name resolved once against the data (gold or not, aggregation) and a config: what runs.

    ``name`` is what was asked ("fractal"), ``pipeline`` what runs ("auto"). ``stages``: every training stage in
    order (an ``auto`` plan lists its candidates' stages under :func:`auto_stage` names). ``losses``: the terms
    of the bag stage's objective with a positive weight, their weights renormalised to sum to 1 (empty without
    a bag stage). ``candidates``: ``auto``'s fits, in the order they run.
    """

    name: str
    pipeline: str
    config: TrainConfig
    aggregation: str
    stages: tuple[str, ...]
    needs_gold: bool = False
    trained: bool = True
    losses: tuple[tuple[str, float], ...] = ()
    candidates: tuple[Candidate, ...] = ()

    @property
    def loss_weights(self) -> dict[str, float]:
        """{term: weight} of the bag stage's objective (weights sum to 1)."""
        return dict(self.losses)

    def runs(self, stage: str) -> bool:
        """Whether the (single-method) plan has the training stage ``stage``."""
        return stage in self.stages


def _loss_weights(name: str, config: TrainConfig) -> tuple[tuple[str, float], ...]:
    """The bag objective's terms of ``name`` with a positive weight, renormalised (a zero-weight term is
    neither built nor computed). ValueError when the used terms' weights sum to 0."""
    raw = {t: float(getattr(config.weights, t)) for t in _METHOD_TERMS.get(name, ())}
    raw = {t: w for t, w in raw.items() if w > 0}
    total = sum(raw.values())
    if name in _METHOD_TERMS and total <= 0:
        raise ValueError(
            f"method {name!r}: the loss weights of its terms ({', '.join(_METHOD_TERMS[name])}) sum to 0"
        )
    return tuple((t, w / total) for t, w in raw.items())


def _single_stages(name: str, aggregation: str, config: TrainConfig) -> tuple[str, ...]:
    """The training stages of a single (not ``auto``) method. PsLab is undefined for ``mean`` bags (there the
    bag model is the output); ``hybrid`` ends with PsLab only when ``TrainConfig.pslab`` is on."""
    pslab_ok = aggregation in ("max", "min")
    if not method(name).trained:
        return ()
    if name == "supervised":
        return (STAGE_SUPERVISED,)
    if name == "hazard" and aggregation != "max":
        raise ValueError(
            "method 'hazard' scores steps by where the first error is: it needs responses labelled by their "
            f"worst step (max), not {aggregation}"
        )
    if name in ("bagloss", "priors", "hazard"):
        return (STAGE_BAG,)
    if name == "pslab":
        return (STAGE_BAG, STAGE_PSLAB) if pslab_ok else (STAGE_BAG,)
    if name == "hybrid":
        tail = (STAGE_PSLAB,) if config.pslab and pslab_ok else ()
        return (STAGE_TEACHER, STAGE_BAG, *tail)
    raise ValueError(f"method {name!r} has no stage plan in fractal_core.fitting.method_plan")


def single_plan(name: str, *, asked: str, aggregation: str, config: TrainConfig) -> MethodPlan:
    """The plan of the single (not ``auto``) method ``name``, asked for as ``asked``. ``hazard`` early-stops on
    its own objective, the exact first-error likelihood of the validation responses, unless the config names
    another ``valid_metric`` (chosen on ProcessBench valid over the sentence AUC of its gold: BENCHMARKS.md)."""
    entry = method(name)
    if name == "hazard" and config.valid_metric == "auto":
        config = replace(config, valid_metric="first_error")
    return MethodPlan(
        name=asked,
        pipeline=name,
        config=config,
        aggregation=aggregation,
        stages=_single_stages(name, aggregation, config),
        needs_gold=entry.needs_gold,
        trained=entry.trained,
        losses=_loss_weights(name, config),
    )
