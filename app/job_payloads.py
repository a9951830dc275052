"""Typed job payloads, checked when a job is queued: the ``train`` payload and its training settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fractal_core.errors import InputError
from fractal_core.fitting import registry
from fractal_core.fitting.config import TrainConfig, response_labels_mode


def train_config(overrides: dict[str, Any] | None) -> TrainConfig:
    """A ``TrainConfig`` from the library defaults plus the user's overrides; an unknown key or a bad value
    raises ``InputError`` naming it (``config.<field>``)."""
    from fractal_core.fitting.config import TrainConfig

    try:
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **(overrides or {})})
    except InputError as err:
        raise InputError(err.reason, field=f"config.{err.field}" if err.field else "config") from None


SCORERS: dict[str, str] = {
    "frozen": "Frozen sentence vectors (default): the encoder embeds once, a small scorer trains on top",
    "one_pass": "Token-level, one pass per response: the encoder's top layers fine-tuned (slower, costed below)",
}
"""The scorers a training job can fit, the default first."""
ONE_PASS_METHODS: tuple[str, ...] = registry.ONE_PASS_METHODS
"""The methods the one-pass scorer trains (every trained method of the suite but ``auto``), each with its own
objective (``fractal_core.experimental.one_pass_methods``)."""
RESPONSE_LABEL_CHOICES: dict[str, str] = {
    "beside": "Pairs beside the responses' own labels: the labelled responses also train the model",
    "alone": "Pairs alone: the responses' own labels are left out of training",
}
"""What a training job on a dataset of preference pairs does with the responses' own labels (the library's
``config.RESPONSE_LABEL_MODES``), the default first."""
MAX_TRAIN_LAYERS = 6
"""Largest ``train_layers`` a job may ask for (0: chosen on the validation responses)."""


@dataclass(frozen=True)
class TrainPayload:
    """A ``train`` job's payload, parsed and checked when the job is queued (and again when it runs, since a
    stored payload may predate a check): a bad value is refused with its field named, before any work."""

    dataset_id: int
    method: str
    overrides: dict[str, Any]
    seed: int
    config: TrainConfig
    scorer: str = "frozen"
    train_layers: int = 0  # one_pass: top encoder layers trained (0: chosen on the validation responses)
    # A dataset of preference pairs: "beside" (train on the responses' own labels too) or "alone"; None: the
    # library's default (``config.DEFAULT_RESPONSE_LABELS``).
    response_labels: str | None = None
    joint: bool = False  # every criterion of the dataset's group in one model (``app.job_train_joint``)

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> TrainPayload:
        """``{"dataset_id", "method", "config": TrainConfig overrides, "seed"[, "scorer", "train_layers",
        "response_labels", "joint"]}`` -> a checked payload; ``InputError`` naming the field otherwise
        (``method``, ``seed``, ``scorer``, ``response_labels``, ``joint``, ``config.learning_rate``, ...). A joint
        fit trains the frozen scorer with one of ``registry.CRITERIA_METHODS``."""
        unknown = set(payload) - {
            "dataset_id", "method", "config", "seed", "scorer", "train_layers", "response_labels", "joint",
        }  # fmt: skip
        if unknown:
            raise InputError("unknown payload key", field=sorted(unknown)[0])
        dataset_id = payload.get("dataset_id")
        if isinstance(dataset_id, bool) or not isinstance(dataset_id, int):
            raise InputError(f"expected a dataset id, got {dataset_id!r}", field="dataset_id")
        method = payload.get("method", "fractal")
        if not isinstance(method, str) or method not in registry.METHOD_NAMES:
            raise InputError(
                f"unknown method {method!r}; choose one of {', '.join(registry.METHOD_NAMES)}", field="method"
            )
        seed = payload.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"expected a whole number >= 0, got {seed!r}", field="seed")
        overrides = payload.get("config") or {}
        if not isinstance(overrides, dict):
            raise InputError(f"expected a mapping of training settings, got {overrides!r}", field="config")
        scorer = payload.get("scorer", "frozen")
        if scorer not in SCORERS:
            raise InputError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}", field="scorer")
        refusal = registry.one_pass_refusal(method) if scorer == "one_pass" else None
        if refusal is not None:
            raise InputError(refusal, field="method")
        layers = payload.get("train_layers", 0)
        if isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= MAX_TRAIN_LAYERS:
            raise InputError(
                f"expected a whole number 0-{MAX_TRAIN_LAYERS}, got {layers!r}", field="train_layers"
            )
        labels = payload.get("response_labels")
        if labels is not None:
            labels = response_labels_mode(labels)
        joint = payload.get("joint", False)
        if not isinstance(joint, bool):
            raise InputError(f"expected true or false, got {joint!r}", field="joint")
        if joint and method not in registry.CRITERIA_METHODS:
            raise InputError(
                f"a joint fit of several criteria trains {', '.join(registry.CRITERIA_METHODS)}, not {method!r}",
                field="method",
            )
        if joint and scorer != "frozen":
            raise InputError("a joint fit of several criteria trains the frozen scorer", field="scorer")
        return cls(
            dataset_id, method, dict(overrides), seed, train_config(overrides), scorer, layers, labels, joint
        )

    def to_dict(self) -> dict[str, Any]:
        """The payload as stored with the job (the scorer keys only for the one-pass scorer, ``joint`` only for
        a joint fit: a frozen job's payload is what it always was)."""
        out: dict[str, Any] = {
            "dataset_id": self.dataset_id,
            "method": self.method,
            "config": self.overrides,
            "seed": self.seed,
        }
        if self.scorer != "frozen":
            out.update(scorer=self.scorer, train_layers=self.train_layers)
        if self.response_labels is not None:
            out["response_labels"] = self.response_labels
        if self.joint:
            out["joint"] = True
        return out
