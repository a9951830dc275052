"""``CriteriaModel``: one scorer for every criterion of a dataset (a shared trunk, one head per criterion).

    model = CriteriaModel("priors", seed=0).fit(train_records, valid=valid_records)  # records with `criteria`
    model.predict(records)                  # {criterion: per response (n_sentences,) P(label >= 1)}
    model.evaluate(test_records)            # {criterion: sentence and bag metrics}
    model.save("runs/c1"); CriteriaModel.load("runs/c1")

``__init__`` only stores arguments; learned state ends in ``_``. Every criterion is measured by the rule every
single-criterion model is (``scorer_metrics.evaluation_metrics``) on its own view of the records
(``data.criteria.criterion_records``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from fractal_core.data.criteria import criterion_names, criterion_records
from fractal_core.data.io import num_classes
from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import EncoderConfig, get_encoder, resolve_device
from fractal_core.embedding.features import embed_records, gold_array
from fractal_core.evaluation.scorer_metrics import evaluation_metrics
from fractal_core.fitting.bags import CHUNK_BAGS, BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.criteria_fit import CRITERIA_METHODS, criterion_bags, fit_criteria
from fractal_core.fitting.estimator import FractalModel, holdout_split
from fractal_core.fitting.first_error import FirstErrorChoice, default_rule
from fractal_core.fitting.heads import Criterion, MultiHeadScorer
from fractal_core.fitting.persistence import load_meta, load_state, save_model_dir
from fractal_core.fitting.step_calibration import StepCalibration
from fractal_core.fitting.train import ProgressFn

FORMAT_VERSION = 1
META_FILE = "criteria.json"
"""The description a saved multi-criterion model directory holds (a single-criterion one holds model.json)."""
JOINT_NOTE = "one joint fit of several criteria"


def criteria_of(records: Sequence[ResponseRecord]) -> tuple[Criterion, ...]:
    """Each declared criterion's task, read from the records (levels as ``io.num_classes`` reads them)."""
    names = criterion_names(records)
    if not names:
        raise ValueError("the responses declare no criteria (give each a `criteria` object)")
    out = []
    for name in names:
        view = criterion_records(records, name)
        out.append(Criterion(name, view[0].aggregation, num_classes(view)))
    return tuple(out)


def criteria_bags(bags: BagSet, records: Sequence[ResponseRecord], names: Sequence[str]) -> BagSet:
    """``bags`` (embedded from ``records``) with every criterion's labels (B, k) and gold (N, k)."""
    views = [criterion_records(records, name) for name in names]
    labels = torch.tensor([[float(v[i].response_label) for v in views] for i in range(len(records))])
    gold = torch.as_tensor(np.stack([gold_array(v) for v in views], axis=1))
    return replace(bags, labels=labels.to(bags.device), gold=gold.to(bags.device))


