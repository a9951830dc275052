"""Method choice that never hurts (``auto``, what ``fractal`` means): pick a pipeline per dataset by what the user has.

No single setting of the suite wins everywhere: on some data the cosine prior alone beats every learned
pipeline given the response label, on others BagLoss without priors is best, and the priors or PsLab lower
quality elsewhere. ``auto`` fits a small set of candidates on the same embeddings and keeps the one with the
best held-out figure:

- candidates (the plan's, ``registry.resolve``): ``prior_only`` (the cosine target, calibrated to the response
  labels: a logistic map fitted by the exact bag likelihood of the training labels; the ``prior_only`` baseline
  method is the raw target), ``bagloss``, ``priors`` at each cosine weight of ``registry.AUTO_PRIOR_WEIGHTS``
  (warm-started from the BagLoss scorer, early-stopped with ``registry.AUTO_WARM_PATIENCE``) and, when the
  training bags carry gold sentence labels, ``hybrid`` (and ``hazard`` when that gold follows the first-error
  protocol of step data, read from the data: ``registry.resolve(first_error=...)``). PsLab is not a candidate:
  on the validation splits the rule below never chose it, and it cost one more training stage. With
  ``registry.AUTO_BLEND`` (off by default), also ``blend``: the BagLoss scorer's logit and the response-centred
  cosine prior's logit mixed by a 3-parameter map fitted on the judged bags' labels
  (``calibration.Calibration``, ``kind="blend"``; no training). It is off because on the valid splits of every
  view built from the shared data the likelihood preferred it where it ranked sentences worse given the label
  than BagLoss.
- without gold: the exact log-likelihood of the validation responses' labels (noisy-OR / product / exact ordinal
  max, the Poisson-binomial count for proportions), from each candidate's scores, and the one-standard-error
  rule (:func:`choose`): the candidates differ by a few thousandths of a nat per response on a few hundred
  responses, i.e. by noise, so among those whose mean log-likelihood lies within ``registry.AUTO_SE_MULTIPLE``
  paired standard errors of the best, the simplest (``registry.AUTO_SIMPLICITY``) is kept.
- with gold (enough labelled sentences of both classes): the AUC given the response label of the gold sentences
  in held-out gold responses. The gold responses are cut into two folds; ``hybrid`` is trained with one fold's
  gold and scored on the other (cross-fitting), then refitted on all the gold when it wins. The no-gold
  candidates never see gold labels, so every gold response is held out for them. The same one-standard-error
  rule picks, with its own default (``registry.AUTO_GOLD_DEFAULT``): hybrid, the one candidate that learns
  from the gold, is kept unless another beats its gold AUC by more than ``registry.AUTO_SE_MULTIPLE_GOLD``
  paired standard errors (then the best is kept); the standard errors come from a seeded bootstrap over the gold responses, every candidate scored
  on the same draws (``auto_choice.gold_replicates``). The plain best AUC flipped between candidates across
  seeds on the same data and landed below plain hybrid (BENCHMARKS.md).

Either way the record says whether the evidence for the choice was weak (``auto_choice.weak_evidence``:
another candidate within the band, or too few gold responses or sentences of one class), and why.

The result records the choice, the criterion and every candidate's figures (``auto_choice.Selection``). This
module sits above the single-method fit (``fractal_core.fitting.methods``), which knows nothing of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting import registry
from fractal_core.fitting.auto_choice import (
    GoldScores,
    Selection,
    bag_log_likelihoods,
    choose,
    enough_gold,
    gold_replicates,
    gold_scores,
    hide_gold,
    mean_bag_log_likelihood,
    pooled,
    rule_text,
    weak_evidence,
)
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import Calibrated, Calibration, fit_calibration, fit_prior_calibration
from fractal_core.fitting.context import CandidateFit, FitContext, FitResult
from fractal_core.fitting.methods import fit_pipeline
from fractal_core.fitting.model import SentenceScorer
from fractal_core.fitting.train import ProgressFn, StageResult


def _prefixed(progress: ProgressFn | None, candidate: str) -> ProgressFn | None:
    """A progress callback that reports a candidate's stages under their ``registry.auto_stage`` names."""
    if progress is None:
        return None
    report = progress

    def tell(stage: str, fraction: float, message: str) -> None:
        report(registry.auto_stage(candidate, stage), fraction, message)

    return tell


@dataclass
class _Fitted:
    """A judged candidate: its registry method, what scores bags (the calibrated prior or the scorer)."""

    method: str
    candidate: Calibration | Calibrated | SentenceScorer
    judged: np.ndarray
    gold: GoldScores | None = None


def _scorer_of(candidate: Calibration | Calibrated | SentenceScorer) -> SentenceScorer | None:
    if isinstance(candidate, Calibration):
        return None
    scorer = candidate.scorer if isinstance(candidate, Calibrated) else candidate
    assert isinstance(scorer, SentenceScorer)
    return scorer


