"""A fitted ``FractalModel``'s state and what is done with it once fit: scoring, evaluation, save and load.

:class:`FittedModel` holds the arguments and the learned state (names ending in ``_``); ``FractalModel``
(:mod:`fractal_core.fitting.estimator`) adds the fitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig, get_encoder, resolve_device
from fractal_core.embedding.features import embed_records
from fractal_core.evaluation.scorer_metrics import evaluation_metrics
from fractal_core.fitting.bags import CHUNK_BAGS, BagSet
from fractal_core.fitting.calibration import calibrated_log_proba
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.first_error import FirstErrorChoice
from fractal_core.fitting.model import SentenceScorer, build_scorer
from fractal_core.fitting.persistence import load_meta, load_state, save_model_dir
from fractal_core.fitting.step_calibration import StepCalibration
from fractal_core.mil.posterior import posterior_scores

FORMAT_VERSION = 1
CALIBRATED_KEYS = ("step_ece", "posterior_auc_roc", "first_error_acc_given_y")
"""Figures :meth:`FittedModel.evaluate_bags` also reports of the step-calibrated probabilities."""


class FittedModel:
    """The arguments of a model and, once fit, its learned state: scoring, evaluation and persistence."""

    resolved_method_: str
    scorer_: SentenceScorer | None
    calibration_: dict[str, Any] | None
    selection_: dict[str, Any] | None
    aggregation_: str
    n_classes_: int
    encoder_id_: str | None
    metrics_: dict[str, Any]
    history_: list[dict[str, Any]]
    first_error_rule_: FirstErrorChoice
    step_calibration_: StepCalibration

    def __init__(
        self,
        method: str = "fractal",
        *,
        config: TrainConfig | None = None,
        encoder: EncoderConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.config = config
        self.encoder = encoder
        self.seed = seed

    def _config(self) -> TrainConfig:
        return self.config or TrainConfig()

    def _step_calibration(self) -> StepCalibration:
        return getattr(self, "step_calibration_", None) or StepCalibration()

    # ----------------------------------------------------------------------------------------------- scoring
    def predict_proba_bags(
        self, bags: BagSet, *, chunk_bags: int = CHUNK_BAGS, calibrated: bool = False
    ) -> torch.Tensor:
        """Sentence probabilities over the label levels (N, C) for prepared bags: the model's raw ones, or with
        ``calibrated`` its step calibration applied (``step_calibration_``, the identity when none was fitted).
        Raw is the default: the calibration is increasing, so marginal rankings are the same either way.
        """
        proba = self._raw_proba_bags(bags, chunk_bags=chunk_bags)
        return self._step_calibration().apply_proba(proba) if calibrated else proba

    def _raw_proba_bags(self, bags: BagSet, *, chunk_bags: int) -> torch.Tensor:
        """:meth:`predict_proba_bags` without the step calibration.

        The scorer runs on ``chunk_bags`` bags at a time, so its activations stay bounded however many
        sentences there are (and float16 embeddings are upcast one chunk at a time). At 16,384 bags a chunk
        (~82k sentences, d = 384) the float32 inputs and activations held ~0.46 GB at once.
        """
        method = self.resolved_method_
        calibration = getattr(self, "calibration_", None)
        if calibration is not None:  # a fitted logistic map of the prior's or the scorer's score
            return calibrated_log_proba(calibration, bags, self.scorer_).exp()
        if method in ("naive", "prior_only"):
            if method == "naive":
                level = bags.labels[bags.bag_index]
                score = level.clamp(0, 1) if self.aggregation_ == "mean" else (level >= 1).float()
                if self.n_classes_ > 2 and self.aggregation_ != "mean":
                    return torch.nn.functional.one_hot(level.long(), self.n_classes_).float()
            else:
                cos_target = bags.with_cosine_target().cos_target
                assert cos_target is not None
                score = cos_target
            # Spread P(level >= 1) over the top level for ordinal data: baselines know no finer split.
            proba = torch.zeros(bags.n_sentences, self.n_classes_, device=bags.device)
            proba[:, 0] = 1 - score
            proba[:, -1] += score
            return proba
        assert self.scorer_ is not None
        scorer = self.scorer_.to(bags.device)
        with torch.inference_mode():
            if bags.n_bags <= chunk_bags and bags.full_precision:
                return scorer(bags).exp()
            return bags.per_sentence(lambda chunk: scorer(chunk).exp(), chunk_bags)

    def predict_bags(self, bags: BagSet, *, calibrated: bool = False) -> torch.Tensor:
        """Sentence scores P(label >= 1) (N,) for prepared bags, raw or step-calibrated."""
        proba = self.predict_proba_bags(bags, calibrated=calibrated)
        return 1 - proba[:, 0]

    def _embed(self, records: Sequence[ResponseRecord]) -> BagSet:
        return embed_records(records, get_encoder(self.encoder), device=resolve_device(self._config().device))

    def predict_proba(
        self, records: Sequence[ResponseRecord], *, calibrated: bool = False
    ) -> list[np.ndarray]:
        """Per response, the (n_sentences, C) probabilities over label levels (raw, or step-calibrated)."""
        proba = self.predict_proba_bags(self._embed(records), calibrated=calibrated).cpu().numpy()
        return np.split(proba, np.cumsum([len(r.spans) for r in records])[:-1])

    def predict(
        self, records: Sequence[ResponseRecord], *, given_labels: bool = False, calibrated: bool | None = None
    ) -> list[np.ndarray]:
        """Per response, the (n_sentences,) scores P(label >= 1) in [0, 1].

        ``given_labels=True`` conditions on each response's own label (fractal_core.mil.posterior): e.g. every
        sentence of a max response labelled 0 scores 0. The default is the model's marginal, which is what
        disagreement with the response label and active selection need. ``calibrated``: through the step
        calibration or not; None is the model's choice: raw marginals, and for the given-label view what was
        chosen on valid (``step_calibration_.given_label``).
        """
        if calibrated is None:
            calibrated = given_labels and self._step_calibration().given_label
        if not given_labels:
            return [1 - p[:, 0] for p in self.predict_proba(records, calibrated=calibrated)]
        bags = self._embed(records)
        logp = self.predict_proba_bags(bags, calibrated=calibrated).clamp_min(1e-12).log()
        scores = (
            posterior_scores(logp, bags.bag_index, bags.labels, aggregation=self.aggregation_).cpu().numpy()
        )
        return np.split(scores, np.cumsum([len(r.spans) for r in records])[:-1])

    # ------------------------------------------------------------------------------------------- evaluation
    def evaluate_bags(self, bags: BagSet) -> dict[str, float]:
        """Sentence and bag metrics of this model's raw probabilities on prepared bags with gold labels, and the
        step ECE and given-label figures of its step-calibrated ones (``*_calibrated``)."""
        proba = self.predict_proba_bags(bags)
        out = evaluation_metrics(proba, bags, aggregation=self.aggregation_, n_classes=self.n_classes_)
        step = self._step_calibration()
        calibrated = out  # the identity map changes nothing: no second pass
        if not step.identity:
            calibrated = evaluation_metrics(
                step.apply_proba(proba), bags, aggregation=self.aggregation_, n_classes=self.n_classes_
            )
        for key in CALIBRATED_KEYS:
            if key in calibrated:
                out[f"{key}_calibrated"] = calibrated[key]
        return out

    def evaluate(self, records: Sequence[ResponseRecord]) -> dict[str, float]:
        """Metrics on records that carry gold sentence labels."""
        return self.evaluate_bags(self._embed(records))

    # ---------------------------------------------------------------------------------------- persistence
    FILES: tuple[str, ...] = ("model.json", "weights.pt")
    """What :meth:`save` writes into its directory."""

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` (method, config, task, encoder id, metrics) and ``weights.pt``, each atomically
        (InputError when the directory or one of them exists as something else)."""
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "resolved_method": self.resolved_method_,
            "seed": self.seed,
            "config": self._config().to_dict(),
            "encoder": None if self.encoder is None else self.encoder.__dict__,
            "encoder_id": self.encoder_id_,
            "aggregation": self.aggregation_,
            "n_classes": self.n_classes_,
            "metrics": self.metrics_,
            "history": self.history_,
            "calibration": getattr(self, "calibration_", None),
            "selection": getattr(self, "selection_", None),
            "first_error_rule": getattr(self, "first_error_rule_", FirstErrorChoice()).to_dict(),
            "step_calibration": self._step_calibration().to_dict(),
        }
        states = {}
        if self.scorer_ is not None:
            meta["dim"] = self.scorer_.dim
            meta["scorer"] = self.scorer_.spec()
            states["weights.pt"] = self.scorer_.state_dict()
        return save_model_dir(directory, meta_file="model.json", meta=meta, states=states, files=self.FILES)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild a saved model; refuses files from a newer format."""
        directory = Path(directory)
        meta = load_meta(directory, "model.json", format_version=FORMAT_VERSION)
        config = TrainConfig.from_dict(meta["config"])
        encoder = EncoderConfig(**meta["encoder"]) if meta.get("encoder") else None
        model = cls(meta["method"], config=config, encoder=encoder, seed=meta["seed"])
        model.resolved_method_ = meta["resolved_method"]
        model.aggregation_ = meta["aggregation"]
        model.n_classes_ = meta["n_classes"]
        model.encoder_id_ = meta.get("encoder_id")
        model.metrics_ = meta.get("metrics", {})
        model.history_ = meta.get("history", [])
        model.calibration_ = meta.get("calibration")
        model.selection_ = meta.get("selection")
        model.first_error_rule_ = FirstErrorChoice.from_dict(meta.get("first_error_rule"))
        model.step_calibration_ = StepCalibration.from_dict(meta.get("step_calibration"))
        model.scorer_ = None
        if "dim" in meta:
            spec = meta.get("scorer", {"kind": "mlp"})  # files written before the contextual scorer: the MLP
            scorer = build_scorer(spec, meta["dim"], n_classes=meta["n_classes"], hidden=config.hidden)
            scorer.load_state_dict(load_state(directory / "weights.pt"))
            model.scorer_ = scorer.eval()
        return model
