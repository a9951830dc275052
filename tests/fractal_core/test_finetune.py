"""End-to-end fine-tuning with the bag loss (fractal_core.experimental.finetune): a tiny random BERT on planted bags, on CPU."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fractal_core.data.records import ResponseRecord, Span  # noqa: E402
from fractal_core.embedding.encoder import resolve_device  # noqa: E402
from fractal_core.evaluation.metrics import auc_roc  # noqa: E402
from fractal_core.experimental.finetune import (  # noqa: E402
    FinetuneConfig,
    FinetuneResult,
    TokenScorer,
    batch_loss,
    build_token_bags,
    finetune,
    score_token_bags,
    training_precision,
)
from fractal_core.mil.losses import bag_loss  # noqa: E402

CPU = torch.device("cpu")
WORDS = [
    "add",
    "the",
    "two",
    "numbers",
    "then",
    "carry",
    "one",
    "so",
    "total",
    "equals",
    "seven",
    "times",
    "three",
    "minus",
    "four",
]


def _record(
    i: int, sentences: list[str], labels: list[int], context: str = "what is the sum"
) -> ResponseRecord:
    spans, text, at = [], "", 0
    for s in sentences:
        spans.append(Span(at, at + len(s), s))
        text += s + " "
        at += len(s) + 1
    return ResponseRecord(
        id=f"r{i}",
        context=context,
        text=text.rstrip(),
        spans=spans,
        response_label=float(max(labels)),
        sentence_labels=list(labels),
    )


def planted(n: int, seed: int) -> list[ResponseRecord]:
    """Bags of 2-5 steps; a positive step says "wrong" somewhere; the response label is the max."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.randint(2, 5)
        labels = [int(rng.random() < 0.25) for _ in range(size)]
        sentences = []
        for label in labels:
            words = rng.sample(WORDS, 5)
            if label:
                words.insert(rng.randint(0, 5), "wrong")
            sentences.append(" ".join(words))
        out.append(_record(i, sentences, labels))
    return out


@pytest.fixture
def tiny_dir(tiny_encoder_dir: Path) -> Path:
    return tiny_encoder_dir


def _tiny(tiny_dir: Path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)


def _config(tiny_dir: Path, **overrides) -> FinetuneConfig:
    base = dict(
        encoder=str(tiny_dir), device="cpu", precision="float32", max_length=48, context_tokens=8,
        sentence_tokens=12, learning_rate=1e-3, head_learning_rate=1e-2, calibrate=False,
    )  # fmt: skip
    return FinetuneConfig(**{**base, **overrides})  # type: ignore[arg-type]


def test_sequences_hold_context_earlier_steps_from_the_left_and_the_step(tiny_dir: Path) -> None:
    _, tokenizer = _tiny(tiny_dir)
    record = _record(
        0, ["alpha beta", "gamma delta", "epsilon zeta eta theta"], [0, 0, 1], context="question q"
    )
    other = _record(1, ["iota kappa"], [0], context="other")
    config = _config(tiny_dir, max_length=12, context_tokens=3, sentence_tokens=6)
    data = build_token_bags([record, other], tokenizer, config)
    assert data.bag_index.tolist() == [0, 0, 0, 1]
    assert data.gold.tolist() == [0, 0, 1, 0] and data.labels.tolist() == [1.0, 0.0]

    def text(row: int) -> str:
        return tokenizer.decode(data.input_ids[row, : data.lengths[row]])

    def pooled(row: int) -> str:
        return tokenizer.decode(data.input_ids[row, data.pool_start[row] : data.pool_end[row]])

    ctx = tokenizer.decode(tokenizer("question q", add_special_tokens=False)["input_ids"][:3])
    assert text(0) == f"[CLS] {ctx} [SEP] [SEP] alpha beta [SEP]"
    assert pooled(0) == "alpha beta"
    # Step 3: 12 - 4 specials - context - step leaves a few tokens for the earlier steps, taken from the left.
    earlier = tokenizer("alpha beta gamma delta", add_special_tokens=False)["input_ids"]
    n_context = len(tokenizer("question q", add_special_tokens=False)["input_ids"][:3])
    n_step = len(tokenizer("epsilon zeta eta theta", add_special_tokens=False)["input_ids"][:6])
    kept = earlier[len(earlier) - (12 - 4 - n_context - n_step) :]
    assert text(2) == f"[CLS] {ctx} [SEP] {tokenizer.decode(kept)} [SEP] {pooled(2)} [SEP]"
    assert int(data.lengths[2]) == 12 and 0 < len(kept) < len(earlier)
    assert "alpha" not in text(3) and text(3).endswith("[SEP] [SEP] iota kappa [SEP]")  # bags never mix


