"""TrainConfig.calibrate: Platt scaling of a binary scorer to held-out response labels, kept with the model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.calibration import fit_calibration
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel
from tests.fractal_core.synthetic import planted_bags


def _logp(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], 1)


def test_bag_labels_alone_recover_a_distorted_logit() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 9, (4000,), generator=g)
    bag_index = torch.repeat_interleave(torch.arange(4000), sizes)
    true_z = torch.randn(bag_index.shape[0], generator=g) * 1.5 - 2.0
    y = (torch.rand(true_z.shape, generator=g) < torch.sigmoid(true_z)).float()
    labels = torch.zeros(4000).scatter_reduce(0, bag_index, y, "amax")
    bags = BagSet(
        sent_emb=torch.zeros(len(y), 2),
        bag_index=bag_index,
        ctx_emb=torch.zeros(4000, 2),
        win_bag=torch.arange(4000),
        labels=labels,
        gold=torch.full((len(y),), -1),
    )
    fitted = fit_calibration(_logp((true_z - 0.7) / 2.0), bags, aggregation="max", n_classes=2, kind="logit")
    assert fitted.to_dict()["scale"] == pytest.approx(2.0, rel=0.1)
    assert fitted.to_dict()["shift"] == pytest.approx(0.7, abs=0.15)


def test_calibrated_model_keeps_its_ranking_and_saves_the_map(tmp_path: Path) -> None:
    train, valid, test = planted_bags(300, seed=1), planted_bags(80, seed=2), planted_bags(100, seed=3)
    train = replace(train, gold=torch.full_like(train.gold, -1))
    valid = replace(valid, gold=torch.full_like(valid.gold, -1))
    config = TrainConfig(max_epochs=5)
    off = FractalModel("bagloss", config=config, seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    on = FractalModel("bagloss", config=replace(config, calibrate=True), seed=0).fit_bags(
        train, valid, aggregation="max", n_classes=2
    )
    assert off.calibration_ is None and on.calibration_ is not None and on.calibration_["kind"] == "logit"
    a, b = on.predict_bags(test), off.predict_bags(test)
    assert not torch.allclose(a, b)
    assert torch.equal(torch.argsort(a, stable=True), torch.argsort(b, stable=True))  # same order
    on.save(tmp_path / "m")
    torch.testing.assert_close(FractalModel.load(tmp_path / "m").predict_bags(test), a)
    ordinal = planted_bags(200, n_classes=3, seed=1)
    three = FractalModel("bagloss", config=replace(config, calibrate=True), seed=0).fit_bags(
        replace(ordinal, gold=torch.full_like(ordinal.gold, -1)), None, aggregation="max", n_classes=3
    )
    assert three.calibration_ is None  # measured on binary step data only
