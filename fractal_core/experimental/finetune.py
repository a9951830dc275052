"""Fine-tuning of the encoder with the bag loss: a token-level contextual scorer, on one of two routes.

``route="one_pass"`` reads each response once with a block mask, trains only the top layers over cached lower
states (``one_pass_windows``, ``one_pass_scorer``, ``one_pass_finetune``). ``route="per_step"`` (below):
every sentence becomes one token sequence ``[CLS] context [SEP] earlier sentences [SEP] sentence [SEP]``
(``token_bags``); the encoder runs over the whole sequence, the hidden states of the scored sentence's own tokens
are mean-pooled and a linear head gives its logit (binary) or level logits (ordinal), as log-probabilities
(N, C) like every scorer here (``token_scorer``).

Training minimises the suite's own losses (``fractal_core.mil.losses``): BagLoss on the response labels, plus,
with ``gold_weight`` > 0, the instance NLL on the gold sentence labels a user has (hybrid-style use of a small
gold budget). The one-pass route trains any trained method of the suite instead (``config.method``,
``one_pass_methods``); the per-step route trains ``bagloss`` only. A minibatch is a set of bags: their sentences' rows are gathered and padded to the batch's longest
sequence in one step, one forward pass scores them all, and the bag losses reduce over ``bag_index`` (segment
reductions): no Python loop over bags or sentences. CUDA when present, with bf16 autocast (fp16 with a gradient
scaler where bf16 is missing); bf16 autocast on a CPU with native bf16, float32 otherwise.

The epochs run in the library's one training loop (``fitting.train.run_epochs``); early stopping and Platt
calibration use the validation responses through the same rules as the frozen scorers
(``objectives.logp_validator``, ``calibration.fit_calibration``), the model is stored like ``FractalModel``
(``fitting.persistence``), and metrics come from ``evaluation.scorer_metrics.evaluation_metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fractal_core.data.files import check_output_dir
from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import load_model_quietly, resolve_device, resolve_model_path
from fractal_core.embedding.model_files import compute_encoder_id
from fractal_core.errors import InputError
from fractal_core.experimental.finetune_config import FinetuneConfig, Precision, training_precision
from fractal_core.experimental.one_pass_scorer import OnePassScorer
from fractal_core.experimental.token_bags import TokenBags, build_token_bags
from fractal_core.experimental.token_scorer import TokenScorer, batch_loss, score_token_bags
from fractal_core.fitting.calibration import Calibration, fit_calibration
from fractal_core.fitting.objectives import logp_validator
from fractal_core.fitting.persistence import load_meta, load_state, save_model_dir
from fractal_core.fitting.train import ProgressFn, Schedule, run_epochs, seeded_dropout
from fractal_core.mil.aggregate import positive_score

FORMAT_VERSION = 1


@dataclass
class FinetuneResult:
    """A fine-tuned scorer, its calibration and what each epoch did."""

    model: TokenScorer | OnePassScorer
    tokenizer: Any
    config: FinetuneConfig
    aggregation: str
    n_classes: int
    calibration: dict[str, Any] | None
    train_loss: list[float]
    valid_score: list[float]
    best_epoch: int
    seconds: float
    device: torch.device
    causal: bool = False  # one_pass route: windows read block-causally
    # one_pass route, --train-layers chosen on valid: {"mode", "valid_score": {layers: best valid score},
    # "chosen"} (``one_pass_finetune.choose_train_layers``)
    layer_choice: dict[str, Any] | None = None
    cache_seconds: float = 0.0  # one_pass route: seconds spent on the frozen states (every candidate)
    epochs_run: int = 0  # one_pass route: training epochs run (every candidate)

    FILES: ClassVar[tuple[str, ...]] = ("finetune.json", "head.pt")
    """What :meth:`save` writes beside the ``encoder`` directory."""
    COMPACT_FILES: ClassVar[tuple[str, ...]] = ("finetune.json", "head.pt", "top_layers.pt")
    """What :meth:`save` writes with ``encoder_files=False`` (one flat directory, no encoder copy)."""

    def predict_logp_tokens(self, data: TokenBags) -> torch.Tensor:
        """Calibrated log-probabilities (N, C) of prepared sequences (the per-step route)."""
        if not isinstance(self.model, TokenScorer):
            raise TypeError("prepared per-step sequences need a per-step model")
        dtype, _ = training_precision(self.device, self.config.precision)
        logp = score_token_bags(
            self.model, data, device=self.device, batch=self.config.score_batch, autocast=dtype
        )
        if self.calibration is None:
            return logp
        with torch.inference_mode():
            return Calibration.from_dict(self.calibration)(logp)

    def predict(
        self, records: Sequence[ResponseRecord], *, progress: ProgressFn | None = None
    ) -> list[np.ndarray]:
        """Per response: (n_sentences,) P(level >= 1), like ``FractalModel.predict`` (``progress``: the one-pass
        route's cache and scoring stages; it may raise to cancel)."""
        if isinstance(self.model, OnePassScorer):
            from fractal_core.experimental.one_pass_finetune import predict_logp

            logp = predict_logp(
                self.model, records, self.tokenizer, self.config, causal=self.causal, device=self.device,
                progress=progress,
            )  # fmt: skip
            if self.calibration is not None:
                with torch.inference_mode():
                    logp = Calibration.from_dict(self.calibration)(logp)
        else:
            logp = self.predict_logp_tokens(build_token_bags(records, self.tokenizer, self.config))
        score = positive_score(logp).numpy().astype(np.float64)
        sizes = np.array([len(r.spans) for r in records])
        return np.split(score, np.cumsum(sizes)[:-1])

    def save(self, directory: str | Path, *, encoder_files: bool = True) -> Path:
        """``finetune.json`` (config, task, calibration, history), ``head.pt`` and the encoder + tokenizer in
        ``encoder/``; the description is written last, atomically, like ``FractalModel.save``.

        ``encoder_files=False`` (one-pass route only): instead of the whole encoder, only the trained top layers
        (``top_layers.pt``) and the id of the encoder they were trained from; :meth:`load` rebuilds the rest from
        that encoder (the app's model store keeps a few MB per version this way, not the encoder)."""
        directory = Path(directory)
        if not encoder_files:
            return self._save_compact(directory)
        meta = self._meta()
        states = {"head.pt": self.model.head.state_dict()}
        check_output_dir(directory, self.FILES).mkdir(parents=True, exist_ok=True)
        self.model.encoder.save_pretrained(directory / "encoder")  # type: ignore[operator]
        self.tokenizer.save_pretrained(directory / "encoder")
        return save_model_dir(
            directory, meta_file="finetune.json", meta=meta, states=states, files=self.FILES
        )

    def _meta(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "finetune",
            "config": self.config.to_dict(),
            "aggregation": self.aggregation,
            "n_classes": self.n_classes,
            "calibration": self.calibration,
            "train_loss": self.train_loss,
            "valid_score": self.valid_score,
            "best_epoch": self.best_epoch,
            "seconds": self.seconds,
            "causal": self.causal,
            "layer_choice": self.layer_choice,
            "cache_seconds": self.cache_seconds,
            "epochs_run": self.epochs_run,
        }

    def _save_compact(self, directory: Path) -> Path:
        if not isinstance(self.model, OnePassScorer):
            raise ValueError(
                "only a one-pass scorer is saved without its encoder (its lower layers are frozen)"
            )
        model = self.model
        top = {
            name: value.detach().cpu()
            for name, value in model.encoder.state_dict().items()
            if model.trains(name)
        }
        meta = {**self._meta(), "encoder_id": base_encoder_id(self.config), "encoder_files": False}
        states = {"head.pt": model.head.state_dict(), "top_layers.pt": top}
        return save_model_dir(
            directory, meta_file="finetune.json", meta=meta, states=states, files=self.COMPACT_FILES
        )

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> FinetuneResult:
        """Rebuild a saved fine-tuned scorer on ``device`` (default: the config's); refuses a newer format."""
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        meta = load_meta(directory, "finetune.json", format_version=FORMAT_VERSION)
        config = FinetuneConfig.from_dict(meta["config"])
        torch_device = resolve_device(device or config.device)
        compact = meta.get("encoder_files") is False
        if compact:  # the trained top layers over the encoder they were trained from
            if base_encoder_id(config) != meta.get("encoder_id"):
                raise ValueError(
                    f"{directory}: this scorer was trained from encoder {meta.get('encoder_id')}, which is not "
                    f"the one installed here ({base_encoder_id(config)})"
                )
            encoder, tokenizer = load_encoder(config)
        else:
            tokenizer = AutoTokenizer.from_pretrained(directory / "encoder", local_files_only=True)
            encoder = AutoModel.from_pretrained(directory / "encoder", local_files_only=True)
        model: TokenScorer | OnePassScorer
        if config.route == "one_pass":
            model = OnePassScorer(encoder, int(meta["n_classes"]), train_layers=config.train_layers)
            if compact:
                top = load_state(directory / "top_layers.pt")
                if set(top) != {n for n in encoder.state_dict() if model.trains(n)}:
                    raise ValueError(f"{directory}: top_layers.pt does not match the encoder's top layers")
                encoder.load_state_dict(top, strict=False)
        else:
            model = TokenScorer(encoder, int(meta["n_classes"]))
        model.head.load_state_dict(load_state(directory / "head.pt"))
        return cls(
            model=model.to(torch_device).eval(),
            tokenizer=tokenizer,
            config=config,
            aggregation=meta["aggregation"],
            n_classes=int(meta["n_classes"]),
            calibration=meta.get("calibration"),
            train_loss=list(meta.get("train_loss", [])),
            valid_score=list(meta.get("valid_score", [])),
            best_epoch=int(meta.get("best_epoch", -1)),
            seconds=float(meta.get("seconds", 0.0)),
            device=torch_device,
            causal=bool(meta.get("causal", False)),
            layer_choice=meta.get("layer_choice"),
            cache_seconds=float(meta.get("cache_seconds", 0.0)),
            epochs_run=int(meta.get("epochs_run", 0)),
        )


def base_encoder_id(config: FinetuneConfig) -> str:
    """The id of the encoder ``config`` names (its files' hash), as the one-pass state cache keys it."""
    return compute_encoder_id(resolve_model_path(config.encoder), max_length=config.window_tokens)


def load_encoder(config: FinetuneConfig) -> tuple[nn.Module, Any]:
    """The trainable encoder and its tokenizer from ``config.encoder`` (a name or a local directory)."""
    from transformers import AutoModel, AutoTokenizer

    model_dir = resolve_model_path(config.encoder)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return load_model_quietly(AutoModel, model_dir), tokenizer


def finetune(
    train: Sequence[ResponseRecord] | TokenBags,
    valid: Sequence[ResponseRecord] | TokenBags | None,
    *,
    aggregation: str,
    n_classes: int,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    encoder: tuple[nn.Module, Any] | None = None,
    progress: ProgressFn | None = None,
) -> FinetuneResult:
    """Fine-tune the encoder and a linear head with the bag loss on ``train`` (records, or prepared sequences).

    Sentence labels in ``train`` are gold (used with ``gold_weight`` > 0); ``valid`` early-stops (sentence AUC
    on its gold labels when it has enough, else the likelihood of its response labels) and calibrates.
    ``encoder`` = (model, tokenizer) skips loading ``config.encoder`` (tests pass a tiny one). Every random draw
    (head initialisation, shuffles, dropout) derives from ``seed``.
    """
    config = config or FinetuneConfig()
    started = time.perf_counter()
    if config.route == "one_pass":
        return _finetune_one_pass(
            train, valid, aggregation, n_classes, config, seed, encoder, progress, started
        )
    if config.method != "bagloss":
        raise InputError(
            f"the per-step route trains bagloss only, not {config.method!r} (the one-pass route trains "
            "every method of the suite)",
            field="method",
        )
    device = resolve_device(config.device)
    dtype, needs_scaler = training_precision(device, config.precision)
    generator = torch.Generator().manual_seed(seed)
    module, tokenizer = encoder if encoder is not None else load_encoder(config)
    train_data = train if isinstance(train, TokenBags) else build_token_bags(train, tokenizer, config)
    valid_data = (
        valid if valid is None or isinstance(valid, TokenBags) else build_token_bags(valid, tokenizer, config)
    )
    model = TokenScorer(module, n_classes, generator=generator).to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": config.learning_rate},
            {"params": model.head.parameters(), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    rule, _ = logp_validator(
        valid_data.bagset() if valid_data is not None else None, aggregation=aggregation, config=config.bag
    )

    def step_loss(bags: torch.Tensor) -> torch.Tensor:
        return batch_loss(
            model, train_data, bags, aggregation=aggregation, config=config, device=device, autocast=dtype
        )

    def validate() -> float:
        assert rule is not None and valid_data is not None
        return rule(
            score_token_bags(model, valid_data, device=device, batch=config.score_batch, autocast=dtype)
        )

    with seeded_dropout(seed, device):
        stage = run_epochs(
            model,
            train_data.n_bags,
            step_loss,
            optimiser=optimiser,
            schedule=Schedule(config.batch_bags, config.epochs, config.patience, report_steps=True),
            generator=generator,
            validate=validate if rule is not None and valid_data is not None else None,
            stage="finetune",
            progress=progress,
            scaler=torch.amp.GradScaler("cuda") if needs_scaler else None,
        )
    calibration = None
    if config.calibrate and n_classes == 2 and aggregation in ("max", "min"):
        target = valid_data if valid_data is not None and valid_data.n_bags else train_data
        logp = score_token_bags(model, target, device=device, batch=config.score_batch, autocast=dtype)
        calibration = fit_calibration(
            logp, target.bagset(), aggregation=aggregation, n_classes=2, kind="logit"
        ).to_dict()
    return FinetuneResult(
        model=model,
        tokenizer=tokenizer,
        config=config,
        aggregation=aggregation,
        n_classes=n_classes,
        calibration=calibration,
        train_loss=stage.train_loss,
        valid_score=stage.valid_score,
        best_epoch=stage.best_epoch,
        seconds=time.perf_counter() - started,
        device=device,
    )


def _finetune_one_pass(
    train: Sequence[ResponseRecord] | TokenBags,
    valid: Sequence[ResponseRecord] | TokenBags | None,
    aggregation: str,
    n_classes: int,
    config: FinetuneConfig,
    seed: int,
    encoder: tuple[nn.Module, Any] | None,
    progress: ProgressFn | None,
    started: float,
) -> FinetuneResult:
    """``finetune`` on the one-pass route (``one_pass_finetune``); records only (windows are built there)."""
    from fractal_core.experimental.one_pass_finetune import choose_train_layers
    from fractal_core.experimental.one_pass_methods import one_pass_plan
    from fractal_core.experimental.one_pass_windows import record_bags

    if isinstance(train, TokenBags) or isinstance(valid, TokenBags):
        raise ValueError("the one_pass route takes records, not per-step sequences")
    # the method is checked against the data before any encoder is loaded
    one_pass_plan(config.method, record_bags(train), aggregation=aggregation, config=config.bag)
    module, tokenizer = encoder if encoder is not None else load_encoder(config)
    fit = choose_train_layers(
        train, valid, aggregation=aggregation, n_classes=n_classes, config=config, seed=seed,
        encoder=(module, tokenizer), progress=progress,
    )  # fmt: skip
    return FinetuneResult(
        model=fit.model, tokenizer=tokenizer, config=fit.config, aggregation=aggregation, n_classes=n_classes,
        calibration=fit.calibration, train_loss=fit.stage.train_loss, valid_score=fit.stage.valid_score,
        best_epoch=fit.stage.best_epoch, seconds=time.perf_counter() - started,
        device=fit.model.head.weight.device, causal=fit.causal, layer_choice=fit.choice,
        cache_seconds=fit.cache_seconds, epochs_run=fit.epochs_run,
    )  # fmt: skip


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "Precision",
    "TokenBags",
    "TokenScorer",
    "batch_loss",
    "build_token_bags",
    "finetune",
    "load_encoder",
    "score_token_bags",
    "training_precision",
]
