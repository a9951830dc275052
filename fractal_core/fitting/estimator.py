"""``FractalModel``: the scikit-learn-style facade that the CLI, the store's worker and the app all call.

    model = FractalModel("fractal", seed=0).fit(train_records, valid=valid_records)
    scores = model.predict(new_records)          # list of (n_sentences,) arrays of P(label >= 1)
    model.save("runs/v3"); FractalModel.load("runs/v3")

``__init__`` only stores arguments; learned state ends in ``_``. Sentence labels present on training records
are the gold labels: the hybrid prior and the supervised ceiling use them, the other methods ignore them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch

from fractal_core.data.io import num_classes
from fractal_core.data.records import ResponseRecord
from fractal_core.embedding.encoder import get_encoder, resolve_device
from fractal_core.embedding.features import embed_records
from fractal_core.evaluation.scorer_metrics import evaluation_metrics
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import fit_calibration
from fractal_core.fitting.config import DEFAULT_RESPONSE_LABELS, response_labels_mode
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.first_error import FirstErrorChoice, choose_first_error_rule, default_rule
from fractal_core.fitting.fit import fit_method
from fractal_core.fitting.fitted_model import FittedModel
from fractal_core.fitting.methods import METHODS
from fractal_core.fitting.preference import fit_preference, preference_bags
from fractal_core.fitting.step_calibration import StepCalibration, choose_given_label, fit_step_calibration
from fractal_core.fitting.train import ProgressFn


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


class FractalModel(FittedModel):
    """Learns sentence scores from response labels with one method of the FRACTAL suite (scoring, evaluation
    and persistence: :class:`~fractal_core.fitting.fitted_model.FittedModel`)."""

    trained_from_: dict[str, int]  # a fit on preference pairs: {"pairs", "labelled_responses"} (not saved)

    # ----------------------------------------------------------------------------------------------- fitting
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
        return self._fit_readouts(train, valid)

    def _fit_readouts(self, train: BagSet, valid: BagSet | None) -> Self:
        """What a fitted scorer is read through, fitted on labelled bags: the bag calibration (when none came with
        the fit), and on held-out ``valid`` the step calibration, the validation metrics and the F key's rule."""
        if self.calibration_ is None:
            self.calibration_ = self._bag_calibration(valid if valid is not None and valid.n_bags else train)
        self.metrics_ = {}
        self.first_error_rule_ = FirstErrorChoice(rule=default_rule(self.resolved_method_))
        self.step_calibration_ = StepCalibration(reason="identity: no held-out responses")
        if valid is not None and valid.n_bags:
            self.step_calibration_ = self.fit_step_calibration(valid)
            self.metrics_ = {f"valid_{k}": v for k, v in self.evaluate_bags(valid).items()}
            self.first_error_rule_ = self.choose_first_error_rule(valid)
        return self

    def fit_step_calibration(self, bags: BagSet) -> StepCalibration:
        """The step calibration fitted on held-out ``bags`` and whether the given-label view uses it, chosen on
        their gold (``fitting.step_calibration``); the identity for methods without a trained scorer."""
        if self.scorer_ is None:
            return StepCalibration(reason="identity: no trained scorer")
        proba = self.predict_proba_bags(bags)
        min_gold = self._config().min_gold_for_valid
        fitted = fit_step_calibration(
            proba.clamp_min(1e-12).log(),
            bags,
            aggregation=self.aggregation_,
            n_classes=self.n_classes_,
            min_gold=min_gold,
        )
        return choose_given_label(fitted, proba, bags, aggregation=self.aggregation_, min_gold=min_gold)

    def choose_first_error_rule(self, bags: BagSet) -> FirstErrorChoice:
        """The F key's rule measured on ``bags``' gold first errors (``fitting.first_error``): the held-out
        bags at fit time, so the choice is made on responses the model did not train on. ``calibrated_mode``
        uses the model's step calibration (fitted on these gold steps, or on their response labels)."""
        labelled = bags.gold >= 0
        default = default_rule(getattr(self, "resolved_method_", None))
        if not bool(labelled.any()):
            return FirstErrorChoice(rule=default)
        step = getattr(self, "step_calibration_", None)
        return choose_first_error_rule(
            self.predict_bags(bags).double().cpu().numpy(),
            bags.gold.cpu().numpy(),
            bags.bag_index.cpu().numpy(),
            bags.labels.double().cpu().numpy(),
            aggregation=self.aggregation_,
            default=default,
            # None: fitted here on these gold steps, the same fit as the step calibration's (measured cross-fitted)
            calibration=None
            if step is None or (step.fitted_on == "gold_steps" and not step.identity)
            else step.map,
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
        aggregation: str | None = None,
        response_labels: str = DEFAULT_RESPONSE_LABELS,
        progress: ProgressFn | None = None,
    ) -> Self:
        """Learn sentence scores from preference pairs (PrefBagLoss), alone or beside the responses' own labels.

        ``pairs`` holds ``(i, j, p)``: responses ``records[i]`` and ``records[j]`` with p = 1 when j is the
        better one (higher score), 0 when i is, or a soft preference. ``response_labels``: ``"beside"`` also
        trains the suite's BagLoss on the responses that carry a label of their own (NaN: none), under
        ``aggregation`` (``fitting.preference``; None: the records' own, which must be one); ``"alone"`` ignores
        them. ``aggregation`` is also what the labels mean for the given-label view and the response figures. A seeded ``valid_fraction`` of the pairs
        (and of the labelled responses) is held out for early stopping (:meth:`fit_preference_bags`).
        """
        if not pairs:
            raise ValueError("no preference pairs to train on")
        response_labels_mode(response_labels)  # InputError (a ValueError) naming the setting
        index = torch.as_tensor([[p[0], p[1]] for p in pairs], dtype=torch.long)
        prefs = torch.as_tensor([float(p[2]) for p in pairs], dtype=torch.float32)
        if int(index.min()) < 0 or int(index.max()) >= len(records):
            raise ValueError(f"a preference pair refers to a response outside 0..{len(records) - 1}")
        if bool(((prefs < 0) | (prefs > 1)).any()):
            raise ValueError("preferences must lie in [0, 1]")
        if aggregation is None:
            aggregation, _ = task_of(records)
        labelled = [r for r in records if r.response_label == r.response_label]
        n_classes = 2
        if response_labels == "beside" and labelled:
            own, n_classes = task_of(labelled)
            if own != aggregation:
                raise ValueError(f"the responses' own labels are {own} labels, not {aggregation}")
        encoder = get_encoder(self.encoder)
        bags = embed_records(records, encoder, device=resolve_device(self._config().device))
        return self.fit_preference_bags(
            bags,
            index,
            prefs,
            aggregation=aggregation,
            n_classes=n_classes,
            response_labels=response_labels,
            encoder_id=encoder.encoder_id,
            progress=progress,
        )

    def fit_preference_bags(
        self,
        bags: BagSet,
        index: torch.Tensor,
        prefs: torch.Tensor,
        *,
        valid: tuple[BagSet, torch.Tensor, torch.Tensor] | None = None,
        aggregation: str,
        n_classes: int = 2,
        response_labels: str = DEFAULT_RESPONSE_LABELS,
        encoder_id: str | None = None,
        progress: ProgressFn | None = None,
    ) -> Self:
        """:meth:`fit_preferences` after embedding: ``index`` (K, 2) bag ids of each pair, ``prefs`` (K,)
        P(the second is the better one). ``valid``: held-out (bags, index, prefs) for early stopping and the
        read-outs; without it a seeded ``valid_fraction`` of the pairs and of the labelled responses is held out.

        With response labels beside the pairs, the scorer is read as :meth:`fit` reads one, from the labelled
        responses (held-out ones when there are some): the bag calibration, the step calibration, the F key's
        rule and the validation metrics. Pairs alone give none of these (no label to fit them on).
        """
        response_labels_mode(response_labels)
        config = self._config()
        fraction = config.valid_fraction
        valid_bags: BagSet | None = None
        if valid is None:
            train_ids, valid_ids = holdout_split(len(index), fraction, self.seed)
            train_pairs = preference_bags(bags, index[train_ids, 0], index[train_ids, 1], prefs[train_ids])
            valid_pairs = (
                None
                if valid_ids is None
                else preference_bags(bags, index[valid_ids, 0], index[valid_ids, 1], prefs[valid_ids])
            )
        else:
            valid_bags, valid_index, valid_prefs = valid
            train_pairs = preference_bags(bags, index[:, 0], index[:, 1], prefs)
            valid_pairs = preference_bags(valid_bags, valid_index[:, 0], valid_index[:, 1], valid_prefs)
        labelled = labelled_valid = None
        if response_labels == "beside":
            known = torch.isfinite(bags.labels).nonzero().flatten()
            if valid_bags is not None and len(known):
                labelled = bags.select(known)
                held = torch.isfinite(valid_bags.labels).nonzero().flatten()
                labelled_valid = valid_bags.select(held) if len(held) else None
            elif len(known):
                train_ids, valid_ids = holdout_split(len(known), fraction, self.seed)
                labelled = bags.select(known[train_ids])
                labelled_valid = None if valid_ids is None else bags.select(known[valid_ids])
        result = fit_preference(
            train_pairs,
            valid_pairs,
            config=config,
            seed=self.seed,
            progress=progress,
            labelled=labelled,
            labelled_valid=labelled_valid,
            aggregation=aggregation,
            n_classes=n_classes if labelled is not None else 2,
        )
        self.resolved_method_ = result.method
        self.scorer_ = result.model
        self.calibration_ = None
        self.selection_ = None
        self.aggregation_ = aggregation
        self.n_classes_ = n_classes if labelled is not None else 2
        self.encoder_id_ = encoder_id
        self.history_ = result.history()
        n_labelled = sum(0 if b is None else b.n_bags for b in (labelled, labelled_valid))
        # What the fit learned from (the train job's version metrics; not saved with the model).
        self.trained_from_ = {"pairs": len(index), "labelled_responses": n_labelled}
        if labelled is not None:
            return self._fit_readouts(labelled, labelled_valid)
        self.metrics_ = {}
        self.first_error_rule_ = FirstErrorChoice(reason="default rule: trained from preferences")
        self.step_calibration_ = StepCalibration(reason="identity: trained from preferences")
        return self


__all__ = [
    "FractalModel",
    "evaluation_metrics",
    "resolve_device",
    "task_of",
]