def _calibration_of(candidate: Calibration | Calibrated | SentenceScorer) -> dict[str, Any] | None:
    if isinstance(candidate, Calibration):
        return candidate.to_dict()
    return candidate.calibration.to_dict() if isinstance(candidate, Calibrated) else None


def _gold_folds(context: FitContext) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """(gold bag mask (B,), the seeded cross-fitting folds of the gold bag ids, every gold bag id)."""
    train = context.train
    mask = torch.zeros(train.n_bags, dtype=torch.bool, device=train.device)
    mask[train.bag_index[train.gold >= 0]] = True
    ids = torch.nonzero(mask).flatten()
    order = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(context.seed + 31))]
    k = registry.AUTO_CROSS_FIT_FOLDS
    return mask, [order[f::k].sort().values for f in range(k)], ids


def _judge_by_gold(context: FitContext, folds: list[torch.Tensor]) -> bool:
    """Judge by gold only when there is enough of it, with both classes in every fold; else by likelihood."""
    train, config = context.train, context.config
    if not enough_gold((train.gold[train.gold >= 0] >= 1).cpu().numpy(), config):
        return False
    for fold in folds:
        held = train.select(fold)
        if not enough_gold(
            (held.gold[held.gold >= 0] >= 1).cpu().numpy(), replace(config, min_gold_for_valid=2)
        ):
            return False
    return True


