"""The suite end to end on a planted task, plus bags, metrics and persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractal_core.evaluation.metrics import auc_roc, average_precision, first_error_accuracy
from fractal_core.fitting import methods
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.context import FitContext
from fractal_core.fitting.estimator import FractalModel
from fractal_core.fitting.fit import fit_method
from fractal_core.fitting.methods import implied_labels
from fractal_core.mil.aggregate import positive_score
from tests.fractal_core.synthetic import planted_bags

FAST = TrainConfig(max_epochs=60, patience=8, learning_rate=2e-3, pslab=True)  # these tests exercise PsLab


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster (and identically) on one thread; the machine's cores are shared in CI."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _auc(model, bags) -> float:
    with torch.inference_mode():
        score = positive_score(model(bags))
    return auc_roc((bags.gold >= 1).numpy(), score.numpy())


def _split(aggregation: str = "max", n_classes: int = 2, rate: float = 0.2):
    train = planted_bags(400, aggregation=aggregation, n_classes=n_classes, positive_rate=rate, seed=1)
    valid = planted_bags(80, aggregation=aggregation, n_classes=n_classes, positive_rate=rate, seed=2)
    test = planted_bags(200, aggregation=aggregation, n_classes=n_classes, positive_rate=rate, seed=3)
    train.gold = torch.full_like(train.gold, -1)  # weak supervision only
    valid.gold = torch.full_like(valid.gold, -1)  # early stopping on the bag loss
    return train, valid, test


@pytest.mark.parametrize(
    ("aggregation", "n_classes", "rate"), [("max", 2, 0.2), ("min", 2, 0.8), ("max", 3, 0.3)]
)
def test_pslab_recovers_planted_sentence_labels(aggregation: str, n_classes: int, rate: float) -> None:
    train, valid, test = _split(aggregation, n_classes, rate)
    result = fit_method("pslab", FitContext(train, valid, aggregation, n_classes, FAST, 0))
    assert [s.stage for s in result.stages] == ["bag", "pslab"]
    assert _auc(result.model, test) >= 0.9


def test_llp_mean_bags_learn_without_pslab() -> None:
    train, valid, test = _split("mean")
    result = fit_method("pslab", FitContext(train, valid, "mean", 2, FAST, 0))
    assert [s.stage for s in result.stages] == ["bag"]  # PsLab is undefined for proportions
    assert _auc(result.model, test) >= 0.9


def test_hybrid_and_supervised_use_gold_labels_only_where_given() -> None:
    train, valid, test = _split()
    full = planted_bags(400, seed=1).gold
    gold = torch.full_like(full, -1)
    first_bags = train.bag_index < 40  # 10% of the bags carry gold labels
    gold[first_bags] = full[first_bags]
    train.gold = gold
    assert FitContext(train, None, "max", 2).plan("fractal").pipeline == "auto"
    hybrid = fit_method("hybrid", FitContext(train, valid, "max", 2, FAST, 0))
    assert [s.stage for s in hybrid.stages] == ["hybrid-teacher", "bag", "pslab"]
    assert _auc(hybrid.model, test) >= 0.9
    supervised = fit_method("supervised", FitContext(train, valid, "max", 2, FAST, 0))
    assert _auc(supervised.model, test) >= 0.9


def test_methods_needing_gold_refuse_without_it() -> None:
    train, _, _ = _split()
    assert FitContext(train, None, "max", 2).plan("fractal").pipeline == "auto"
    # The method named "pslab" ends with PsLab whatever the config's default is.
    no_default = TrainConfig(max_epochs=1, pslab=False)
    stages = fit_method("pslab", FitContext(train, None, "max", 2, no_default, 0)).stages
    assert [s.stage for s in stages] == ["bag", "pslab"]
    with pytest.raises(ValueError, match="gold sentence labels"):
        FitContext(train, None, "max", 2).plan("hybrid")
    with pytest.raises(ValueError, match="unknown method"):
        FitContext(train, None, "max", 2).plan("magic")


def test_training_is_deterministic_for_a_seed() -> None:
    train, valid, test = _split()
    config = TrainConfig(max_epochs=3)
    a = fit_method("priors", FitContext(train, valid, "max", 2, config, 4))
    b = fit_method("priors", FitContext(train, valid, "max", 2, config, 4))
    c = fit_method("priors", FitContext(train, valid, "max", 2, config, 5))
    with torch.inference_mode():
        sa, sb, sc = (positive_score(r.model(test)) for r in (a, b, c))
    assert torch.equal(sa, sb)
    assert not torch.equal(sa, sc)


def test_bagloss_beats_naive_and_prior_only_on_planted_task() -> None:
    train, valid, test = _split()
    scores = {}
    for method in ("naive", "prior_only", "bagloss"):
        model = FractalModel(method, config=FAST).fit_bags(train, valid, aggregation="max", n_classes=2)
        scores[method] = model.evaluate_bags(test)["instance_auc_roc"]
    assert scores["bagloss"] > scores["naive"] > 0.5
    assert scores["bagloss"] > scores["prior_only"]


def test_bag_selection_keeps_pairs_and_targets_aligned() -> None:
    bags = planted_bags(30, seed=0).with_cosine_target().with_correlation_pairs()
    picked = torch.tensor([7, 2, 19])
    sub = bags.select(picked)
    direct = planted_bags(30, seed=0).select(picked).with_cosine_target().with_correlation_pairs()
    for name in ("sent_emb", "bag_index", "labels", "gold", "cos_target", "pair_i", "pair_j", "pair_r"):
        torch.testing.assert_close(getattr(sub, name), getattr(direct, name))


def test_multiple_context_windows_take_the_best_window() -> None:
    bags = planted_bags(5, seed=0)
    model = fit_method("bagloss", FitContext(bags, None, "max", 2, TrainConfig(max_epochs=1), 0)).model
    doubled = type(bags)(
        **{
            **bags.__dict__,
            "ctx_emb": torch.cat([bags.ctx_emb, -bags.ctx_emb]),
            "win_bag": torch.cat([bags.win_bag, bags.win_bag]).sort().values,
        }
    )
    doubled.ctx_emb = torch.stack([bags.ctx_emb, -bags.ctx_emb], 1).reshape(-1, bags.ctx_emb.shape[1])
    with torch.inference_mode():
        one = positive_score(model(bags))
        flipped = type(bags)(**{**bags.__dict__, "ctx_emb": -bags.ctx_emb})
        other = positive_score(model(flipped))
        both = positive_score(model(doubled))
    torch.testing.assert_close(both, torch.maximum(one, other))


def test_exact_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500), 2)  # ties on purpose
    assert auc_roc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert np.isnan(auc_roc(np.zeros(4), np.arange(4)))


def test_first_error_accuracy() -> None:
    gold = np.array([0, 1, -1, 0, 0, 0, 1])
    score = np.array([0.1, 0.9, 0.95, 0.2, 0.1, 0.8, 0.3])
    bag_index = np.array([0, 0, 0, 1, 1, 2, 2])
    # bag 0: argmax is a later (unannotated) step -> miss; bag 1: no error; bag 2: argmax is step 0 -> miss
    assert first_error_accuracy(gold, score, bag_index, 3) == 0.0
    score[2] = 0.5
    assert first_error_accuracy(gold, score, bag_index, 3) == 0.5


def test_save_and_load_round_trip(tmp_path) -> None:
    train, valid, test = _split()
    model = FractalModel("bagloss", config=TrainConfig(max_epochs=2)).fit_bags(
        train, valid, aggregation="max", n_classes=2, encoder_id="planted"
    )
    model.save(tmp_path / "m")
    loaded = FractalModel.load(tmp_path / "m")
    torch.testing.assert_close(loaded.predict_bags(test), model.predict_bags(test))
    assert loaded.encoder_id_ == "planted" and loaded.resolved_method_ == "bagloss"


def test_preference_pairs_recover_planted_sentence_scores() -> None:
    from fractal_core.fitting.preference import fit_preference, preference_bags

    def pairs(bags, n_pairs: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        first = torch.randint(0, bags.n_bags, (n_pairs,), generator=g)
        second = torch.randint(0, bags.n_bags, (n_pairs,), generator=g)
        share = torch.zeros(bags.n_bags).index_add(0, bags.bag_index, (bags.gold >= 1).float())
        share = share / bags.sentence_counts().float()
        keep = share[first] != share[second]
        first, second = first[keep], second[keep]
        return preference_bags(bags, first, second, (share[second] > share[first]).float())

    train = planted_bags(300, seed=1, positive_rate=0.3)
    test = planted_bags(200, seed=3, positive_rate=0.3)
    result = fit_preference(
        pairs(train, 1200, 0), pairs(planted_bags(80, seed=2, positive_rate=0.3), 200, 1), config=FAST, seed=0
    )
    assert [s.stage for s in result.stages] == ["preference"]
    assert _auc(result.model, test) >= 0.9


def test_preference_bags_keep_pairs_together() -> None:
    from fractal_core.fitting.preference import preference_bags
    from fractal_core.fitting.train import train_stage

    bags = planted_bags(10, seed=0)
    paired = preference_bags(
        bags, torch.tensor([0, 3, 3]), torch.tensor([1, 2, 9]), torch.tensor([1.0, 0.0, 1.0])
    )
    assert paired.n_bags == 6 and paired.labels.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    seen = []

    def objective(model, batch):
        seen.append(batch.sent_emb.shape[0])
        assert batch.n_bags % 2 == 0
        return model(batch).sum() * 0.0

    from fractal_core.fitting.model import SentenceScorer

    train_stage(
        SentenceScorer(32),
        paired,
        objective,
        config=TrainConfig(max_epochs=1, min_batches_per_epoch=10),
        generator=torch.Generator().manual_seed(0),
        group_size=2,
    )
    assert len(seen) == 3  # three batches of one pair each, never a split pair


def test_posterior_view_beats_naive_where_the_model_ranks_within_bags() -> None:
    train, valid, test = _split()
    model = FractalModel("bagloss", config=FAST).fit_bags(train, valid, aggregation="max", n_classes=2)
    naive = FractalModel("naive").fit_bags(train, valid, aggregation="max", n_classes=2)
    learned, free = model.evaluate_bags(test), naive.evaluate_bags(test)
    assert free["posterior_auc_roc"] == free["instance_auc_roc"]  # naive is its own posterior
    assert learned["posterior_auc_roc"] > free["posterior_auc_roc"]
    assert learned["posterior_auc_roc"] >= learned["instance_auc_roc"]


def _hand_bags(labels: list[float], gold: list[int]) -> BagSet:
    """Three bags of sizes 2, 1, 3 with the given bag labels and sentence gold."""
    bag_index = torch.tensor([0, 0, 1, 2, 2, 2])
    return BagSet(
        sent_emb=torch.zeros(6, 4),
        bag_index=bag_index,
        ctx_emb=torch.zeros(3, 4),
        win_bag=torch.arange(3),
        labels=torch.tensor(labels),
        gold=torch.tensor(gold),
    )


@pytest.mark.parametrize(
    ("aggregation", "labels", "n_classes", "expected"),
    [
        ("max", [0.0, 1.0, 0.0], 2, [0, 0, -1, 0, 0, 0]),  # a 0 response has only 0 sentences
        ("max", [2.0, 0.0, 1.0], 3, [-1, -1, 0, -1, -1, -1]),  # Y > 0 only bounds levels: no label
        ("min", [1.0, 0.0, 1.0], 2, [1, 1, -1, 1, 1, 1]),  # a 1 response has only 1 sentences
        ("min", [1.0, 2.0, 0.0], 3, [-1, -1, 2, -1, -1, -1]),  # only the top level is implied
        ("mean", [0.0, 1.0, 0.5], 2, [-1] * 6),
    ],
)
def test_implied_labels_follow_the_aggregation(
    aggregation: str, labels: list[float], n_classes: int, expected: list[int]
) -> None:
    bags = _hand_bags(labels, [-1] * 6)
    got = implied_labels(bags, aggregation, n_classes=n_classes)
    assert got.dtype == torch.long
    assert got.tolist() == expected


def test_implied_labels_refuse_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="aggregation"):
        implied_labels(_hand_bags([0.0, 0.0, 0.0], [-1] * 6), "median")


def test_teacher_with_implied_labels_trains_on_more_bags_and_gold_wins(monkeypatch) -> None:
    train, valid, _ = _split()
    full = planted_bags(400, seed=1).gold
    first_bags = train.bag_index < 40
    train.gold = torch.where(first_bags, full, torch.full_like(full, -1))
    seen: dict[tuple[bool, str], BagSet] = {}
    real_train_stage = methods.train_stage

    def spy(model, data, objective, **kwargs):
        seen[(flag, kwargs["stage"])] = data
        return real_train_stage(model, data, objective, **kwargs)

    monkeypatch.setattr(methods, "train_stage", spy)
    for flag in (False, True):
        config = TrainConfig(max_epochs=2, patience=1, teacher_implied=flag)
        fit_method("hybrid", FitContext(train, valid, "max", 2, config, 0))
    off, on = seen[(False, "hybrid-teacher")], seen[(True, "hybrid-teacher")]
    n_gold_bags = 40
    n_zero_bags = int((train.labels[40:] == 0).sum())
    assert off.n_bags == n_gold_bags
    assert n_zero_bags > 0 and on.n_bags == n_gold_bags + n_zero_bags
    # Gold bags keep their gold labels (positives included); the added bags carry only implied zeros.
    assert int((on.gold >= 0).sum()) == int(on.gold.numel())
    assert int((on.gold == 1).sum()) == int((full[first_bags] == 1).sum())
    # The later stages still see gold only: implied labels do not leak into the bag/PsLab stages.
    assert torch.equal(seen[(True, "bag")].gold, train.gold)


def test_zero_weight_terms_are_dropped_and_all_zero_is_refused() -> None:
    from fractal_core.fitting.config import LossWeights

    train, valid, _ = _split()
    priors_only = TrainConfig(
        max_epochs=1, weights=LossWeights(bag=0.0, cosine=1.0, correlation=0.0, hybrid=0.0)
    )
    result = fit_method("priors", FitContext(train, valid, "max", 2, priors_only, 0))
    assert result.model is not None
    nothing = TrainConfig(max_epochs=1, weights=LossWeights(bag=0.0, cosine=0.0, correlation=0.0, hybrid=0.0))
    with pytest.raises(ValueError, match="sum to 0"):
        fit_method("bagloss", FitContext(train, valid, "max", 2, nothing, 0))
