"""The one entry point of a training job (fractal_core.fitting.pipeline) on a planted task with a stand-in encoder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fractal_core.data.records import ResponseRecord, Span
from fractal_core.fitting import pipeline, registry
from fractal_core.fitting.bags import BagSet
from fractal_core.fitting.config import TrainConfig
from fractal_core.fitting.estimator import FractalModel
from fractal_core.mil import semantics

DIM = 16
FAST = TrainConfig(max_epochs=15, patience=15, learning_rate=5e-3)


class CountingEncoder:
    """Deterministic embeddings (a sentence with "wrong" leans along one axis); counts what it embeds."""

    encoder_id = "test-encoder"

    def __init__(self) -> None:
        self.sentence_calls = 0
        self.window_calls = 0

    def _vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        v = np.random.default_rng(seed).normal(size=DIM)
        v[0] += 4.0 if "wrong" in text else -4.0
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, texts, *, progress=None, show_progress=False) -> np.ndarray:
        self.sentence_calls += 1
        if progress is not None:
            progress(len(texts), len(texts))
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def encode_windows(self, texts, *, max_words=200, stride_words=150):
        self.window_calls += 1
        return np.stack([self._vec("context") for _ in texts]), np.arange(len(texts), dtype=np.int64)


@pytest.fixture
def encoder(monkeypatch: pytest.MonkeyPatch) -> CountingEncoder:
    fake = CountingEncoder()
    monkeypatch.setattr(pipeline, "get_encoder", lambda config=None: fake)
    return fake


def _records(n: int = 60) -> list[ResponseRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        k = int(rng.integers(2, 5))
        bad = int(rng.integers(0, k)) if i % 2 else -1
        texts = [f"step {j} of {i} is {'wrong' if j == bad else 'fine'}" for j in range(k)]
        labels = [int(j == bad) for j in range(k)] if i % 10 == 1 else None  # gold on a few responses
        spans, pos = [], 0
        for s in texts:
            spans.append(Span(pos, pos + len(s), s))
            pos += len(s) + 1
        out.append(ResponseRecord(f"r{i}", "Q?", " ".join(texts), spans, float(i % 2), "max", labels))
    return out


def test_train_and_score_embeds_once_and_returns_aligned_arrays(encoder: CountingEncoder) -> None:
    records = _records()
    n = sum(len(r.spans) for r in records)
    sentence_ids = np.arange(1000, 1000 + n)
    response_ids = np.arange(5000, 5000 + len(records))
    seen: list[str] = []
    result = pipeline.train_and_score(
        records,
        sentence_ids=sentence_ids,
        response_ids=response_ids,
        config=FAST,
        file_labels=np.where(np.arange(n) % 3 == 0, 0, -1),
        queue_size=5,
        progress=lambda stage, fraction, message: seen.append(stage),
    )
    assert (encoder.sentence_calls, encoder.window_calls) == (1, 1)  # one look-up for fit, score and queue
    assert result.stages == registry.training_stages("fractal", has_gold=True, aggregation="max", config=FAST)
    assert [s for s in dict.fromkeys(seen)] == [registry.STAGE_EMBED, *result.stages]
    scored = result.scored
    assert np.array_equal(scored.sentence_ids, sentence_ids) and np.array_equal(
        scored.response_ids, response_ids
    )
    assert scored.scores.shape == (n,) and scored.summaries.score.shape == (len(records),)
    # The library learned the planted task, and every figure is the semantics of those scores.
    wrong = np.array(["wrong" in s.text for r in records for s in r.spans])
    assert scored.scores[wrong].mean() > scored.scores[~wrong].mean() + 0.3
    index = np.repeat(np.arange(len(records)), [len(r.spans) for r in records])
    expected = semantics.summarise(
        scored.scores, index, np.array([r.response_label for r in records]), aggregation="max", variant="hard"
    )
    np.testing.assert_allclose(scored.summaries.disagreement, expected.disagreement)
    np.testing.assert_allclose(scored.uncertainty, semantics.uncertainty(scored.scores))
    assert scored.summaries.consistent[1] == 1 and scored.summaries.consistent[0] == -1
    # Proposals: every queue strategy, the caller's response ids, never a response that has gold labels.
    assert set(scored.gold_proposals) == set(registry.QUEUE_STRATEGIES)
    gold_ids = {5000 + i for i, r in enumerate(records) if r.sentence_labels is not None}
    for picks in scored.gold_proposals.values():
        assert len(picks) == 5 and not set(picks.tolist()) & gold_ids
        assert set(picks.tolist()) <= set(response_ids.tolist())
    assert {k: len(v) for k, v in scored.gold_reasons.items()} == {k: 5 for k in registry.QUEUE_STRATEGIES}
    assert result.n_gold_responses == len(gold_ids) and result.gold_metrics["instance_auc_roc"] > 0.8
    assert result.file_label_metrics  # more labels than the gold ones: measured separately
    assert result.previous_gold_metrics == {}


def test_score_records_and_the_previous_model_on_the_same_gold(encoder: CountingEncoder) -> None:
    records = _records(40)
    n = sum(len(r.spans) for r in records)
    ids = np.arange(n)
    first = pipeline.train_and_score(records, sentence_ids=ids, response_ids=np.arange(40), config=FAST)
    second = pipeline.train_and_score(
        records, sentence_ids=ids, response_ids=np.arange(40), config=FAST, seed=1, previous=first.model
    )
    assert second.previous_gold_metrics == pytest.approx(first.gold_metrics, nan_ok=True)
    again = pipeline.score_records(first.model, records, sentence_ids=ids, response_ids=np.arange(40))
    np.testing.assert_allclose(again.scores, first.scored.scores, atol=1e-6)
    with pytest.raises(ValueError, match="sentence_ids must be"):
        pipeline.score_records(first.model, records, sentence_ids=ids[:-1], response_ids=np.arange(40))


class HalfExactEncoder(CountingEncoder):
    """The stand-in with the real encoder's property that matters here: its vectors are float16-exact."""

    def _vec(self, text: str) -> np.ndarray:
        return super()._vec(text).astype(np.float16).astype(np.float32)


