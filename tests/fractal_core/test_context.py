"""The contextual scorer: features against a per-bag reference, causal masking, persistence, every method."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fractal_core.evaluation.metrics import auc_roc
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.fit import fit_method
from fractal_core.fitting.methods import first_error_annotated, scorer_spec
from fractal_core.fitting.model import (
    ContextScorer,
    SentenceScorer,
    build_scorer,
    neighbour_summaries,
    position_features,
    sentence_positions,
)
from fractal_core.mil.aggregate import positive_score
from tests.fractal_core.synthetic import planted_bags

CONTEXT = TrainConfig(max_epochs=60, patience=8, learning_rate=2e-3, scorer="context")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scores(model: torch.nn.Module, bags: BagSet) -> torch.Tensor:
    with torch.inference_mode():
        return positive_score(model(bags))


def _reference(bags: BagSet, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour summaries and position scalars one bag at a time, written out plainly (a loop is fine here)."""
    cos = torch.nn.functional.cosine_similarity
    vectors, scalars = [], []
    for b in range(bags.n_bags):
        emb = bags.sent_emb[bags.bag_index == b]
        n = emb.shape[0]
        zero = torch.zeros_like(emb[0])
        for i in range(n):
            e = emb[i]
            mean = emb[:i].mean(0) if i else zero
            prev = emb[i - 1] if i else zero
            row = [mean, prev]
            scal = [float(i == 0), math.log1p(i), float(cos(e, prev, dim=0, eps=1e-8))]
            scal.append(float(cos(e, mean, dim=0, eps=1e-8)))
            if not causal:
                later = emb[i + 1 :].mean(0) if i < n - 1 else zero
                nxt = emb[i + 1] if i < n - 1 else zero
                row += [later, nxt]
                scal += [i / max(n - 1, 1), math.log(n), float(cos(e, nxt, dim=0, eps=1e-8))]
                scal.append(float(cos(e, later, dim=0, eps=1e-8)))
            vectors.append(torch.cat(row))
            scalars.append(torch.tensor(scal))
    return torch.stack(vectors), torch.stack(scalars)


