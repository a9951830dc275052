"""Typed settings for training. Literal defaults, one line of doc per field, nothing computed at import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

BagVariant = Literal["hard", "prob", "lse"]
ValidMetric = Literal["auto", "sentence", "bag"]
ScorerKind = Literal["mlp", "context"]
ContextDirection = Literal["auto", "causal", "bidirectional"]
ProportionLoss = Literal["mse", "count"]


@dataclass(frozen=True)
class LossWeights:
    """Lambdas of the suite; renormalised to sum to 1 over the terms a method actually uses."""

    bag: float = 0.9  # BagLoss: aggregate of sentence predictions vs the response label
    cosine: float = 0.1  # cosine prior: sentence/context similarity as a soft target
    correlation: float = 0.0  # correlation prior: correlated sentences pulled to the same label
    hybrid: float = 0.1  # hybrid prior: soft targets of an instance model trained on gold labels


@dataclass(frozen=True)
class TrainConfig:
    """How a FRACTAL model is trained. The defaults are the ones chosen on validation splits (BENCHMARKS.md)."""

    bag_variant: BagVariant = (
        "hard"  # max/min aggregation: hard (paper), prob (noisy-OR / product), lse (smooth)
    )
    proportion_loss: ProportionLoss = "mse"  # mean (LLP) bags: squared error of the proportion, or count NLL
    lse_temperature: float = 0.1  # temperature of the smooth max when bag_variant == "lse" (logit units)
    weights: LossWeights = field(default_factory=LossWeights)
    scorer: ScorerKind = (
        "mlp"  # instance scorer: "mlp" (one sentence at a time) or "context" (+ its response)
    )
    context_direction: ContextDirection = (
        "auto"  # "context" scorer: causal (steps see earlier steps only), bidirectional, or from the data
    )
    calibrate: bool = (
        False  # binary max/min: Platt-scale the scorer to held-out response labels after fitting
    )
    hidden: int | None = None  # first hidden width of the scorer MLP; None -> encoder dim (paper: d)
    learning_rate: float = 1e-3  # AdamW step size
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    batch_bags: int = 64  # bags per optimiser step (the last partial batch is kept)
    min_batches_per_epoch: int = 10  # small sets (e.g. a few gold bags) get smaller batches, not fewer steps
    max_epochs: int = 30  # upper bound on epochs per stage
    patience: int = 5  # epochs without validation improvement before stopping
    teacher_implied: bool = False  # hybrid teacher also trains on sentence labels implied by response labels
    pslab: bool = False  # finish weakly supervised methods with maximum-likelihood pseudo-labels
    valid_metric: ValidMetric = "auto"  # early stopping: sentence AUC when validation has gold, else bag loss
    valid_fraction: float = (
        0.1  # share of training bags held out for early stopping when no valid set is given
    )
    device: str = "auto"  # "auto" -> CUDA when present, else CPU; or any torch device string
    cpu_threads: int = (
        1  # torch threads while training on CPU (small matrices: 1 is fastest on a busy machine,
    )
    # see BENCHMARKS.md "Training"); 0 keeps torch's default
    min_gold_for_valid: int = 20  # labelled validation sentences needed (both classes) to early-stop on them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        weights = LossWeights(**data.pop("weights", {}))
        return cls(weights=weights, **data)