def _mapped_ranges(path: str) -> list[tuple[int, int]]:
    """Address ranges of this process mapping ``path`` (Linux /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text(encoding="utf-8").splitlines():
        if line.rstrip().endswith(path):
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_a_job_trains_and_scores_over_memory_mapped_float16_with_the_scores_of_in_memory_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = HalfExactEncoder()
    monkeypatch.setattr(pipeline, "get_encoder", lambda config=None: fake)
    records = _records(80)
    n = sum(len(r.spans) for r in records)
    seen: dict[str, object] = {}
    embed = pipeline.embed_records

    def spy_embed(*args: object, **kwargs: object) -> BagSet:
        bags = embed(*args, **kwargs)  # type: ignore[arg-type]
        path = os.path.join(str(kwargs["store"]), "sentences.npy")
        seen["ranges"] = _mapped_ranges(path)
        seen["full"] = bags
        return bags

    fit_bags = FractalModel.fit_bags

    def spy_fit(self: FractalModel, train: BagSet, valid: BagSet | None = None, **kwargs: object) -> object:
        seen["train"], seen["valid"] = train, valid
        return fit_bags(self, train, valid, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "embed_records", spy_embed)
    monkeypatch.setattr(FractalModel, "fit_bags", spy_fit)
    ids = np.arange(n)
    streamed = pipeline.train_and_score(records, sentence_ids=ids, response_ids=np.arange(80), config=FAST)

    def mapped(t: torch.Tensor) -> bool:
        return any(lo <= t.data_ptr() < hi for lo, hi in seen["ranges"])  # type: ignore[attr-defined]

    full, train, valid = seen["full"], seen["train"], seen["valid"]
    assert isinstance(full, BagSet) and isinstance(train, BagSet) and isinstance(valid, BagSet)
    # The sentence matrix is the float16 file, and training reads its two ranges of it: nothing upcast or copied.
    assert full.sent_emb.dtype == torch.float16 and mapped(full.sent_emb)
    assert train.sent_emb.dtype == torch.float16 and mapped(train.sent_emb) and mapped(valid.sent_emb)
    assert train.n_bags + valid.n_bags == 80 and valid.n_bags > 0
    # Every gather from it drops the pages it mapped (fractal_core.embedding.mapped), the views' gathers included.
    assert full.sent_pages is not None and train.sent_pages is full.sent_pages is valid.sent_pages
    assert full.sent_pages.releases > 0

    # The same training on the whole set as float32 in memory, split by selection (the path before streaming).
    monkeypatch.setattr(FractalModel, "fit_bags", fit_bags)
    bags = embed(records, fake)
    assert bags.sent_emb.dtype == torch.float32
    model = FractalModel("fractal", config=FAST, seed=0).fit_prepared(
        bags, aggregation="max", n_classes=2, encoder_id=fake.encoder_id
    )
    expected = model.predict_bags(bags).double().numpy()
    np.testing.assert_array_equal(streamed.scored.sentence_ids, ids)
    np.testing.assert_allclose(streamed.scored.scores, expected, atol=1e-6)
    assert streamed.model.resolved_method_ == model.resolved_method_
    again = pipeline.score_records(streamed.model, records, sentence_ids=ids, response_ids=np.arange(80))
    np.testing.assert_allclose(again.scores, streamed.scored.scores, atol=1e-6)