def test_batch_loss_equals_the_per_bag_reference(tiny_dir: Path) -> None:
    encoder, tokenizer = _tiny(tiny_dir)
    config = _config(tiny_dir, gold_weight=0.0)
    data = build_token_bags(planted(12, seed=1), tokenizer, config)
    model = TokenScorer(encoder, 2, generator=torch.Generator().manual_seed(0)).eval()
    bags = torch.tensor([5, 0, 11, 3, 7, 2])
    with torch.no_grad():
        batched = batch_loss(model, data, bags, aggregation="max", config=config, device=CPU)
        per_bag = [
            batch_loss(model, data, bags[k : k + 1], aggregation="max", config=config, device=CPU)
            for k in range(len(bags))  # the reference: one bag at a time, each padded to its own length
        ]
        logp = score_token_bags(model, data, device=CPU, batch=5)
        rows, index = data.rows_of(bags)
        reference = bag_loss(logp[rows], index, data.labels[bags], aggregation="max", variant="hard")
    assert float(batched) == pytest.approx(float(torch.stack(per_bag).mean()), abs=1e-5)
    assert float(batched) == pytest.approx(float(reference), abs=1e-5)


def test_gradients_reach_the_encoder(tiny_dir: Path) -> None:
    encoder, tokenizer = _tiny(tiny_dir)
    config = _config(tiny_dir)
    data = build_token_bags(planted(6, seed=2), tokenizer, config)
    model = TokenScorer(encoder, 2, generator=torch.Generator().manual_seed(0))
    loss = batch_loss(model, data, torch.arange(6), aggregation="max", config=config, device=CPU)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name in (
        "encoder.embeddings.word_embeddings.weight",
        "encoder.encoder.layer.0.attention.self.query.weight",
    ):
        grad = grads[name]
        assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


@pytest.mark.slow
def test_loss_decreases_and_the_planted_step_is_found(tiny_dir: Path) -> None:
    encoder, tokenizer = _tiny(tiny_dir)
    config = _config(tiny_dir, epochs=4, patience=4, batch_bags=8)
    train, valid, test = planted(48, seed=3), planted(16, seed=4), planted(32, seed=5)
    for r in train[12:]:  # a quarter of the training responses keep their gold sentence labels
        r.sentence_labels = None
    result = finetune(
        train, valid, aggregation="max", n_classes=2, config=config, seed=0, encoder=(encoder, tokenizer)
    )
    assert result.train_loss[-1] < 0.85 * result.train_loss[0]  # measured 1.36 -> 1.07
    scores = np.concatenate(result.predict(test))
    gold = np.array([label for r in test for label in r.sentence_labels or []])
    assert auc_roc(gold, scores) > 0.6  # measured 0.68 (a random 2-layer BERT learning "wrong" in 4 epochs)


def test_save_load_and_calibration(tiny_dir: Path, tmp_path: Path) -> None:
    encoder, tokenizer = _tiny(tiny_dir)
    config = _config(tiny_dir, epochs=1, calibrate=True)
    train, valid = planted(16, seed=6), planted(8, seed=7)
    result = finetune(
        train, valid, aggregation="max", n_classes=2, config=config, seed=0, encoder=(encoder, tokenizer)
    )
    assert result.calibration is not None and result.calibration["kind"] == "logit"
    result.save(tmp_path / "m")
    loaded = FinetuneResult.load(tmp_path / "m", device="cpu")
    for a, b in zip(result.predict(valid), loaded.predict(valid), strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-6)


