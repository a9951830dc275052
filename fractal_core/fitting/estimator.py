"""``FractalModel``: the scikit-learn-style facade that the CLI, the store's worker and the app all call.

    model = FractalModel("fractal", seed=0).fit(train_records, valid=valid_records)
    scores = model.predict(new_records)          # list of (n_sentences,) arrays of P(label >= 1)
    model.save("runs/v3"); FractalModel.load("runs/v3")

``__init__`` only stores arguments; learned state ends in ``_``. Sentence labels present on training records
are the gold labels: the hybrid prior and the supervised ceiling use them, the other methods ignore them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from fractal_core.data.io import num_classes
from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig, get_encoder, resolve_device
from fractal_core.embedding.features import embed_records
from fractal_core.evaluation.scorer_metrics import evaluation_metrics
from fractal_core.fitting import registry
from fractal_core.fitting.bags import CHUNK_BAGS, BagSet
from fractal_core.fitting.calibration import calibrated_log_proba, fit_calibration
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.first_error import FirstErrorChoice, choose_first_error_rule
from fractal_core.fitting.fit import fit_method
from fractal_core.fitting.methods import METHODS
from fractal_core.fitting.model import build_scorer
from fractal_core.fitting.persistence import load_meta, load_state, save_model_dir
from fractal_core.fitting.preference import fit_preference, preference_bags
from fractal_core.fitting.train import ProgressFn
from fractal_core.mil.posterior import posterior_scores

FORMAT_VERSION = 1


def task_of(records: Sequence[ResponseRecord]) -> tuple[str, int]:
    """(aggregation, number of label levels) shared by all ``records``; mixed aggregations are refused."""
    aggregations = {r.aggregation for r in records}
    if len(aggregations) != 1:
        raise ValueError(
            f"responses mix aggregations {sorted(aggregations)}; train one aggregation at a time"
        )
    return aggregations.pop(), num_classes(records)


def holdout_split(n_bags: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Seeded split of bag ids into (train, valid); no validation bags for tiny sets (< 10 bags)."""
    order = torch.randperm(n_bags, generator=torch.Generator().manual_seed(seed + 7919))
    n_valid = int(round(n_bags * fraction))
    if n_bags < 10 or n_valid < 1:
        return order, None
    return order[n_valid:].sort().values, order[:n_valid].sort().values


