"""Typed settings for training. Literal defaults, one line of doc per field, nothing computed at import.

Each setting checks its fields when it is created (types, ranges, literals) and refuses a bad one with an
``InputError`` naming the field, so a bad value from a file, the command line or a job payload stops where it
enters. Torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fractal_core import fields
from fractal_core.errors import InputError
from fractal_core.mil.variants import DEFAULT_BAG_VARIANT, BagVariant

ValidMetric = Literal["auto", "sentence", "bag", "first_error"]
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
    hazard: float = (
        0.9  # first-error hazard likelihood of response labels and gold first errors (hazard method)
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            fields.number(f"weights.{f.name}", getattr(self, f.name), low=0.0)

    @classmethod
    def from_dict(cls, data: object) -> LossWeights:
        """From a JSON-like mapping; unknown keys and bad values raise ``InputError`` naming the field."""
        if not isinstance(data, dict):
            raise InputError(f"expected a mapping of loss weights, got {data!r}", field="weights")
        _known(cls, data, prefix="weights.")
        return cls(**data)


@dataclass(frozen=True)
class TrainConfig:
    """How a FRACTAL model is trained. The defaults are the ones chosen on validation splits (BENCHMARKS.md)."""

    bag_variant: BagVariant = (
        DEFAULT_BAG_VARIANT  # max/min aggregation: hard (paper), prob (noisy-OR / product), lse (smooth)
    )
    proportion_loss: ProportionLoss = "mse"  # mean (LLP) bags: squared error of the proportion, or count NLL
    lse_temperature: float = 0.1  # temperature of the smooth max when bag_variant == "lse" (logit units)
    weights: LossWeights = field(default_factory=LossWeights)
    scorer: ScorerKind = (
        "mlp"  # instance scorer: "mlp" (one sentence at a time) or "context" (+ its response)
    )
    # "context" scorer: causal (steps see earlier steps only), bidirectional, or from the data
    context_direction: ContextDirection = "auto"
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
    # early stopping: sentence AUC when validation has gold, else bag loss; "first_error": the exact first-error
    # (hazard) log-likelihood of the validation responses' gold first errors and labels
    valid_metric: ValidMetric = "auto"
    valid_fraction: float = (
        0.1  # share of training bags held out for early stopping when no valid set is given
    )
    device: str = "auto"  # "auto" -> CUDA when present, else CPU; or any torch device string
    # torch threads while training on CPU (small matrices: 1 is fastest on a busy machine, see BENCHMARKS.md
    # "Training"); 0 keeps torch's default
    cpu_threads: int = 1
    min_gold_for_valid: int = 20  # labelled validation sentences needed (both classes) to early-stop on them
    hazard_rank: float = 1.0  # hazard method: weight of log P(first = gold first error | a problem)

    def __post_init__(self) -> None:
        fields.choice("bag_variant", self.bag_variant, BagVariant)
        fields.choice("proportion_loss", self.proportion_loss, ProportionLoss)
        fields.number("lse_temperature", self.lse_temperature, low=0.0, closed=(False, True))
        if not isinstance(self.weights, LossWeights):
            raise InputError(f"expected LossWeights, got {self.weights!r}", field="weights")
        fields.choice("scorer", self.scorer, ScorerKind)
        fields.choice("context_direction", self.context_direction, ContextDirection)
        for flag in ("calibrate", "teacher_implied", "pslab"):
            fields.boolean(flag, getattr(self, flag))
        if self.hidden is not None:
            fields.integer("hidden", self.hidden, low=1)
        fields.number("learning_rate", self.learning_rate, low=0.0)
        fields.number("weight_decay", self.weight_decay, low=0.0)
        fields.integer("batch_bags", self.batch_bags, low=1)
        fields.integer("min_batches_per_epoch", self.min_batches_per_epoch, low=1)
        fields.integer("max_epochs", self.max_epochs, low=1)
        fields.integer("patience", self.patience, low=1)
        fields.choice("valid_metric", self.valid_metric, ValidMetric)
        fields.number("valid_fraction", self.valid_fraction, low=0.0, high=1.0, closed=(True, False))
        fields.text("device", self.device, empty=False)
        fields.integer("cpu_threads", self.cpu_threads, low=0)
        fields.integer("min_gold_for_valid", self.min_gold_for_valid, low=0)
        fields.number("hazard_rank", self.hazard_rank, low=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From a JSON-like mapping (``to_dict``'s shape, any subset of fields); unknown keys and bad values
        raise ``InputError`` naming the field."""
        if not isinstance(data, dict):
            raise InputError(f"expected a mapping of training settings, got {data!r}", field="config")
        data = dict(data)
        _known(cls, data)
        weights = LossWeights.from_dict(data.pop("weights", {}))
        return cls(weights=weights, **data)


RESPONSE_LABEL_MODES: tuple[str, ...] = ("beside", "alone")
"""What a fit on preference pairs does with the responses' own labels: train on them beside the pairs (the
suite's BagLoss, ``fitting.preference``), or leave them out (PrefBagLoss alone)."""
DEFAULT_RESPONSE_LABELS = "beside"
"""The default of :data:`RESPONSE_LABEL_MODES` (chosen on valid: BENCHMARKS.md, "Preference pairs beside response
labels")."""


def response_labels_mode(value: object, *, field: str = "response_labels") -> str:
    """``value`` if it is one of :data:`RESPONSE_LABEL_MODES`; ``InputError`` naming ``field`` otherwise."""
    if not isinstance(value, str) or value not in RESPONSE_LABEL_MODES:
        raise InputError(f"expected one of {', '.join(RESPONSE_LABEL_MODES)}, got {value!r}", field=field)
    return value


def _known(cls: type, data: dict[str, Any], *, prefix: str = "") -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise InputError(f"unknown setting; known: {', '.join(sorted(names))}", field=f"{prefix}{key}")


__all__ = [
    "DEFAULT_RESPONSE_LABELS",
    "RESPONSE_LABEL_MODES",
    "BagVariant",
    "LossWeights",
    "TrainConfig",
    "response_labels_mode",
]
