"""``auto``'s settings and candidates: the fits it makes, in the order they run, and their stage names."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from fractal_core.fitting.config import ScorerKind, TrainConfig
from fractal_core.fitting.method_plan import Candidate, MethodPlan, single_plan

AUTO_PRIOR_WEIGHTS: tuple[float, ...] = (0.1,)
"""Cosine-prior weights ``auto`` tries (BagLoss weight 1 - w, correlation prior off); the config's own cosine
weight (the tuned default) is tried first. 0.3 was a candidate too, but on the validation splits the
one-standard-error rule never chose it (BENCHMARKS.md), so it no longer costs a fit."""
AUTO_WARM_PATIENCE = 2
"""Early-stopping patience (epochs) of ``auto``'s priors candidates, which start from its BagLoss scorer rather
than from scratch (the config's patience applies to every other fit)."""
AUTO_CROSS_FIT_FOLDS = 2
"""Gold responses are cut into this many folds to judge hybrid on gold it did not train on."""
AUTO_SE_MULTIPLE = 1.0
"""``auto`` keeps the simplest candidate whose held-out figure (log-likelihood without gold, gold AUC given the
label with it) lies within this many paired standard errors of the best (the one-standard-error rule,
``fractal_core.fitting.auto_choice.choose``)."""
AUTO_SE_MULTIPLE_GOLD = 0.5
"""The band of the rule when ``auto`` judges by gold, in paired standard errors of the gold AUC given the label:
hybrid (``AUTO_GOLD_DEFAULT``) is kept unless another candidate beats it by more than half a paired SE, and
then the best is. Chosen on the valid splits (10% gold, seeds 0-2; BENCHMARKS.md, "With gold: hybrid first"): never below
plain hybrid and level with the plain best (ProcessBench 0.8232 / hybrid 0.8232 / plain best 0.8241;
DelucionQA 0.8555 / 0.8357 / 0.8555), where 1 SE kept hybrid on every seed (DelucionQA 0.8357) and the plain
best fell below hybrid on other data."""
AUTO_SIMPLICITY: tuple[str, ...] = ("bagloss", "prior_only", "blend", "priors", "hybrid", "hazard")
"""``auto``'s candidates from simplest to most elaborate (priors: smaller cosine weight first): without gold,
the one kept among those tied within the band is the first in this order."""
AUTO_GOLD_DEFAULT = "hybrid"
"""Judged by gold, the candidate kept unless another beats its gold AUC given the label by more than the band
(``AUTO_SE_MULTIPLE_GOLD``), and then the best is kept: hybrid, the one candidate that learns from the gold."""
AUTO_HAZARD_SCORER: Final[ScorerKind] = "context"
"""The scorer of ``auto``'s hazard candidate: the contextual scorer (causal on first-error data), chosen on
ProcessBench valid over the MLP (official F1 0.32 against 0.22, F key top-1 0.27-0.29 against 0.22;
BENCHMARKS.md, "Training that targets the first error")."""
AUTO_GOLD_RESAMPLES = 1000
"""Bootstrap replicates (gold responses drawn with replacement) behind the paired standard error of a gold AUC
difference when ``auto`` judges by gold (more move the standard error by well under a tenth of itself)."""
AUTO_WEAK_GOLD_RESPONSES = 30
"""Judged by gold, fewer held-out gold responses than this make the evidence for ``auto``'s choice weak: a
bootstrap over so few responses understates the spread of the AUC, so the standard errors are not trusted."""
AUTO_WEAK_GOLD_SENTENCES = 10
"""Judged by gold, fewer gold sentences than this in the rarer class (problem or fine) make the evidence weak:
the AUC then rests on a handful of sentences."""


AUTO_BLEND = False
"""Whether ``auto`` also fits its blend candidate (:data:`BLEND`). Off: on the valid splits of every view built
from the shared data, the blend that the held-out likelihood chose ranked sentences worse given the response
label than BagLoss (BENCHMARKS.md, "Views where the prior matters")."""
BLEND = "blend(bagloss+prior)"
"""The name of ``auto``'s combination candidate: the BagLoss scorer's logit and the cosine prior's logit mixed by
weights fitted on the held-out bags' labels (``calibration.Calibration``, ``kind="blend"``); no training stage."""


def auto_stage(candidate: str, stage: str) -> str:
    """The progress / history name of a training stage of one of ``auto``'s candidates."""
    return f"auto:{candidate}/{stage}"


def auto_prior_weights(config: TrainConfig | None = None) -> tuple[float, ...]:
    """The cosine weights ``auto`` tries, the config's own first."""
    weights = (config or TrainConfig()).weights
    first = weights.cosine if weights.cosine > 0 else AUTO_PRIOR_WEIGHTS[0]
    return (first, *[w for w in AUTO_PRIOR_WEIGHTS if abs(w - first) > 1e-9])


def auto_candidates(
    *,
    has_gold: bool,
    aggregation: str,
    config: TrainConfig,
    blend: bool | None = None,
    first_error: bool = False,
) -> tuple[Candidate, ...]:
    """``auto``'s fits in the order they run: the calibrated prior (no training stage), BagLoss, the blend of
    the two when ``blend`` (default ``AUTO_BLEND``; no training stage), BagLoss + cosine prior at each weight
    (warm-started from BagLoss, shorter patience) and, with gold, hybrid on each cross-fitting fold's complement
    and then on all the gold; then, when the gold follows the first-error protocol of step data
    (``first_error``, read from the data), the hazard method the same way."""

    def plan(name: str, cfg: TrainConfig = config) -> MethodPlan:
        return single_plan(name, asked=name, aggregation=aggregation, config=cfg)

    out = [Candidate("prior_only(calibrated)", plan("prior_only")), Candidate("bagloss", plan("bagloss"))]
    if AUTO_BLEND if blend is None else blend:
        out.append(Candidate(BLEND, replace(plan("bagloss"), stages=()), blend=True))
    for w in auto_prior_weights(config):
        cfg = replace(
            config,
            weights=replace(config.weights, bag=1.0 - w, cosine=w, correlation=0.0),
            patience=min(config.patience, AUTO_WARM_PATIENCE),
        )
        out.append(Candidate(f"priors(cosine={w:g})", plan("priors", cfg), warm_start=True, cosine=w))
    if has_gold:
        hybrid = plan("hybrid")
        out += [Candidate(f"hybrid(fold {f + 1})", hybrid, fold=f) for f in range(AUTO_CROSS_FIT_FOLDS)]
        out.append(Candidate("hybrid", hybrid, refit=True))
    if has_gold and first_error and aggregation == "max":
        hazard = plan("hazard", replace(config, scorer=AUTO_HAZARD_SCORER))
        out += [Candidate(f"hazard(fold {f + 1})", hazard, fold=f) for f in range(AUTO_CROSS_FIT_FOLDS)]
        out.append(Candidate("hazard", hazard, refit=True))
    return tuple(out)