def test_device_and_precision_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    assert training_precision(CPU, "float32") == (None, False)
    with pytest.raises(ValueError, match="CUDA"):
        training_precision(CPU, "float16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_precision(cuda, "auto") == (torch.bfloat16, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training_precision(cuda, "auto") == (torch.float16, True)  # fp16 needs the gradient scaler
    assert training_precision(cuda, "float16") == (torch.float16, True)
    with pytest.raises(ValueError, match="bfloat16"):
        training_precision(cuda, "bfloat16")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_fine_tuning(tiny_dir: Path) -> None:
    encoder, tokenizer = _tiny(tiny_dir)
    config = _config(tiny_dir, device="cuda", precision="auto", epochs=1)
    result = finetune(
        planted(16, seed=8), planted(8, seed=9), aggregation="max", n_classes=2, config=config,
        encoder=(encoder, tokenizer),
    )  # fmt: skip
    assert result.device.type == "cuda" and np.isfinite(result.train_loss).all()


def test_cli_finetune_then_score(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from fractal_core.cli import register
    from fractal_core.data.io import record_to_dict

    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "home"))
    app = typer.Typer()
    register(app)
    data = tmp_path / "d"
    data.mkdir()
    for split, records in (("train", planted(12, seed=10)), ("valid", planted(6, seed=11))):
        lines = [json.dumps(record_to_dict(r)) for r in records]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "ft"
    args = ["finetune", str(data), "--out", str(out), "--encoder", str(tiny_dir), "--device", "cpu"]
    trained = CliRunner().invoke(app, [*args, "--epochs", "1", "--max-length", "32"])
    assert trained.exit_code == 0, trained.output
    assert (out / "finetune.json").is_file() and (out / "encoder" / "config.json").is_file()
    scored = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(
        app, ["score", str(data / "valid.jsonl"), "--model", str(out), "--out", str(scored)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scored.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and all(len(r["sentence_scores"]) == len(r["sentences"]) for r in rows)
    on_ray = CliRunner().invoke(
        app,
        [
            "score",
            str(data / "valid.jsonl"),
            "--model",
            str(out),
            "--out",
            str(tmp_path / "r.jsonl"),
            "--ray",
            "auto",
        ],
    )
    assert on_ray.exit_code == 2 and "--ray" in on_ray.output and not (tmp_path / "r.jsonl").exists()
    bad = CliRunner().invoke(app, ["finetune", str(data), "--out", str(out / "x"), "--encoder", "nope"])
    assert bad.exit_code == 2 and "--encoder" in bad.output


@pytest.mark.slow
def test_fine_tuning_the_bundled_encoder_on_processbench_bags() -> None:
    from fractal_core.data.io import read_records
    from tests.shared_data import shared

    records = read_records(shared("processbench") / "train.jsonl")[:6]
    config = FinetuneConfig(device="cpu", epochs=1, max_length=96, batch_bags=3, calibrate=False)
    from fractal_core.experimental.finetune import load_encoder

    encoder, tokenizer = load_encoder(config)
    before = encoder.embeddings.word_embeddings.weight.detach().clone()
    result = finetune(
        records[:4], records[4:], aggregation="max", n_classes=2, config=config, encoder=(encoder, tokenizer)
    )
    assert np.isfinite(result.train_loss).all() and len(result.valid_score) == 1
    assert not torch.equal(before, result.model.encoder.embeddings.word_embeddings.weight.detach())
    scores = result.predict(records[4:])
    assert [len(s) for s in scores] == [len(r.spans) for r in records[4:]]
    assert all(((s >= 0) & (s <= 1)).all() for s in scores)
