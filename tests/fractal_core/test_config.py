"""Settings check themselves on creation: a bad field is refused with its name, a good config round-trips."""

from __future__ import annotations

import pytest

from fractal_core.embedding.encoder import EncoderConfig
from fractal_core.errors import InputError
from fractal_core.fitting.config import LossWeights, TrainConfig
from fractal_core.mil.variants import DEFAULT_BAG_VARIANT


def test_defaults_and_round_trip() -> None:
    config = TrainConfig(weights=LossWeights(correlation=0.2), hidden=16, learning_rate=0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig().bag_variant == DEFAULT_BAG_VARIANT


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"bag_variant": "max"}, "bag_variant"),
        ({"proportion_loss": "l1"}, "proportion_loss"),
        ({"lse_temperature": 0.0}, "lse_temperature"),
        ({"scorer": "rnn"}, "scorer"),
        ({"context_direction": "forward"}, "context_direction"),
        ({"calibrate": 1}, "calibrate"),
        ({"hidden": 0}, "hidden"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"batch_bags": 0}, "batch_bags"),
        ({"min_batches_per_epoch": 1.0}, "min_batches_per_epoch"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"patience": True}, "patience"),
        ({"valid_metric": "loss"}, "valid_metric"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"device": ""}, "device"),
        ({"cpu_threads": -1}, "cpu_threads"),
        ({"min_gold_for_valid": "20"}, "min_gold_for_valid"),
        ({"weights": {"bag": 1.0}}, "weights"),
    ],
)
def test_train_config_names_the_bad_field(changes: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        TrainConfig(**changes)
    assert err.value.field == field and isinstance(err.value, ValueError)


def test_loss_weights_and_from_dict_name_the_field() -> None:
    with pytest.raises(InputError, match=r"^weights\.hybrid: "):
        LossWeights(hybrid=-0.5)
    with pytest.raises(InputError, match=r"^weights\.prior: unknown setting"):
        TrainConfig.from_dict({"weights": {"prior": 0.1}})
    with pytest.raises(InputError, match=r"^max_epoch: unknown setting"):
        TrainConfig.from_dict({"max_epoch": 3})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"precision": "fp8"}, "precision"),
        ({"batch_tokens": 0}, "batch_tokens"),
        ({"max_length": 1}, "max_length"),
        ({"model_path": ""}, "model_path"),
        ({"device": 0}, "device"),
        ({"cache_dir": 3}, "cache_dir"),
    ],
)
def test_encoder_config_names_the_bad_field(changes: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        EncoderConfig(**changes)
    assert err.value.field == field
    assert EncoderConfig(cache_dir="", precision="onnx-int8").precision == "onnx-int8"