class CriteriaModel:
    """Learns sentence scores for several criteria at once with one method of the suite."""

    criteria_: tuple[Criterion, ...]
    scorer_: MultiHeadScorer
    encoder_id_: str | None
    history_: list[dict[str, Any]]
    metrics_: dict[str, dict[str, float]]

    FILES: tuple[str, ...] = (META_FILE, "weights.pt")
    """What :meth:`save` writes into its directory."""

    def __init__(
        self,
        method: str = "priors",
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

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.criteria_]

    # ----------------------------------------------------------------------------------------------- fitting
    def embed(self, records: Sequence[ResponseRecord]) -> BagSet:
        """The records' bags with every criterion's labels and gold (same criteria as the model's when fitted)."""
        names = criterion_names(records)
        bags = embed_records(records, get_encoder(self.encoder), device=resolve_device(self._config().device))
        return criteria_bags(bags, records, names)

    def fit(
        self,
        records: Sequence[ResponseRecord],
        *,
        valid: Sequence[ResponseRecord] | None = None,
        progress: ProgressFn | None = None,
    ) -> Self:
        """Embed and train on ``records``; early-stop on ``valid`` (or a held-out share of ``records``)."""
        if self.method not in CRITERIA_METHODS:
            raise ValueError(
                f"several criteria train with {', '.join(CRITERIA_METHODS)}, not {self.method!r}"
            )
        criteria = criteria_of(records)
        if valid:
            both = criteria_of([*records, *valid])
            if [c.name for c in both] != [c.name for c in criteria]:
                raise ValueError("the validation responses declare other criteria than the training ones")
            criteria = both
        train_bags = self.embed(records)
        valid_bags = self.embed(valid) if valid else None
        encoder_id = get_encoder(self.encoder).encoder_id
        return self.fit_bags(
            train_bags, valid_bags, criteria=criteria, encoder_id=encoder_id, progress=progress
        )

    def fit_bags(
        self,
        train: BagSet,
        valid: BagSet | None = None,
        *,
        criteria: tuple[Criterion, ...],
        encoder_id: str | None = None,
        progress: ProgressFn | None = None,
    ) -> Self:
        """Train on prepared bags (labels (B, k), gold (N, k)); without ``valid``, a seeded
        ``valid_fraction`` of ``train`` is held out for early stopping."""
        config = self._config()
        if valid is None:
            train_ids, valid_ids = holdout_split(train.n_bags, config.valid_fraction, self.seed)
            if valid_ids is not None:
                train, valid = train.select(train_ids), train.select(valid_ids)
        scorer, stages = fit_criteria(
            train, valid, criteria, method=self.method, config=config, seed=self.seed, progress=progress
        )
        self.criteria_ = criteria
        self.scorer_ = scorer.eval()
        self.encoder_id_ = encoder_id
        self.history_ = [s.__dict__ for s in stages]
        self.metrics_ = {}
        if valid is not None and valid.n_bags:
            self.metrics_ = {
                name: {f"valid_{k}": v for k, v in metrics.items()}
                for name, metrics in self.evaluate_bags(valid).items()
            }
        return self

    # ----------------------------------------------------------------------------------------------- scoring
    def predict_proba_bags(self, bags: BagSet, *, chunk_bags: int = CHUNK_BAGS) -> list[torch.Tensor]:
        """Per criterion (in model order), the sentence probabilities over its levels (N, C)."""
        scorer = self.scorer_.to(bags.device)
        with torch.inference_mode():
            if bags.n_bags <= chunk_bags and bags.full_precision:
                z = scorer(bags)
            else:
                z = bags.per_sentence(scorer, chunk_bags)
            return [logp.exp() for logp in scorer.head_logp(z)]

    def predict(
        self, records: Sequence[ResponseRecord], *, criterion: str | None = None
    ) -> dict[str, list[np.ndarray]]:
        """``{criterion: per response, (n_sentences,) P(label >= 1)}`` for every criterion or only
        ``criterion``. The records need no labels of any criterion (plain responses score too)."""
        if criterion is not None and criterion not in self.names:
            raise ValueError(f"no criterion {criterion!r}; this model scores {', '.join(self.names)}")
        bags = embed_records(records, get_encoder(self.encoder), device=resolve_device(self._config().device))
        splits = np.cumsum([len(r.spans) for r in records])[:-1]
        out = {}
        for name, proba in zip(self.names, self.predict_proba_bags(bags), strict=True):
            if criterion is None or name == criterion:
                out[name] = np.split((1 - proba[:, 0]).cpu().numpy(), splits)
        return out

    def criterion_model(self, name: str) -> FractalModel:
        """Criterion ``name``'s part of this model as a single-criterion ``FractalModel`` (the shared trunk and
        its own head, ``MultiHeadScorer.head_scorer``): it scores that criterion exactly as this model does and
        saves, loads, re-scores and evaluates as any ``FractalModel``. What a joint fit does not choose is left
        at the neutral setting and says so: no bag calibration, the identity step calibration (the given-label
        view reads the raw scores) and the method's default first-error rule (not chosen on valid)."""
        if name not in self.names:
            raise ValueError(f"no criterion {name!r}; this model scores {', '.join(self.names)}")
        j = self.names.index(name)
        criterion = self.criteria_[j]
        model = FractalModel(self.method, config=self.config, encoder=self.encoder, seed=self.seed)
        model.resolved_method_ = self.method
        model.scorer_ = self.scorer_.head_scorer(j)
        model.calibration_ = None
        model.selection_ = None
        model.aggregation_ = criterion.aggregation
        model.n_classes_ = criterion.n_classes
        model.encoder_id_ = self.encoder_id_
        model.metrics_ = dict(self.metrics_.get(name, {}))
        model.history_ = list(self.history_)
        model.first_error_rule_ = FirstErrorChoice(
            rule=default_rule(self.method), reason=f"default rule: {JOINT_NOTE}, none is chosen on valid"
        )
        model.step_calibration_ = StepCalibration(reason=f"identity: {JOINT_NOTE}, none is fitted")
        return model

    # ------------------------------------------------------------------------------------------- evaluation
    def evaluate_bags(self, bags: BagSet) -> dict[str, dict[str, float]]:
        """Per criterion, its sentence and bag metrics on prepared multi-criterion bags (labels (B, k))."""
        out = {}
        for j, (c, proba) in enumerate(zip(self.criteria_, self.predict_proba_bags(bags), strict=True)):
            out[c.name] = evaluation_metrics(
                proba, criterion_bags(bags, j), aggregation=c.aggregation, n_classes=c.n_classes
            )
        return out

    def evaluate(self, records: Sequence[ResponseRecord]) -> dict[str, dict[str, float]]:
        """Per criterion, metrics on records that declare the model's criteria (gold sentence labels in them)."""
        if criterion_names(records) != self.names:
            raise ValueError(
                f"the responses declare {', '.join(criterion_names(records)) or 'no criteria'}; "
                f"this model scores {', '.join(self.names)}"
            )
        return self.evaluate_bags(self.embed(records))

    # ---------------------------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``criteria.json`` (method, config, criteria, encoder id, metrics) and ``weights.pt``."""
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "seed": self.seed,
            "config": self._config().to_dict(),
            "encoder": None if self.encoder is None else self.encoder.__dict__,
            "encoder_id": self.encoder_id_,
            "criteria": [c.__dict__ for c in self.criteria_],
            "dim": self.scorer_.dim,
            "scorer": self.scorer_.spec(),
            "metrics": self.metrics_,
            "history": self.history_,
        }
        return save_model_dir(
            directory,
            meta_file=META_FILE,
            meta=meta,
            states={"weights.pt": self.scorer_.state_dict()},
            files=self.FILES,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild a saved model; refuses files from a newer format."""
        directory = Path(directory)
        meta = load_meta(directory, META_FILE, format_version=FORMAT_VERSION)
        config = TrainConfig.from_dict(meta["config"])
        encoder = EncoderConfig(**meta["encoder"]) if meta.get("encoder") else None
        model = cls(meta["method"], config=config, encoder=encoder, seed=meta["seed"])
        model.criteria_ = tuple(Criterion(**c) for c in meta["criteria"])
        scorer = MultiHeadScorer(meta["scorer"], meta["dim"], model.criteria_, hidden=config.hidden)
        scorer.load_state_dict(load_state(directory / "weights.pt"))
        model.scorer_ = scorer.eval()
        model.encoder_id_ = meta.get("encoder_id")
        model.metrics_ = meta.get("metrics", {})
        model.history_ = meta.get("history", [])
        return model


__all__ = ["JOINT_NOTE", "META_FILE", "CriteriaModel", "criteria_bags", "criteria_of"]
