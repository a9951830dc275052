"""The joint training job in the library (fractal_core.fitting.criteria_pipeline): every criterion's own records
and ids in, one fit, and per criterion what a single training job returns, scored by its part of the model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fractal_core.data.records import ResponseRecord
from fractal_core.fitting import registry
from fractal_core.fitting.criteria_pipeline import (
    CriterionData,
    joint_records,
    joint_stages,
    train_and_score_criteria,
)
from fractal_core.fitting.estimator import FractalModel
from tests.fractal_core.test_pipeline import FAST, CountingEncoder, _records, encoder

__all__ = ["encoder"]  # the stand-in encoder fixture, shared with the single-criterion pipeline's tests


def _correct_view(records: list[ResponseRecord]) -> list[ResponseRecord]:
    """The same responses judged on "correct" (min bags: a step is 1 when it is not wrong)."""
    out = []
    for r in records:
        gold = None if r.sentence_labels is None else [1 - int(v or 0) for v in r.sentence_labels]
        out.append(replace(r, response_label=1.0 - r.response_label, aggregation="min", sentence_labels=gold))
    return out


def _data(records: list[ResponseRecord], offset: int) -> CriterionData:
    n = sum(len(r.spans) for r in records)
    return CriterionData(records, np.arange(offset, offset + n), np.arange(offset, offset + len(records)))


def test_one_fit_scores_every_criterion_with_its_own_ids(
    encoder: CountingEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fractal_core.fitting import criteria_model

    records = _records(60)
    data = {"wrong": _data(records, 1000), "correct": _data(_correct_view(records), 9000)}
    seen: list[str] = []
    result = train_and_score_criteria(
        data, method="priors", config=FAST, queue_size=4, progress=lambda s, f, m: seen.append(s)
    )
    assert (encoder.sentence_calls, encoder.window_calls) == (1, 1)  # the shared sentences embedded once
    assert result.stages == joint_stages("priors", ["max", "min"], FAST) == (registry.STAGE_BAG,)
    assert list(dict.fromkeys(seen)) == [registry.STAGE_EMBED, registry.STAGE_BAG]
    assert list(result.results) == ["wrong", "correct"] and result.model.names == ["wrong", "correct"]
    wrong = np.array(["wrong" in s.text for r in records for s in r.spans])
    for name, part in data.items():
        got = result.results[name]
        assert isinstance(got.model, FractalModel) and got.model.aggregation_ == part.records[0].aggregation
        assert np.array_equal(got.scored.sentence_ids, part.sentence_ids)
        assert np.array_equal(got.scored.response_ids, part.response_ids)
        for picks in got.scored.gold_proposals.values():
            assert set(picks.tolist()) <= set(part.response_ids.tolist())
        assert got.n_gold_responses == 6 and got.gold_metrics["instance_auc_roc"] > 0.8
        # What is stored for the criterion is its part of the joint model's scores (the job read float16
        # embeddings from its file, predict embeds again in float32: equal up to that rounding).
        monkeypatch.setattr(criteria_model, "get_encoder", lambda config=None: encoder)
        joint = np.concatenate(result.model.predict(part.records, criterion=name)[name])
        np.testing.assert_allclose(got.scored.scores, joint, atol=1e-3)
    # Each criterion learned its own direction: "wrong" steps score high on one, low on the other.
    assert result.results["wrong"].scored.scores[wrong].mean() > 0.6
    assert result.results["correct"].scored.scores[wrong].mean() < 0.4


def test_the_criteria_must_hold_the_same_responses_and_sentences(encoder: CountingEncoder) -> None:
    records = _records(12)
    other = _correct_view(records)
    with pytest.raises(ValueError, match="same responses"):
        joint_records({"wrong": records, "correct": other[:-1]})
    moved = [*other[:3], replace(other[3], spans=other[3].spans[:-1]), *other[4:]]
    with pytest.raises(ValueError, match="'r3'.*same sentences"):
        joint_records({"wrong": records, "correct": moved})
    merged = joint_records({"wrong": records, "correct": other})
    assert list(merged[1].criteria or {}) == ["wrong", "correct"]
    assert merged[1].criteria["correct"].aggregation == "min"  # type: ignore[index]
    with pytest.raises(ValueError, match="bagloss, priors, pslab"):
        train_and_score_criteria({"wrong": _data(records, 0)}, method="hybrid", config=FAST)
