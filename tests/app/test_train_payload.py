"""A training job's payload is checked when the job is queued: a bad value is refused with its field named."""

from __future__ import annotations

import pytest

from app import actions
from app.jobs import TrainPayload
from db import accounts
from db import repository as repo
from fractal_core.errors import InputError
from tests.app.data import tiny_records


def test_a_good_payload_round_trips() -> None:
    payload = {"dataset_id": 3, "method": "bagloss", "config": {"max_epochs": 2}, "seed": 1}
    parsed = TrainPayload.parse(payload)
    assert parsed.config.max_epochs == 2 and parsed.config.learning_rate == 1e-3
    assert parsed.to_dict() == payload
    assert TrainPayload.parse({"dataset_id": 3}).method == "fractal"
    # A pairs dataset's choice of the responses' own labels is kept; absent, the library's default applies.
    alone = {**payload, "response_labels": "alone"}
    assert TrainPayload.parse(alone).to_dict() == alone
    assert TrainPayload.parse(payload).response_labels is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"dataset_id": 1, "config": {"learning_rate": -1}}, "config.learning_rate"),
        ({"dataset_id": 1, "config": {"bag_variant": "soft"}}, "config.bag_variant"),
        ({"dataset_id": 1, "config": {"max_epochs": 2.5}}, "config.max_epochs"),
        ({"dataset_id": 1, "config": {"pslab": "yes"}}, "config.pslab"),
        ({"dataset_id": 1, "config": {"epochs": 3}}, "config.epochs"),
        ({"dataset_id": 1, "config": {"weights": {"cosine": -0.1}}}, "config.weights.cosine"),
        ({"dataset_id": 1, "method": "magic"}, "method"),
        ({"dataset_id": 1, "seed": "0"}, "seed"),
        ({"dataset_id": "1"}, "dataset_id"),
        ({"dataset_id": 1, "response_labels": "both"}, "response_labels"),
        ({"dataset_id": 1, "response_labels": 1}, "response_labels"),
    ],
)
def test_a_bad_value_is_refused_with_its_field(payload: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        TrainPayload.parse(payload)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")


def test_start_training_refuses_a_bad_setting_before_queueing(store) -> None:
    dataset = store.ingest(tiny_records(6))
    accounts.add_user(store.engine, "boss", "admin", "a long enough password")
    boss = accounts.get_user(store.engine, "boss")
    assert boss is not None
    with pytest.raises(InputError, match=r"^config\.patience: "):
        actions.start_training(store.engine, boss, dataset.dataset_id, "bagloss", {"patience": 0}, 0)
    assert repo.list_jobs(store.engine, kind="train") == []
    job = actions.start_training(store.engine, boss, dataset.dataset_id, "bagloss", {"patience": 2}, 0)
    assert job.payload == {
        "dataset_id": dataset.dataset_id,
        "method": "bagloss",
        "config": {"patience": 2},
        "seed": 0,
    }
