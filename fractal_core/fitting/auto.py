"""Method choice that never hurts (``auto``, what ``fractal`` means): pick a pipeline per dataset by what the user has.

No single setting of the suite wins everywhere: on some data the cosine prior alone beats every learned
pipeline given the response label, on others BagLoss without priors is best, and the priors or PsLab lower
quality elsewhere. ``auto`` fits a small set of candidates on the same embeddings and keeps the one with the
best held-out figure:

- candidates: ``prior_only`` (the cosine target, calibrated to the response labels: a logistic map fitted by the
  exact bag likelihood of the training labels; the ``prior_only`` baseline method is the raw target),
  ``bagloss``, ``priors`` at each cosine weight of ``registry.AUTO_PRIOR_WEIGHTS`` (warm-started from the BagLoss
  scorer, early-stopped with ``registry.AUTO_WARM_PATIENCE``) and, when the training bags carry gold sentence labels, ``hybrid``. PsLab is not a candidate: on the
  validation splits the rule below never chose it, and it cost one more training stage.
- without gold: the exact log-likelihood of the validation responses' labels (noisy-OR / product / exact ordinal
  max, the Poisson-binomial count for proportions), from each candidate's scores, and the one-standard-error
  rule (:func:`choose`): the candidates differ by a few thousandths of a nat per response on a few hundred
  responses, i.e. by noise, so among those whose mean log-likelihood lies within ``registry.AUTO_SE_MULTIPLE``
  paired standard errors of the best, the simplest (``registry.AUTO_SIMPLICITY``) is kept.
- with gold (enough labelled sentences of both classes): the AUC given the response label of the gold sentences
  in held-out gold responses. The gold responses are cut into two folds; ``hybrid`` is trained with one fold's
  gold and scored on the other (cross-fitting), then refitted on all the gold when it wins. The no-gold
  candidates never see gold labels, so every gold response is held out for them.

The result records the choice, the criterion and every candidate's figures (:class:`Selection`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting import registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.train import ProgressFn, StageResult
from fractal_core.mil.aggregate import log_positive
from fractal_core.mil.losses import bag_log_likelihood
from fractal_core.mil.posterior import posterior_scores

_CALIBRATION_RIDGE = 1e-3
_CALIBRATION_STEPS = 40  # L-BFGS iterations (3 to C + 1 parameters)


@dataclass
class Selection:
    """What ``auto`` chose and the figures behind it (stored with the model)."""

    chosen: str
    method: str
    criterion: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a figure that could not be computed, e.g. an AUC on one class, is None, not NaN)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return clean(asdict(self))


# ---------------------------------------------------------------------------------------------- calibration
class Calibration(nn.Module):
    """A logistic map of a score: P(level >= 1) = sigmoid(a z + b) with z the score's logit.

    ``kind="prior"``: z = logit of the cosine target t, and ordinal levels >= 1 share the positive mass by fitted
    proportions (the prior knows no levels). ``kind="logit"``: z = the scorer's logit of P(level >= 1), and the
    scorer's own split of the positive mass over the levels is kept (Platt scaling of a trained scorer).
    Three to C + 1 parameters, fitted by the exact bag likelihood of the labels (:func:`fit_calibration`).
    """

    def __init__(self, n_classes: int, kind: str = "prior") -> None:
        super().__init__()
        if kind not in ("prior", "logit"):
            raise ValueError(f"unknown calibration kind {kind!r}")
        self.n_classes = n_classes
        self.kind = kind
        self.scale = nn.Parameter(torch.ones(()))
        self.shift = nn.Parameter(torch.zeros(()))
        self.levels = nn.Parameter(torch.zeros(max(n_classes - 1, 1)))

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, C) from the cosine target (N,) (prior) or the scorer's log-probabilities (N, C)."""
        if self.kind == "prior":
            t = score.clamp(1e-4, 1 - 1e-4)
            z = torch.log(t / (1 - t))
            split = torch.log_softmax(self.levels, 0).view(1, -1).expand(z.shape[0], -1)
        else:
            positive = log_positive(score)
            z = positive - score[:, 0]
            split = score[:, 1:] - positive.view(-1, 1)  # the scorer's split over the levels >= 1
        z = self.scale * z + self.shift
        return torch.cat(
            [nn.functional.logsigmoid(-z).view(-1, 1), nn.functional.logsigmoid(z).view(-1, 1) + split], 1
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "scale": float(self.scale.detach()),
            "shift": float(self.shift.detach()),
            "levels": [float(v) for v in self.levels.detach()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        out = cls(int(data["n_classes"]), str(data.get("kind", "prior")))
        with torch.no_grad():
            out.scale.fill_(float(data["scale"]))
            out.shift.fill_(float(data["shift"]))
            out.levels.copy_(torch.as_tensor(data["levels"], dtype=torch.float32))
        return out


def cosine_target(bags: BagSet) -> torch.Tensor:
    if bags.cos_target is not None:
        return bags.cos_target
    target = bags.with_cosine_target().cos_target
    assert target is not None
    return target


def fit_calibration(
    score: torch.Tensor, bags: BagSet, *, aggregation: str, n_classes: int, kind: str
) -> Calibration:
    """Fit a :class:`Calibration` of ``score`` (cosine target or scorer log-probabilities, detached) on every bag
    of ``bags`` at once by L-BFGS on the exact bag likelihood."""
    calibration = Calibration(n_classes, kind).to(bags.device)
    score = score.detach()
    labels = torch.nan_to_num(bags.labels, nan=0.0)
    optimiser = torch.optim.LBFGS(
        calibration.parameters(), lr=1.0, max_iter=_CALIBRATION_STEPS, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:  # each evaluation is vectorised over every bag
        optimiser.zero_grad(set_to_none=True)
        loss = -bag_log_likelihood(calibration(score), bags.bag_index, labels, aggregation=aggregation).mean()
        # A weak pull towards the identity map keeps separable data from sending the slope to infinity.
        loss = loss + _CALIBRATION_RIDGE * ((calibration.scale - 1) ** 2 + calibration.shift**2)
        loss.backward()
        return loss

    optimiser.step(closure)
    if not all(bool(torch.isfinite(v).all()) for v in calibration.parameters()):
        calibration = Calibration(n_classes, kind).to(bags.device)  # the identity map: never worse than NaN
    return calibration.eval()


def fit_prior_calibration(train: BagSet, *, aggregation: str, n_classes: int) -> Calibration:
    """The cosine target calibrated to the training bags' labels (``auto``'s prior-only candidate)."""
    return fit_calibration(
        cosine_target(train), train, aggregation=aggregation, n_classes=n_classes, kind="prior"
    )


@dataclass
class Calibrated:
    """A trained scorer followed by a :class:`Calibration` of its logit (what ``auto`` compares and keeps)."""

    scorer: nn.Module
    calibration: Calibration

    def __call__(self, bags: BagSet) -> torch.Tensor:
        return self.calibration(self.scorer(bags))


# -------------------------------------------------------------------------------------------------- criteria
def _log_proba(candidate: Any, bags: BagSet) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(candidate, Calibration):
            return candidate(cosine_target(bags))
        return candidate(bags)


def bag_log_likelihoods(candidate: Any, bags: BagSet, aggregation: str) -> np.ndarray:
    """Each bag's exact log-likelihood of its label under ``candidate``'s scores (B,)."""
    logp = _log_proba(candidate, bags)
    return (
        bag_log_likelihood(logp, bags.bag_index, bags.labels, aggregation=aggregation).double().cpu().numpy()
    )


def mean_bag_log_likelihood(candidate: Any, bags: BagSet, aggregation: str) -> float:
    return float(bag_log_likelihoods(candidate, bags, aggregation).mean())


def gold_scores(candidate: Any, bags: BagSet, aggregation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(binary gold, score given Y, marginal score) of the gold-labelled sentences of ``bags``."""
    logp = _log_proba(candidate, bags)
    given = posterior_scores(logp, bags.bag_index, bags.labels, aggregation=aggregation)
    marginal = 1 - logp[:, 0].exp()
    mask = bags.gold >= 0
    return (bags.gold[mask] >= 1).cpu().numpy(), given[mask].cpu().numpy(), marginal[mask].cpu().numpy()


def _enough_gold(gold: np.ndarray, config: TrainConfig) -> bool:
    return len(gold) >= config.min_gold_for_valid and 0 < int(gold.sum()) < len(gold)


def _hide_gold(bags: BagSet, keep: torch.Tensor | None = None) -> BagSet:
    """``bags`` with the gold labels of every bag outside ``keep`` (B,) bool hidden (None hides all)."""
    if keep is None:
        return replace(bags, gold=torch.full_like(bags.gold, -1))
    return replace(bags, gold=torch.where(keep[bags.bag_index], bags.gold, torch.full_like(bags.gold, -1)))


# ---------------------------------------------------------------------------------------------------- choice
def simplicity(row: dict[str, Any], order: tuple[str, ...] | None = None) -> tuple[int, float]:
    """Sort key of a candidate record: its method's place in ``order`` (``registry.AUTO_SIMPLICITY``), then the
    cosine weight (a smaller pull of the prior is simpler)."""
    order = order or registry.AUTO_SIMPLICITY
    method = row["method"]
    return (order.index(method) if method in order else len(order), float(row.get("cosine", 0.0)))


def choose(
    records: list[dict[str, Any]],
    per_bag: np.ndarray | None,
    *,
    se_multiple: float | None = None,
    order: tuple[str, ...] | None = None,
) -> int:
    """The one-standard-error rule: the index of the chosen record, and each record annotated with its figures.

    ``per_bag`` (candidates, bags) holds each candidate's held-out log-likelihood of every judged bag, rows in
    the order of ``records``. The best is the highest mean; a candidate's gap is the mean of its per-bag paired
    difference to the best and ``paired_se`` that difference's standard error (sample std / sqrt(B)). Those
    with gap <= ``se_multiple`` * paired_se are in the band, and the simplest of them (:func:`simplicity`) is
    chosen. Without per-bag figures (the gold criterion: an AUC has no per-response terms) the best ``score``
    wins, ties going to the simplest. Non-finite scores are never chosen unless nothing else is left.
    """
    k = registry.AUTO_SE_MULTIPLE if se_multiple is None else se_multiple
    scores = np.array([r["score"] if r["score"] is not None else np.nan for r in records], dtype=float)
    finite = np.isfinite(scores)
    if not finite.any():
        finite[:] = True
        scores = np.zeros_like(scores)
    best = int(np.argmax(np.where(finite, scores, -np.inf)))
    if per_bag is not None and per_bag.shape[1] > 1:
        diff = per_bag[best][None, :] - per_bag  # (C, B) paired differences, >= 0 on average
        gap = diff.mean(1)
        se = diff.std(1, ddof=1) / np.sqrt(diff.shape[1])
        band = finite & (gap <= k * se + 1e-12)
    else:
        gap = np.where(finite, scores[best] - scores, np.inf)
        se = np.zeros_like(gap)
        band = finite & (gap <= 1e-12)
    picked = min(np.flatnonzero(band), key=lambda i: simplicity(records[i], order))
    for i, r in enumerate(records):
        r["gap_to_best"] = float(gap[i]) if np.isfinite(gap[i]) else None
        r["paired_se"] = float(se[i]) if np.isfinite(se[i]) else None
        r["within_band"] = bool(band[i])
        r["chosen"] = bool(i == picked)
    return int(picked)


def rule_text(by_gold: bool) -> str:
    """The rule in words, as stored with the model."""
    if by_gold:
        return "highest held-out gold AUC given the label; ties go to the simplest"
    order = ", ".join(registry.AUTO_SIMPLICITY)
    return (
        f"one-standard-error: among candidates within {registry.AUTO_SE_MULTIPLE:g} paired standard error(s) "
        f"of the best held-out log-likelihood, the simplest ({order}; smaller prior weight first)"
    )


@dataclass
class CandidateFit:
    """One fitted candidate (not stored with the model): what benchmarks need to re-run the choice offline."""

    name: str
    method: str
    scorer: Any  # the scorer module, or None for the calibrated prior
    calibration: dict[str, Any] | None  # the prior's calibration (prior-only), else None
    judged: np.ndarray  # held-out log-likelihood of each judged bag (after the logistic map)


# ------------------------------------------------------------------------------------------------------- fit
def _prefixed(progress: ProgressFn | None, candidate: str) -> ProgressFn | None:
    """A progress callback that reports a candidate's stages under their ``registry.auto_stage`` names."""
    if progress is None:
        return None
    report = progress

    def tell(stage: str, fraction: float, message: str) -> None:
        report(registry.auto_stage(candidate, stage), fraction, message)

    return tell


def fit_auto(
    train: BagSet,
    valid: BagSet | None,
    *,
    aggregation: str,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    progress: ProgressFn | None = None,
) -> Any:
    """Fit the candidates, choose one (module docstring) and return its ``FitResult`` with ``selection`` set.

    The result's ``stages`` are every stage that ran (``registry.auto_stages``), named per candidate.
    """
    from fractal_core.fitting.methods import FitResult, fit_method

    started = time.perf_counter()
    gold_bag_mask = torch.zeros(train.n_bags, dtype=torch.bool, device=train.device)
    gold_bag_mask[train.bag_index[train.gold >= 0]] = True
    gold_ids = torch.nonzero(gold_bag_mask).flatten()
    has_gold = bool(len(gold_ids))
    order = gold_ids[torch.randperm(len(gold_ids), generator=torch.Generator().manual_seed(seed + 31))]
    folds = [
        order[f :: registry.AUTO_CROSS_FIT_FOLDS].sort().values for f in range(registry.AUTO_CROSS_FIT_FOLDS)
    ]
    # Judge by gold only when there is enough of it, with both classes in every fold; else by likelihood.
    use_gold = has_gold and _enough_gold((train.gold[train.gold >= 0] >= 1).cpu().numpy(), config)
    for fold in folds if use_gold else []:
        held = train.select(fold)
        if not _enough_gold(
            (held.gold[held.gold >= 0] >= 1).cpu().numpy(), replace(config, min_gold_for_valid=2)
        ):
            use_gold = False
    held_out = train.select(gold_ids) if use_gold else None
    weak = _hide_gold(train)
    judge = valid if valid is not None and valid.n_bags else weak
    if use_gold:
        criterion = f"gold_auc_given_y ({registry.AUTO_CROSS_FIT_FOLDS}-fold cross-fit over {len(gold_ids)} gold responses)"
    else:
        criterion = "valid_bag_log_likelihood" if judge is valid else "train_bag_log_likelihood"

    stages: list[StageResult] = []
    records: list[dict[str, Any]] = []
    fitted: dict[str, Any] = {}
    judged: list[np.ndarray] = []

    def fit(name: str, method: str, data: BagSet, cfg: TrainConfig, init: Any = None) -> Any:
        tell = _prefixed(progress, name)
        result = fit_method(
            method,
            data,
            valid,
            aggregation=aggregation,
            n_classes=n_classes,
            config=cfg,
            seed=seed,
            progress=tell,
            init=init,
        )
        stages.extend(replace(st, stage=registry.auto_stage(name, st.stage)) for st in result.stages)
        return result

    def calibrate(scorer: Any) -> Calibrated:
        """Platt scaling of a trained scorer on the judged bags (2 parameters, exact bag likelihood)."""
        with torch.no_grad():
            logp = scorer(judge)
        return Calibrated(
            scorer, fit_calibration(logp, judge, aggregation=aggregation, n_classes=n_classes, kind="logit")
        )

    def record(
        name: str,
        method: str,
        candidate: Any,
        result: Any,
        seconds: float,
        cross_fit: Any = None,
        cosine: float | None = None,
    ) -> None:
        row: dict[str, Any] = {"name": name, "method": method}
        if cosine is not None:
            row["cosine"] = cosine
        judged_by = candidate
        if not isinstance(candidate, Calibration):
            # The likelihood is judged after a 2-parameter logistic map of the scorer's logit, fitted on the
            # judged bags, so that a scorer trained with a hard max (sharp but well ranked) is not penalised
            # for its calibration; the scorer itself ships unchanged (on the valid splits Platt-scaled scores
            # ranked worse given the label: DelucionQA 0.867 -> 0.841, BENCHMARKS.md).
            row["bag_log_likelihood_raw"] = mean_bag_log_likelihood(candidate, judge, aggregation)
            t0 = time.perf_counter()
            judged_by = calibrate(candidate)
            row["calibration"] = judged_by.calibration.to_dict()
            seconds += time.perf_counter() - t0
        row["seconds"] = round(seconds, 3)
        judged.append(bag_log_likelihoods(judged_by, judge, aggregation))
        row["bag_log_likelihood"] = float(judged[-1].mean())
        if held_out is not None:
            gold, given, marginal = (
                cross_fit if cross_fit is not None else gold_scores(candidate, held_out, aggregation)
            )
            row["gold_auc_given_y"] = auc_roc(gold, given)
            row["gold_auc"] = auc_roc(gold, marginal)
        row["score"] = row["gold_auc_given_y"] if held_out is not None else row["bag_log_likelihood"]
        records.append(row)
        fitted[name] = (method, candidate, result)

    # 1. The calibrated cosine prior: no training of a scorer, a few parameters.
    t0 = time.perf_counter()
    calibration = fit_prior_calibration(weak, aggregation=aggregation, n_classes=n_classes)
    record("prior_only(calibrated)", "prior_only", calibration, None, time.perf_counter() - t0)

    # 2. BagLoss alone, then BagLoss + cosine prior at each weight of the grid (the tuned default first), each
    # warm-started from the BagLoss scorer with a shorter patience: the prior only moves a scorer that already
    # fits the labels, so it needs a few epochs, not a fit from scratch (BENCHMARKS.md: fit cost).
    t0 = time.perf_counter()
    base = fit("bagloss", "bagloss", weak, config)
    record("bagloss", "bagloss", base.model, base, time.perf_counter() - t0)
    for w in registry.auto_prior_weights(config):
        t0 = time.perf_counter()
        cfg = replace(
            config,
            weights=replace(config.weights, bag=1.0 - w, cosine=w, correlation=0.0),
            patience=min(config.patience, registry.AUTO_WARM_PATIENCE),
        )
        name = f"priors(cosine={w:g})"
        result = fit(name, "priors", weak, cfg, init=base.model)
        record(name, "priors", result.model, result, time.perf_counter() - t0, cosine=w)

    # 3. Hybrid, trained on each fold's complement of the gold and scored on the fold (cross-fitting), then
    # on all the gold.
    if has_gold:
        t0 = time.perf_counter()
        parts = []
        for f, fold in enumerate(folds):
            keep = gold_bag_mask.clone()
            keep[fold] = False
            if not bool(keep.any()):
                continue  # a single gold response: this fold's complement has no gold to train hybrid on
            part = fit(f"hybrid(fold {f + 1})", "hybrid", _hide_gold(train, keep), config)
            if held_out is not None:
                parts.append(gold_scores(part.model, train.select(fold), aggregation))
        pooled = tuple(np.concatenate([p[i] for p in parts]) for i in range(3)) if parts else None
        full = fit("hybrid", "hybrid", train, config)
        record("hybrid", "hybrid", full.model, full, time.perf_counter() - t0, cross_fit=pooled)

    best = records[choose(records, None if held_out is not None else np.stack(judged))]
    method, candidate, result = fitted[best["name"]]
    selection = Selection(
        chosen=best["name"],
        method=method,
        criterion=criterion,
        candidates=records,
        seconds=round(time.perf_counter() - started, 3),
        rule=rule_text(held_out is not None),
    )
    if isinstance(candidate, Calibration):
        out = FitResult(method="prior_only", model=None, stages=stages, calibration=candidate.to_dict())
    else:
        out = FitResult(method=method, model=result.model, stages=stages)
    out.selection = selection.to_dict()
    out.candidates = [
        CandidateFit(
            name=r["name"],
            method=fitted[r["name"]][0],
            scorer=None if isinstance(fitted[r["name"]][1], Calibration) else fitted[r["name"]][1],
            calibration=fitted[r["name"]][1].to_dict()
            if isinstance(fitted[r["name"]][1], Calibration)
            else None,
            judged=j,
        )
        for r, j in zip(records, judged, strict=True)
    ]
    return out


__all__ = [
    "Calibration",
    "CandidateFit",
    "Selection",
    "choose",
    "fit_auto",
    "fit_calibration",
    "fit_prior_calibration",
]