def fit_auto(plan: registry.MethodPlan, context: FitContext) -> FitResult:
    """Fit the plan's candidates, choose one (module docstring) and return its result with ``selection`` set.

    The result's ``stages`` are every stage that ran (``plan.stages``), named per candidate.
    """
    started = time.perf_counter()
    train, aggregation, n_classes = context.train, context.aggregation, context.n_classes
    gold_bag_mask, folds, gold_ids = _gold_folds(context)
    use_gold = bool(len(gold_ids)) and _judge_by_gold(context, folds)
    held_out = train.select(gold_ids) if use_gold else None
    weak = hide_gold(train)
    valid = context.valid
    judge = valid if valid is not None and valid.n_bags else weak
    if use_gold:
        criterion = f"gold_auc_given_y ({registry.AUTO_CROSS_FIT_FOLDS}-fold cross-fit over {len(gold_ids)} gold responses)"
    else:
        criterion = "valid_bag_log_likelihood" if judge is valid else "train_bag_log_likelihood"

    stages: list[StageResult] = []
    records: list[dict[str, Any]] = []
    fitted: dict[str, _Fitted] = {}

    def fit(
        candidate: registry.Candidate, data: BagSet, init: SentenceScorer | None = None
    ) -> SentenceScorer:
        part = context.but(
            train=data, config=candidate.plan.config, progress=_prefixed(context.progress, candidate.name)
        )
        result = fit_pipeline(candidate.plan, part, init=init)
        stages.extend(
            replace(st, stage=registry.auto_stage(candidate.name, st.stage)) for st in result.stages
        )
        assert result.model is not None
        return result.model

    def _platt(scorer: SentenceScorer) -> Calibrated:
        """Platt scaling of a trained scorer on the judged bags (2 parameters, exact bag likelihood)."""
        with torch.no_grad():
            logp = scorer(judge)
        return Calibrated(
            scorer, fit_calibration(logp, judge, aggregation=aggregation, n_classes=n_classes, kind="logit")
        )

    def record(
        candidate: registry.Candidate,
        judged_by: Calibration | Calibrated | SentenceScorer,
        seconds: float,
        cross_fit: GoldScores | None = None,
    ) -> None:
        method = candidate.plan.pipeline
        row: dict[str, Any] = {"name": candidate.name, "method": "blend" if candidate.blend else method}
        if candidate.cosine is not None:
            row["cosine"] = candidate.cosine
        scored: Calibration | Calibrated
        if isinstance(
            judged_by, Calibration | Calibrated
        ):  # the prior, or the blend: fitted to labels already
            scored = judged_by
            if isinstance(judged_by, Calibrated):
                row["calibration"] = judged_by.calibration.to_dict()
        else:
            # The likelihood is judged after a 2-parameter logistic map of the scorer's logit, fitted on the
            # judged bags, so that a scorer trained with a hard max (sharp but well ranked) is not penalised
            # for its calibration; the scorer itself ships unchanged (on the valid splits Platt-scaled scores
            # ranked worse given the label: DelucionQA 0.867 -> 0.841, BENCHMARKS.md).
            row["bag_log_likelihood_raw"] = mean_bag_log_likelihood(judged_by, judge, aggregation)
            t0 = time.perf_counter()
            scored = _platt(judged_by)
            row["calibration"] = scored.calibration.to_dict()
            seconds += time.perf_counter() - t0
        row["seconds"] = round(seconds, 3)
        judged = bag_log_likelihoods(scored, judge, aggregation)
        row["bag_log_likelihood"] = float(judged.mean())
        gold = None
        if held_out is not None:
            gold = (
                cross_fit
                if cross_fit is not None
                else gold_scores(judged_by, held_out, aggregation, gold_ids)
            )
            row["gold_auc_given_y"] = auc_roc(gold.gold, gold.given)
            row["gold_auc"] = auc_roc(gold.gold, gold.marginal)
        row["score"] = row["gold_auc_given_y"] if held_out is not None else row["bag_log_likelihood"]
        records.append(row)
        fitted[candidate.name] = _Fitted(method, judged_by, judged, gold)

    base: SentenceScorer | None = None
    cross_fit: dict[str, list[GoldScores]] = {}  # pipeline -> its fold candidates' held-out gold scores
    gold_started: dict[str, float] = {}  # pipeline -> when its first fold candidate started
    for candidate in plan.candidates:
        t0 = time.perf_counter()
        pipeline = candidate.plan.pipeline
        if candidate.blend:  # BagLoss's scorer and the cosine prior mixed by a map fitted on the judged bags
            assert base is not None, "the blend follows the BagLoss candidate"
            with torch.no_grad():
                logp = base(judge)
            mix = fit_calibration(logp, judge, aggregation=aggregation, n_classes=n_classes, kind="blend")
            record(candidate, Calibrated(base, mix), time.perf_counter() - t0)
        elif not candidate.plan.trained:  # the calibrated cosine prior: no scorer, a few parameters
            calibration = fit_prior_calibration(weak, aggregation=aggregation, n_classes=n_classes)
            record(candidate, calibration, time.perf_counter() - t0)
        elif (
            candidate.fold is not None
        ):  # hybrid / hazard on a fold's complement of the gold, scored on the fold
            gold_started.setdefault(pipeline, t0)
            keep = gold_bag_mask.clone()
            keep[folds[candidate.fold]] = False
            if not bool(keep.any()):
                continue  # a single gold response: this fold's complement has no gold to train on
            part = fit(candidate, hide_gold(train, keep))
            if held_out is not None:
                fold = folds[candidate.fold]
                cross_fit.setdefault(pipeline, []).append(
                    gold_scores(part, train.select(fold), aggregation, fold)
                )
        elif candidate.refit:  # on all the gold, judged by its cross-fitted scores
            gold_started.setdefault(pipeline, t0)
            full = fit(candidate, train)
            both = pooled(cross_fit[pipeline]) if cross_fit.get(pipeline) else None
            record(candidate, full, time.perf_counter() - gold_started[pipeline], cross_fit=both)
        else:  # BagLoss, then BagLoss + cosine prior warm-started from it (the prior only moves a fitted scorer)
            init = base if candidate.warm_start else None
            model = fit(candidate, weak, init=init)
            base = base or model
            record(candidate, model, time.perf_counter() - t0)

    judged = [fitted[r["name"]] for r in records]
    if held_out is not None:
        golds = [f.gold for f in judged if f.gold is not None]
        replicates = gold_replicates(golds, context.seed)
        best = records[
            choose(
                records,
                replicates=replicates,
                se_multiple=registry.AUTO_SE_MULTIPLE_GOLD,
                default=registry.AUTO_GOLD_DEFAULT,
            )
        ]
        thin, why = weak_evidence(records, golds[0])
    else:
        best = records[choose(records, np.stack([f.judged for f in judged]))]
        thin, why = weak_evidence(records)
    chosen = fitted[best["name"]]
    selection = Selection(
        chosen=best["name"],
        method=chosen.method,
        criterion=criterion,
        candidates=records,
        seconds=round(time.perf_counter() - started, 3),
        rule=rule_text(held_out is not None),
        weak_evidence=thin,
        weak_reason=why,
    )
    if isinstance(chosen.candidate, Calibration):
        out = FitResult(
            method="prior_only", model=None, stages=stages, calibration=chosen.candidate.to_dict()
        )
    elif isinstance(chosen.candidate, Calibrated):  # the blend: BagLoss's scorer read through the fitted mix
        blended = _scorer_of(chosen.candidate)
        out = FitResult(
            method=chosen.method,
            model=blended,
            stages=stages,
            calibration=chosen.candidate.calibration.to_dict(),
        )
    else:
        out = FitResult(method=chosen.method, model=chosen.candidate, stages=stages)
    out.selection = selection.to_dict()
    out.candidates = [
        CandidateFit(
            name=r["name"],
            method=f.method,
            scorer=_scorer_of(f.candidate),
            calibration=_calibration_of(f.candidate),
            judged=f.judged,
        )
        for r in records
        for f in [fitted[r["name"]]]
    ]
    return out


__all__ = ["fit_auto"]
