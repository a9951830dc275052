"""One scorer for several criteria: the stacked heads equal per-criterion computations, the joint objective is the
sum of each criterion's single objective, the fit learns every criterion, and save/load keeps the scores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.criteria_fit import (
    bag_objective,
    balancing_scales,
    criterion_bags,
    fit_criteria,
    group_losses,
    with_cosine_targets,
)
from fractal_core.fitting.criteria_model import CriteriaModel
from fractal_core.fitting.heads import Criterion, MultiHeadScorer, head_groups
from fractal_core.fitting.objectives import bag_objective as single_objective
from fractal_core.mil.losses import proportion_target
from tests.fractal_core.synthetic import planted_bags

CRITERIA = (
    Criterion("a", "max", 2),
    Criterion("level", "max", 3),
    Criterion("share", "mean", 2),
    Criterion("b", "max", 2),
    Criterion("all", "min", 2),
)


def joint_bags(n_bags: int = 120, seed: int = 0) -> BagSet:
    """Planted bags whose criteria follow different hidden directions of the same sentences."""
    parts = [
        planted_bags(n_bags, aggregation=c.aggregation, n_classes=c.n_classes, seed=seed, task_seed=j)
        for j, c in enumerate(CRITERIA)
    ]
    return replace(
        parts[0],
        labels=torch.stack([p.labels for p in parts], 1),
        gold=torch.stack([p.gold for p in parts], 1),
    )


def scorer(seed: int = 0) -> MultiHeadScorer:
    return MultiHeadScorer({"kind": "mlp"}, 32, CRITERIA, generator=torch.Generator().manual_seed(seed))


def test_heads_are_grouped_by_task_and_read_their_own_columns() -> None:
    groups = head_groups(CRITERIA)
    assert [(g.aggregation, g.n_classes, g.heads) for g in groups] == [
        ("max", 2, (0, 3)),
        ("max", 3, (1,)),
        ("mean", 2, (2,)),
        ("min", 2, (4,)),
    ]
    assert groups[1].columns.tolist() == [[1, 2, 3]] and groups[0].columns.tolist() == [[0], [5]]
    bags = joint_bags(20)
    model = scorer()
    with torch.no_grad():
        z = model(bags)  # (N, W)
        per_head = model.head_logp(z)
    assert z.shape == (bags.n_sentences, 1 + 3 + 1 + 1 + 1)
    assert torch.allclose(per_head[1], torch.log_softmax(z[:, 1:4], 1))
    for j, column in ((0, 0), (2, 4), (3, 5), (4, 6)):
        assert torch.allclose(per_head[j][:, 1], torch.nn.functional.logsigmoid(z[:, column]))


def test_the_joint_objective_is_the_sum_of_each_criterions_single_objective() -> None:
    bags = with_cosine_targets(joint_bags(40), CRITERIA).with_correlation_pairs()
    bags = replace(bags, labels=bags.labels, gold=bags.gold)
    weights = {"bag": 0.6, "cosine": 0.3, "correlation": 0.1}
    config = TrainConfig(bag_variant="prob")
    model = scorer()
    joint = bag_objective(config, weights, model.groups)(model, bags)
    with torch.no_grad():
        per_head = model.head_logp(model(bags))
    total = torch.zeros(())
    for j, c in enumerate(CRITERIA):
        one = criterion_bags(bags, j)

        class Fixed(torch.nn.Module):
            def forward(self, _: BagSet, j: int = j) -> torch.Tensor:
                return per_head[j]

        total = total + single_objective(config, c.aggregation, weights)(Fixed(), one)  # type: ignore[arg-type]
    assert torch.allclose(joint, total, atol=1e-5)


def test_a_mean_criterions_cosine_target_meets_its_own_proportions() -> None:
    bags = with_cosine_targets(joint_bags(30), CRITERIA)
    assert bags.cos_target is not None and bags.cos_target.shape == (bags.n_sentences, len(CRITERIA))
    raw = bags.cos_target[:, 0]
    assert torch.equal(bags.cos_target[:, 3], raw) and torch.equal(bags.cos_target[:, 4], raw)
    moved = proportion_target(raw, bags.bag_index, bags.labels[:, 2])
    assert torch.allclose(bags.cos_target[:, 2], moved)


def test_each_head_takes_its_own_best_context_window() -> None:
    bags = joint_bags(6)
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(1, 4, (bags.n_bags,), generator=g)
    ctx = torch.nn.functional.normalize(torch.randn(int(windows.sum()), 32, generator=g), dim=1)
    bags = replace(bags, ctx_emb=ctx, win_bag=torch.repeat_interleave(torch.arange(bags.n_bags), windows))
    model = scorer()
    with torch.no_grad():
        z = model(bags)
        trunk = model.trunk
        sent = trunk._sentence_hidden(bags)
        for i in range(bags.n_sentences):  # the reference: every window of the sentence's bag, one at a time
            own = torch.nonzero(bags.win_bag == bags.bag_index[i]).flatten()
            options = trunk._logits(sent[i] + trunk.context_proj(bags.ctx_emb[own]))  # (w, W)
            positive = model._log_positive(options)  # (w, k)
            best = positive.argmax(0)  # (k,)
            expected = options[best[model.head_of_column], torch.arange(options.shape[1])]
            assert torch.allclose(z[i], expected, atol=1e-6)


@pytest.mark.slow
def test_the_joint_fit_learns_every_criterion() -> None:
    # (the planted task's one shared context makes the cosine prior noise here, so the priors are left out)
    train, valid = joint_bags(250, seed=0), joint_bags(80, seed=1)
    config = TrainConfig(max_epochs=20, patience=20, learning_rate=1e-2)
    model, stages = fit_criteria(train, valid, CRITERIA, method="pslab", config=config, seed=0)
    assert [s.stage for s in stages] == ["bag", "pslab"]
    with torch.no_grad():
        per_head = model.head_logp(model(valid))
    for j, c in enumerate(CRITERIA):
        score = 1 - per_head[j][:, 0].exp()
        assert auc_roc((valid.gold[:, j] >= 1).numpy(), score.numpy()) > 0.9, c.name
    again, _ = fit_criteria(train, valid, CRITERIA, method="pslab", config=config, seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_balancing_starts_every_group_at_one_so_a_proportion_criterion_keeps_up() -> None:
    train, valid = joint_bags(250, seed=0), joint_bags(80, seed=1)
    model = scorer()
    losses = group_losses(TrainConfig(), {"bag": 1.0}, model.groups)
    scales = balancing_scales(model, train, losses)
    with torch.no_grad():
        start = [s * float(loss) for s, loss in zip(scales, losses(model, train), strict=True)]
    assert start == pytest.approx([1.0] * len(model.groups), rel=1e-4)
    # Without it, the mean criterion's squared error was drowned by the others' log-losses (AUC ~0.72 here).
    config = TrainConfig(max_epochs=20, patience=20, learning_rate=1e-2)
    fitted, _ = fit_criteria(train, valid, CRITERIA, method="bagloss", config=config, seed=0)
    with torch.no_grad():
        share = 1 - fitted.head_logp(fitted(valid))[2][:, 0].exp()
    assert auc_roc((valid.gold[:, 2] >= 1).numpy(), share.numpy()) > 0.9


def test_fit_refuses_other_methods_and_mismatched_labels() -> None:
    bags = joint_bags(20)
    with pytest.raises(ValueError, match="bagloss, priors, pslab"):
        fit_criteria(bags, None, CRITERIA, method="hybrid")
    with pytest.raises(ValueError, match="labels must be"):
        fit_criteria(criterion_bags(bags, 0), None, CRITERIA)


def test_save_and_load_keep_every_criterions_scores(tmp_path: Path) -> None:
    train, test = joint_bags(100, seed=0), joint_bags(30, seed=2)
    model = CriteriaModel("priors", config=TrainConfig(max_epochs=3), seed=1).fit_bags(
        train, criteria=CRITERIA
    )
    assert set(model.metrics_) == {c.name for c in CRITERIA}  # measured on the held-out share
    model.save(tmp_path / "m")
    loaded = CriteriaModel.load(tmp_path / "m")
    assert loaded.criteria_ == CRITERIA and loaded.method == "priors"
    for a, b in zip(model.predict_proba_bags(test), loaded.predict_proba_bags(test), strict=True):
        assert torch.allclose(a, b)
    metrics = loaded.evaluate_bags(test)
    assert metrics["level"]["instance_auc_roc"] == model.evaluate_bags(test)["level"]["instance_auc_roc"]


def test_the_contextual_trunk_takes_heads_too(tmp_path: Path) -> None:
    train = joint_bags(60)
    config = TrainConfig(max_epochs=2, scorer="context", context_direction="causal")
    model = CriteriaModel("bagloss", config=config).fit_bags(train, criteria=CRITERIA)
    assert model.scorer_.spec()["kind"] == "context" and model.scorer_.spec()["causal"] is True
    model.save(tmp_path / "c")
    loaded = CriteriaModel.load(tmp_path / "c")
    for a, b in zip(model.predict_proba_bags(train), loaded.predict_proba_bags(train), strict=True):
        assert torch.allclose(a, b)


def test_a_criterions_part_scores_as_the_joint_model_and_saves_as_a_single_model(tmp_path: Path) -> None:
    from fractal_core.fitting.estimator import FractalModel

    train = joint_bags(60)
    g = torch.Generator().manual_seed(5)
    # Several context windows per response: the single scorer must take the window its head takes.
    windows = torch.randint(1, 3, (train.n_bags,), generator=g)
    ctx = torch.nn.functional.normalize(torch.randn(int(windows.sum()), 32, generator=g), dim=1)
    test = replace(train, ctx_emb=ctx, win_bag=torch.repeat_interleave(torch.arange(train.n_bags), windows))
    for spec in ({}, {"scorer": "context", "context_direction": "causal"}):
        config = TrainConfig(max_epochs=2, **spec)  # type: ignore[arg-type]
        model = CriteriaModel("priors", config=config).fit_bags(train, criteria=CRITERIA)
        joint = model.predict_proba_bags(test)
        for j, c in enumerate(CRITERIA):
            single = model.criterion_model(c.name)
            assert (single.aggregation_, single.n_classes_) == (c.aggregation, c.n_classes)
            assert single.metrics_ == model.metrics_[c.name] and single.resolved_method_ == "priors"
            assert single.step_calibration_.identity and "joint" in single.step_calibration_.reason
            assert torch.allclose(single.predict_proba_bags(criterion_bags(test, j)), joint[j], atol=1e-6)
            single.save(tmp_path / f"{c.name}-{len(spec)}")
            loaded = FractalModel.load(tmp_path / f"{c.name}-{len(spec)}")
            assert torch.allclose(loaded.predict_proba_bags(test), joint[j], atol=1e-6)
    with pytest.raises(ValueError, match="no criterion 'nope'"):
        model.criterion_model("nope")