class FractalModel:
    """Learns sentence scores from response labels with one method of the FRACTAL suite."""

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

    # ----------------------------------------------------------------------------------------------- fitting
    def _config(self) -> TrainConfig:
        return self.config or TrainConfig()

    def fit(
        self,
        records: Sequence[ResponseRecord],
        *,
        valid: Sequence[ResponseRecord] | None = None,
        progress: ProgressFn | None = None,
    ) -> Self:
        """Embed and train on ``records``; early-stop on ``valid`` (or on a held-out share of ``records``)."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        aggregation, n_classes = task_of(records)
        if valid:
            task_of([*records, *valid])
        encoder = get_encoder(self.encoder)
        device = resolve_device(self._config().device)
        on_embed = None
        if progress is not None:
            report = progress
            progress("embed", 0.0, f"embedding {sum(len(r.spans) for r in records)} sentences")

            def on_embed(done: int, total: int) -> None:
                report("embed", done / max(total, 1), f"{done}/{total} unique sentences embedded")

        bags = embed_records(records, encoder, device=device, progress=on_embed)
        valid_bags = embed_records(valid, encoder, device=device) if valid else None
        if progress is not None:
            progress("embed", 1.0, "embeddings ready")
        return self.fit_prepared(
            bags,
            valid_bags,
            aggregation=aggregation,
            n_classes=n_classes,
            encoder_id=encoder.encoder_id,
            progress=progress,
        )

    def fit_prepared(
        self,
        bags: BagSet,
        valid: BagSet | None = None,
        *,
        aggregation: str,
        n_classes: int,
        encoder_id: str | None = None,
        progress: ProgressFn | None = None,
        ordered_holdout: bool = False,
    ) -> Self:
        """:meth:`fit` after embedding: without ``valid`` bags, a seeded ``valid_fraction`` of ``bags`` is held
        out for early stopping (training-free methods need none).

        ``ordered_holdout``: ``bags`` are already in :meth:`holdout_order` (training bags first, held-out bags
        last), so the split is two ranges of views and copies nothing: float16 (e.g. memory-mapped) embeddings
        stay where they are. Training is the same as on the bags in their own order.
        """
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if valid is None and registry.method(self.method).trained:
            train_ids, valid_ids = holdout_split(bags.n_bags, self._config().valid_fraction, self.seed)
            if valid_ids is not None and ordered_holdout:
                n_train = len(train_ids)
                bags, valid = bags.bag_range(0, n_train), bags.bag_range(n_train, bags.n_bags)
            elif valid_ids is not None:
                bags, valid = bags.select(train_ids), bags.select(valid_ids)
        return self.fit_bags(
            bags,
            valid,
            aggregation=aggregation,
            n_classes=n_classes,
            encoder_id=encoder_id,
            progress=progress,
        )

    def holdout_order(self, n_bags: int) -> np.ndarray:
        """The order (n_bags,) int64 of bag ids in which :meth:`fit_prepared` (``ordered_holdout=True``) finds
        the training bags it would select first and its held-out bags last; the identity when it holds out none."""
        if not registry.method(self.method).trained:
            return np.arange(n_bags, dtype=np.int64)
        train_ids, valid_ids = holdout_split(n_bags, self._config().valid_fraction, self.seed)
        if valid_ids is None:
            return np.arange(n_bags, dtype=np.int64)
        return torch.cat([train_ids, valid_ids]).numpy().astype(np.int64)

    def fit_bags(
        self,
        train: BagSet,
        valid: BagSet | None = None,
        *,
        aggregation: str,
        n_classes: int,
        encoder_id: str | None = None,
        progress: ProgressFn | None = None,
    ) -> Self:
        """Train on prepared bags (embeddings already computed): the fast path for sweeps over methods."""
        config = self._config()
        context = FitContext(train, valid, aggregation, n_classes, config, self.seed, progress)
        result = fit_method(self.method, context)
        self.resolved_method_ = result.method
        self.scorer_ = result.model
        self.calibration_ = result.calibration
        self.selection_ = result.selection
        self.candidates_ = result.candidates  # auto: every fitted candidate (for benchmarks; not saved)
        self.aggregation_ = aggregation
        self.n_classes_ = n_classes
        self.encoder_id_ = encoder_id
        self.history_ = result.history()
        if self.calibration_ is None:
            self.calibration_ = self._bag_calibration(valid if valid is not None and valid.n_bags else train)
        self.metrics_: dict[str, Any] = {}
        self.first_error_rule_ = FirstErrorChoice()
        if valid is not None and valid.n_bags:
            self.metrics_ = {f"valid_{k}": v for k, v in self.evaluate_bags(valid).items()}
            self.first_error_rule_ = self.choose_first_error_rule(valid)
        return self

    def choose_first_error_rule(self, bags: BagSet) -> FirstErrorChoice:
        """The F key's rule measured on ``bags``' gold first errors (``fitting.first_error``): the held-out
        bags at fit time, so the choice is made on responses the model did not train on."""
        labelled = bags.gold >= 0
        if not bool(labelled.any()):
            return FirstErrorChoice()
        return choose_first_error_rule(
            self.predict_bags(bags).double().cpu().numpy(),
            bags.gold.cpu().numpy(),
            bags.bag_index.cpu().numpy(),
            bags.labels.double().cpu().numpy(),
            aggregation=self.aggregation_,
        )

    def _bag_calibration(self, bags: BagSet) -> dict[str, Any] | None:
        """Platt scaling of a binary max/min scorer's logit to ``bags``' response labels (``TrainConfig.calibrate``).

        A hard-max bag loss ranks sentences but leaves p_i that do not multiply like probabilities; the scores
        given the response label and the first-error distribution multiply them. Two parameters fitted by the
        exact bag likelihood of held-out response labels (no sentence label); rankings are unchanged.
        """
        if (
            self.scorer_ is None
            or not self._config().calibrate
            or self.n_classes_ != 2
            or self.aggregation_ not in ("max", "min")
            or not bool(torch.isfinite(bags.labels).all())
        ):
            return None
        with torch.no_grad():
            logp = self.scorer_.to(bags.device)(bags)
        return fit_calibration(logp, bags, aggregation=self.aggregation_, n_classes=2, kind="logit").to_dict()

    def fit_preferences(
        self,
        records: Sequence[ResponseRecord],
        pairs: Sequence[tuple[int, int, float]],
        *,
        progress: ProgressFn | None = None,
    ) -> Self:
        """Learn sentence scores from preference pairs (PrefBagLoss) instead of response labels.

        ``pairs`` holds ``(i, j, p)``: responses ``records[i]`` and ``records[j]`` with p = 1 when j is the
        better one (higher score), 0 when i is, or a soft preference. ``response_label`` is not used. A seeded
        ``valid_fraction`` of the pairs is held out for early stopping.
        """
        if not pairs:
            raise ValueError("no preference pairs to train on")
        index = torch.as_tensor([[p[0], p[1]] for p in pairs], dtype=torch.long)
        prefs = torch.as_tensor([float(p[2]) for p in pairs], dtype=torch.float32)
        if int(index.min()) < 0 or int(index.max()) >= len(records):
            raise ValueError(f"a preference pair refers to a response outside 0..{len(records) - 1}")
        if bool(((prefs < 0) | (prefs > 1)).any()):
            raise ValueError("preferences must lie in [0, 1]")
        config = self._config()
        encoder = get_encoder(self.encoder)
        bags = embed_records(records, encoder, device=resolve_device(config.device))
        train_ids, valid_ids = holdout_split(len(pairs), config.valid_fraction, self.seed)

        def paired(ids: torch.Tensor) -> BagSet:
            return preference_bags(bags, index[ids, 0], index[ids, 1], prefs[ids])

        result = fit_preference(
            paired(train_ids),
            None if valid_ids is None else paired(valid_ids),
            config=config,
            seed=self.seed,
            progress=progress,
        )
        self.resolved_method_ = result.method
        self.scorer_ = result.model
        self.calibration_ = None
        self.selection_ = None
        self.aggregation_ = "mean"
        self.n_classes_ = 2
        self.encoder_id_ = encoder.encoder_id
        self.history_ = result.history()
        self.metrics_ = {}
        self.first_error_rule_ = FirstErrorChoice(reason="default rule: trained from preferences")
        return self

    # ----------------------------------------------------------------------------------------------- scoring
    def predict_proba_bags(self, bags: BagSet, *, chunk_bags: int = CHUNK_BAGS) -> torch.Tensor:
        """Sentence probabilities over the label levels (N, C) for prepared bags.

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

    def predict_bags(self, bags: BagSet) -> torch.Tensor:
        """Sentence scores P(label >= 1) (N,) for prepared bags."""
        proba = self.predict_proba_bags(bags)
        return 1 - proba[:, 0]

    def _embed(self, records: Sequence[ResponseRecord]) -> BagSet:
        return embed_records(records, get_encoder(self.encoder), device=resolve_device(self._config().device))

    def predict_proba(self, records: Sequence[ResponseRecord]) -> list[np.ndarray]:
        """Per response, the (n_sentences, C) probabilities over label levels."""
        proba = self.predict_proba_bags(self._embed(records)).cpu().numpy()
        return np.split(proba, np.cumsum([len(r.spans) for r in records])[:-1])

    def predict(self, records: Sequence[ResponseRecord], *, given_labels: bool = False) -> list[np.ndarray]:
        """Per response, the (n_sentences,) scores P(label >= 1) in [0, 1].

        ``given_labels=True`` conditions on each response's own label (fractal_core.mil.posterior): e.g. every
        sentence of a max response labelled 0 scores 0. The default is the model's marginal, which is what
        disagreement with the response label and active selection need.
        """
        if not given_labels:
            return [1 - p[:, 0] for p in self.predict_proba(records)]
        bags = self._embed(records)
        logp = self.predict_proba_bags(bags).clamp_min(1e-12).log()
        scores = (
            posterior_scores(logp, bags.bag_index, bags.labels, aggregation=self.aggregation_).cpu().numpy()
        )
        return np.split(scores, np.cumsum([len(r.spans) for r in records])[:-1])

    # ------------------------------------------------------------------------------------------- evaluation
    def evaluate_bags(self, bags: BagSet) -> dict[str, float]:
        """Sentence and bag metrics of this model on prepared bags with gold labels."""
        return evaluation_metrics(
            self.predict_proba_bags(bags), bags, aggregation=self.aggregation_, n_classes=self.n_classes_
        )

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
        }
        states = {}
        if self.scorer_ is not None:
            meta["dim"] = self.scorer_.dim
            meta["scorer"] = self.scorer_.spec()
            states["weights.pt"] = self.scorer_.state_dict()
        return save_model_dir(directory, meta_file="model.json", meta=meta, states=states, files=self.FILES)

    @classmethod
    def load(cls, directory: str | Path) -> FractalModel:
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
        model.scorer_ = None
        if "dim" in meta:
            spec = meta.get("scorer", {"kind": "mlp"})  # files written before the contextual scorer: the MLP
            scorer = build_scorer(spec, meta["dim"], n_classes=meta["n_classes"], hidden=config.hidden)
            scorer.load_state_dict(load_state(directory / "weights.pt"))
            model.scorer_ = scorer.eval()
        return model


__all__ = ["FractalModel", "evaluation_metrics", "resolve_device", "task_of"]
