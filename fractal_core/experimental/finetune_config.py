"""How the encoder is fine-tuned (:class:`FinetuneConfig`) and in which precision it trains."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from fractal_core.embedding.encoder import autocast_dtype
from fractal_core.fitting.config import TrainConfig

Precision = Literal["auto", "float32", "bfloat16", "float16"]
Route = Literal["per_step", "one_pass"]
Attention = Literal["auto", "causal", "full"]
ROUTES: tuple[str, ...] = ("per_step", "one_pass")
TRAIN_LAYER_GRID: tuple[int, ...] = (1, 2)
"""``train_layers=0``: the top-layer counts tried, the best by the validation rule kept."""
DEFAULT_TRAIN_LAYERS = 2
"""``train_layers=0`` without validation responses (nothing to choose on): the top layers trained."""


@dataclass(frozen=True)
class FinetuneConfig:
    """How the encoder is fine-tuned. Defaults sized for a CPU slice; a GPU takes longer sequences and epochs."""

    encoder: str | None = None  # encoder name or local Hugging Face directory (None: the bundled MiniLM)
    max_length: int = 192  # tokens per sequence, specials included
    context_tokens: int = 64  # first tokens of the context (question) kept
    sentence_tokens: int = 64  # first tokens of each sentence kept (as the scored one and in later prefixes)
    epochs: int = 3  # upper bound; the best validated epoch is kept
    patience: int = 1  # epochs without validation improvement before stopping
    batch_bags: int = 8  # bags per optimiser step
    score_batch: int = 64  # sequences per forward pass when scoring (no gradients)
    learning_rate: float = 3e-5  # AdamW step of the encoder
    head_learning_rate: float = 1e-3  # AdamW step of the linear head
    weight_decay: float = 0.01
    gold_weight: float = 1.0  # weight of the instance NLL on gold sentence labels (0: response labels only)
    # one_pass: the method of the suite trained (``one_pass_methods.ONE_PASS_METHODS``), its objective unchanged;
    # gold_weight adds its instance NLL to the bag stage. per_step: "bagloss" only
    method: str = "bagloss"
    calibrate: bool = True  # binary max/min: Platt-scale the logit to the validation responses' labels
    device: str = "auto"  # "auto" -> CUDA when present, else CPU
    precision: Precision = "auto"  # autocast: bf16 where native (fp16 + scaler on a GPU without bf16)
    bag: TrainConfig = field(default_factory=TrainConfig)  # BagLoss variant, temperature, validation rule
    # "per_step": one sequence per sentence with the earlier ones in front (every layer trains);
    # "one_pass": one block-masked pass per response window, lower layers frozen and their states cached
    route: Route = "per_step"
    # one_pass: top encoder layers trained (the rest, embeddings included, frozen); 0: each of
    # TRAIN_LAYER_GRID trained and the best on the validation responses kept
    train_layers: int = 2
    attention: Attention = "auto"  # one_pass: block-causal for first-error step data ("auto"), or as set
    window_tokens: int = 384  # one_pass: tokens per window, specials included
    state_cache: str | None = None  # one_pass: cache directory (None: the embedding cache's; "": memory only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        data = dict(data)
        return cls(bag=TrainConfig.from_dict(data.pop("bag", {})), **data)


def training_precision(device: torch.device, precision: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed) for fine-tuning on ``device``.

    bf16 where the hardware has it natively (``encoder.autocast_dtype``, the encoder's own rule); on a CUDA
    GPU without bf16, ``"auto"`` and ``"float16"`` take fp16 autocast with a gradient scaler (fp16 gradients
    underflow without one); ``"float16"`` on a CPU is refused.
    """
    if precision == "float16":
        if device.type != "cuda":
            raise ValueError(f"float16 fine-tuning needs a CUDA GPU, not {device}")
        return torch.float16, True
    dtype = autocast_dtype(device, precision)
    if dtype is None and precision == "auto" and device.type == "cuda":
        return torch.float16, True
    return dtype, False


__all__ = [
    "DEFAULT_TRAIN_LAYERS",
    "ROUTES",
    "TRAIN_LAYER_GRID",
    "Attention",
    "FinetuneConfig",
    "Precision",
    "Route",
    "training_precision",
]