@pytest.mark.parametrize("causal", [True, False])
def test_summaries_and_position_features_match_a_per_bag_reference(causal: bool) -> None:
    bags = planted_bags(25, dim=8, max_size=6, seed=3)
    position, size = sentence_positions(bags.bag_index, bags.n_bags)
    summaries = torch.cat(neighbour_summaries(bags.sent_emb, position, size, causal=causal), dim=1)
    vectors, scalars = _reference(bags, causal)
    torch.testing.assert_close(summaries, vectors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(position_features(bags, causal=causal), scalars, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_shapes_and_windows(n_classes: int) -> None:
    bags = planted_bags(12, dim=16, seed=0)
    model = ContextScorer(16, n_classes=n_classes, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model(bags)
    assert out.shape == (bags.n_sentences, n_classes)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(bags.n_sentences))
    # Two context windows for every bag: one sentence prediction each, from the best window.
    windows = replace(
        bags,
        ctx_emb=torch.stack([bags.ctx_emb, -bags.ctx_emb], 1).reshape(-1, 16),
        win_bag=torch.repeat_interleave(bags.win_bag, 2),
    )
    with torch.inference_mode():
        assert model(windows).shape == (bags.n_sentences, n_classes)


def _perturb(bags: BagSet, flat: int) -> BagSet:
    emb = bags.sent_emb.clone()
    emb[flat] = torch.nn.functional.normalize(torch.randn(emb.shape[1]), dim=0)
    return replace(bags, sent_emb=emb)


def _random_context_scorer(causal: bool) -> ContextScorer:
    """An untrained scorer whose output does depend on the context features (whatever their initialisation)."""
    g = torch.Generator().manual_seed(0)
    model = ContextScorer(16, causal=causal, generator=g)
    with torch.no_grad():
        model.feature_proj.weight.copy_(torch.randn(model.feature_proj.weight.shape, generator=g) * 0.3)
    return model


def test_causal_scores_ignore_later_steps_and_other_bags() -> None:
    bags = planted_bags(20, dim=16, max_size=8, seed=1)
    model = _random_context_scorer(causal=True)
    base = _scores(model, bags)
    bag = int(bags.bag_index[torch.bincount(bags.bag_index).argmax().item() == bags.bag_index][0])
    members = torch.nonzero(bags.bag_index == bag).flatten()
    changed = int(members[3])  # the 4th step of the largest bag (it has >= 4 steps)
    after = _scores(model, _perturb(bags, changed))
    assert torch.equal(after[members[:3]], base[members[:3]])  # earlier steps: exactly unchanged
    assert not torch.allclose(after[members[3:]], base[members[3:]])  # the step itself and later ones move
    others = bags.bag_index != bag
    torch.testing.assert_close(after[others], base[others], atol=1e-6, rtol=0)
    # The bidirectional scorer does read later sentences (so the check above can fail).
    both = _random_context_scorer(causal=False)
    assert not torch.allclose(
        _scores(both, _perturb(bags, changed))[members[:3]], _scores(both, bags)[members[:3]]
    )


def test_a_bag_scores_the_same_alone_or_in_a_batch() -> None:
    bags = planted_bags(30, dim=16, seed=2)
    model = _random_context_scorer(causal=False)
    whole = _scores(model, bags)
    picked = torch.tensor([17, 3])
    part = _scores(model, bags.select(picked))
    expected = torch.cat([whole[bags.bag_index == 17], whole[bags.bag_index == 3]])
    torch.testing.assert_close(part, expected, atol=1e-6, rtol=0)


def _step_bags(n_bags: int, seed: int, dim: int = 16) -> BagSet:
    """Steps whose label depends on their response: a step is wrong when it repeats an earlier step.

    A sentence-at-a-time scorer cannot see this; gold labels stop after the first wrong step (step protocol).
    """
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 8, (n_bags,), generator=g)
    bag_index = torch.repeat_interleave(torch.arange(n_bags), sizes)
    n = int(sizes.sum())
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    position = torch.arange(n) - (torch.cumsum(sizes, 0) - sizes)[bag_index]
    repeat = (torch.rand(n, generator=g) < 0.15) & (position > 0)
    noise = 0.05 * torch.randn(n, dim, generator=g)
    emb = torch.where(repeat.unsqueeze(1), torch.nn.functional.normalize(emb.roll(1, 0) + noise, dim=1), emb)
    gold = repeat.long()
    labels = torch.zeros(n_bags).scatter_reduce(0, bag_index, gold.float(), "amax")
    flat = torch.arange(n)
    first = torch.full((n_bags,), n).scatter_reduce(0, bag_index[gold == 1], flat[gold == 1], "amin")
    gold = torch.where(flat > first[bag_index], torch.full_like(gold, -1), gold)
    ctx = torch.nn.functional.normalize(torch.randn(1, dim, generator=g), dim=1).expand(n_bags, dim).clone()
    return BagSet(
        sent_emb=emb, bag_index=bag_index, ctx_emb=ctx, win_bag=torch.arange(n_bags), labels=labels, gold=gold
    )


def test_direction_is_read_from_the_gold_labels() -> None:
    steps = _step_bags(50, seed=0)
    assert first_error_annotated(steps)
    assert scorer_spec(CONTEXT, steps) == {"kind": "context", "causal": True}
    full = planted_bags(50, seed=0)  # every sentence labelled
    assert not first_error_annotated(full)
    assert scorer_spec(CONTEXT, full, None) == {"kind": "context", "causal": False}
    no_gold = replace(steps, gold=torch.full_like(steps.gold, -1))
    assert scorer_spec(CONTEXT, no_gold) == {"kind": "context", "causal": False}
    assert scorer_spec(replace(CONTEXT, context_direction="causal"), no_gold)["causal"] is True
    assert scorer_spec(TrainConfig(), steps) == {"kind": "mlp"}


def test_context_scorer_sees_what_the_mlp_cannot() -> None:
    train, valid, test = _step_bags(400, 1), _step_bags(80, 2), _step_bags(300, 3)
    aucs = {}
    for kind in ("mlp", "context"):
        config = replace(CONTEXT, scorer=kind)
        model = fit_method("supervised", FitContext(train, valid, "max", 2, config, 0))
        assert isinstance(model.model, ContextScorer) == (kind == "context")
        labelled = test.gold >= 0
        aucs[kind] = auc_roc(test.gold[labelled].numpy(), _scores(model.model, test)[labelled].numpy())
    assert aucs["mlp"] < 0.65
    assert aucs["context"] > 0.9


@pytest.mark.parametrize("method", ["bagloss", "priors", "pslab", "hybrid", "supervised"])
def test_every_method_learns_a_contextual_task_with_the_context_scorer(method: str) -> None:
    """Every loss trains the context scorer unchanged: on steps that are wrong when they repeat an earlier
    step, each method finds them from response labels (and 10% gold where it uses gold)."""
    train, valid, test = _step_bags(300, 1), _step_bags(60, 2), _step_bags(200, 3)
    train = replace(
        train, gold=torch.where(train.bag_index < 30, train.gold, torch.full_like(train.gold, -1))
    )
    valid = replace(valid, gold=torch.full_like(valid.gold, -1))
    config = replace(CONTEXT, pslab=True)
    result = fit_method(method, FitContext(train, valid, "max", 2, config, 0))
    assert isinstance(result.model, ContextScorer) and result.model.causal
    labelled = test.gold >= 0
    assert auc_roc(test.gold[labelled].numpy(), _scores(result.model, test)[labelled].numpy()) >= 0.9


def test_save_and_load_keep_the_context_scorer(tmp_path: Path) -> None:
    train, test = _step_bags(120, 1), _step_bags(40, 3)
    model = FractalModel("supervised", config=replace(CONTEXT, max_epochs=3), seed=0).fit_bags(
        train, None, aggregation="max", n_classes=2
    )
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["scorer"] == {
        "kind": "context",
        "causal": True,
        "products": True,
        "rank": 64,
    }
    loaded = FractalModel.load(tmp_path / "m")
    assert isinstance(loaded.scorer_, ContextScorer) and loaded.scorer_.causal
    torch.testing.assert_close(loaded.predict_bags(test), model.predict_bags(test))


def test_build_scorer_kinds() -> None:
    assert type(build_scorer({"kind": "mlp"}, 8, n_classes=2, hidden=None)) is SentenceScorer
    assert not build_scorer(
        {"kind": "context", "causal": False, "products": True}, 8, n_classes=3, hidden=None
    ).causal  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown scorer"):
        build_scorer({"kind": "lstm"}, 8, n_classes=2, hidden=None)
