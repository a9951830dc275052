"""The FractalModel facade on real records with the bundled encoder: fit, predict, save/load, preferences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fractal_core import FractalModel, TrainConfig
from fractal_core.data.demo import demo_path
from fractal_core.data.io import read_records

pytestmark = pytest.mark.slow  # trains on embeddings of the bundled encoder


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """One embedding cache for the module, holding the demo's shipped vectors of the bundled encoder (what the
    app loads for the demo, ``app.job_embed``): the tests train and score on them without the minute of CPU it
    takes to embed them again here; the encoder's own forward pass is tested in test_encoder.py."""
    from fractal_core.data.demo import demo_embeddings_path
    from fractal_core.embedding.encoder import get_encoder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRACTAL_HOME", str(tmp_path_factory.mktemp("home")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        cache = get_encoder().cache  # the encoder FractalModel uses (one per config in a process)
        assert cache is not None
        cache.import_pack(demo_embeddings_path(), get_encoder().encoder_id)
        yield


@pytest.fixture(scope="module")
def records():
    return read_records(demo_path())[:40]


def test_fit_predict_save_load(records, tmp_path: Path) -> None:
    events: list[tuple[str, float]] = []
    model = FractalModel("pslab", config=TrainConfig(max_epochs=2), seed=0).fit(
        records, progress=lambda stage, fraction, message: events.append((stage, fraction))
    )
    assert model.resolved_method_ == "pslab"
    stages = [stage for stage, _ in events]
    assert stages[0] == "embed" and {"bag", "pslab"} <= set(stages)
    assert all(0.0 <= fraction <= 1.0 for _, fraction in events)
    scores = model.predict(records[:5])
    assert [len(s) for s in scores] == [len(r.spans) for r in records[:5]]
    assert all(((s >= 0) & (s <= 1)).all() for s in scores)
    model.save(tmp_path / "m")
    again = FractalModel.load(tmp_path / "m").predict(records[:5])
    for a, b in zip(scores, again, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert (
        "valid_bag_auc_roc" in model.metrics_
    )  # a held-out share of the responses was used for early stopping


def test_fractal_chooses_by_gold_when_present_else_by_bag_likelihood(records, tmp_path) -> None:
    # The demo file carries sentence labels: "fractal" (= auto) judges candidates by cross-fitted gold AUC ...
    model = FractalModel("fractal", config=TrainConfig(max_epochs=1)).fit(records)
    assert model.selection_ is not None and model.selection_["criterion"].startswith("gold_auc_given_y")
    names = [c["name"] for c in model.selection_["candidates"]]
    # The demo is step data whose gold stops at each first error: the hazard method is a candidate too.
    assert {"prior_only(calibrated)", "bagloss", "priors(cosine=0.1)", "hybrid", "hazard"} == set(names)
    chosen = next(c for c in model.selection_["candidates"] if c["chosen"])
    hybrid = next(c for c in model.selection_["candidates"] if c["name"] == "hybrid")
    # Hybrid is kept unless another candidate beats its gold AUC given the label (by more than the band).
    assert chosen is hybrid or chosen["score"] > hybrid["score"]
    assert model.resolved_method_ == chosen["method"]
    # ... and by the held-out bag likelihood without them; the record survives save/load.
    for r in records:
        r.sentence_labels = None
    model = FractalModel("fractal", config=TrainConfig(max_epochs=1)).fit(records)
    assert model.selection_ is not None and model.selection_["criterion"] == "valid_bag_log_likelihood"
    assert "hybrid" not in [c["name"] for c in model.selection_["candidates"]]
    model.save(tmp_path / "auto")
    again = FractalModel.load(tmp_path / "auto")
    assert again.selection_ == json.loads(json.dumps(model.selection_))
    for a, b in zip(model.predict(records[:5]), again.predict(records[:5]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_fit_preferences(records) -> None:
    pairs = [
        (i, i + 1, float(records[i + 1].response_label < records[i].response_label))
        for i in range(len(records) - 1)
    ]
    model = FractalModel(config=TrainConfig(max_epochs=2)).fit_preferences(records, pairs)
    # The records carry labels of their own: by default they train beside the pairs, under their aggregation.
    assert model.resolved_method_ == "preference+labels" and model.aggregation_ == records[0].aggregation
    alone = FractalModel(config=TrainConfig(max_epochs=2))
    assert alone.fit_preferences(records, pairs, response_labels="alone").resolved_method_ == "preference"
    assert len(model.predict(records[:3])) == 3
    with pytest.raises(ValueError, match="outside"):
        FractalModel().fit_preferences(records, [(0, len(records), 1.0)])
