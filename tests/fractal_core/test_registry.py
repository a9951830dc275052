"""The torch-free registry agrees with the pipelines it describes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fractal_core.evaluation import selection
from fractal_core.fitting import methods, registry
from fractal_core.fitting.config import LossWeights, TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.fit import fit_method
from tests.fractal_core.synthetic import planted_bags


@pytest.mark.slow
def test_registry_imports_no_torch() -> None:
    code = "import sys, fractal_core.fitting.registry; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_methods_and_strategies_come_from_the_registry() -> None:
    assert list(methods.METHODS) == list(registry.METHOD_NAMES)
    assert {m.name for m in registry.METHOD_LIST if m.trained} == methods.TRAINED
    assert selection.STRATEGIES == registry.STRATEGY_NAMES
    assert set(registry.QUEUE_STRATEGIES) <= set(registry.STRATEGY_NAMES)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        registry.method("nope")


def test_descriptions_follow_the_tuned_defaults() -> None:
    tuned = registry.method_descriptions()
    # The tuned defaults: no PsLab after the bag model, cosine prior only (correlation weight 0).
    assert "BagLoss + cosine prior and, with gold" in tuned["fractal"]
    assert "correlation" not in tuned["priors"] and "PsLab" not in tuned["hybrid"]
    assert f"within {registry.AUTO_SE_MULTIPLE:g} paired standard error" in tuned["auto"]
    both = TrainConfig(pslab=True, weights=LossWeights(correlation=0.2))
    other = registry.method_descriptions(both)
    assert "BagLoss + cosine prior + correlation prior" in other["priors"]
    assert "correlation" not in other["auto"]  # auto's priors candidates turn the correlation prior off
    assert other["hybrid"].endswith(", then PsLab (needs some gold).")


@pytest.mark.parametrize("pslab", [False, True])
@pytest.mark.parametrize("aggregation", ["max", "mean"])
@pytest.mark.parametrize("name", registry.METHOD_NAMES)
def test_stage_plan_is_what_the_pipeline_runs(name: str, aggregation: str, pslab: bool) -> None:
    train = planted_bags(40, dim=8, max_size=4, aggregation=aggregation, seed=1)
    train.gold[train.bag_index >= 20] = -1  # half the bags carry gold labels
    config = TrainConfig(max_epochs=1, patience=1, pslab=pslab)
    if name == "hazard" and aggregation != "max":  # step data only
        with pytest.raises(ValueError, match="worst step"):
            fit_method(name, FitContext(train, None, aggregation, 2, config, 0))
        return
    result = fit_method(name, FitContext(train, None, aggregation, 2, config, 0))
    planned = registry.training_stages(name, has_gold=True, aggregation=aggregation, config=config)
    assert tuple(s.stage for s in result.stages) == planned


def test_stage_plan_without_gold() -> None:
    assert registry.training_stages("fractal", has_gold=False, aggregation="max") == (
        "auto:bagloss/bag",
        "auto:priors(cosine=0.1)/bag",
    )
    assert registry.training_stages("auto", has_gold=False, aggregation="mean") == (
        "auto:bagloss/bag",
        "auto:priors(cosine=0.1)/bag",
    )
    # A config with another cosine weight tries its own weight first, then the grid's.
    other = TrainConfig(weights=LossWeights(cosine=0.2))
    assert registry.training_stages("auto", has_gold=False, aggregation="max", config=other) == (
        "auto:bagloss/bag",
        "auto:priors(cosine=0.2)/bag",
        "auto:priors(cosine=0.1)/bag",
    )
    with_gold = registry.training_stages("fractal", has_gold=True, aggregation="max")
    assert with_gold[-4:] == (
        "auto:hybrid(fold 2)/hybrid-teacher",
        "auto:hybrid(fold 2)/bag",
        "auto:hybrid/hybrid-teacher",
        "auto:hybrid/bag",
    )
    assert registry.training_stages("naive", has_gold=False, aggregation="max") == ()
    with pytest.raises(ValueError, match="needs gold"):
        registry.training_stages("supervised", has_gold=False, aggregation="max")


def test_a_method_resolves_once_into_a_typed_plan() -> None:
    priors = registry.resolve("priors", has_gold=False, aggregation="max")
    assert priors.pipeline == "priors" and priors.stages == ("bag",) and not priors.needs_gold
    assert priors.loss_weights == pytest.approx(
        {"bag": 0.9, "cosine": 0.1}
    )  # correlation weight 0: not built
    hybrid = registry.resolve("hybrid", has_gold=True, aggregation="max", config=TrainConfig(pslab=True))
    assert hybrid.needs_gold and set(hybrid.loss_weights) == {"bag", "cosine", "hybrid"}
    assert hybrid.stages == ("hybrid-teacher", "bag", "pslab")
    fractal = registry.resolve("fractal", has_gold=True, aggregation="max")
    assert fractal.name == "fractal" and fractal.pipeline == "auto" and not fractal.losses
    assert [c.name for c in fractal.candidates] == [
        "prior_only(calibrated)",
        "bagloss",
        "priors(cosine=0.1)",
        "hybrid(fold 1)",
        "hybrid(fold 2)",
        "hybrid",
    ]
    assert [c.fold for c in fractal.candidates][-3:] == [0, 1, None]
    assert fractal.candidates[2].warm_start and fractal.candidates[2].plan.config.patience == 2
    assert fractal.stages == tuple(
        registry.auto_stage(c.name, s) for c in fractal.candidates for s in c.plan.stages
    )
    with pytest.raises(ValueError, match="sum to 0"):
        registry.resolve(
            "bagloss", has_gold=False, aggregation="max", config=TrainConfig(weights=LossWeights(bag=0))
        )
