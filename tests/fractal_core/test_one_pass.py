"""The one-pass scorer (fractal_core.experimental.one_pass_*): windows, the block mask, pooling, the state cache
and the ``route="one_pass"`` fine-tuning, on a tiny random BERT on CPU."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fractal_core.data.records import ResponseRecord  # noqa: E402
from fractal_core.experimental.finetune import FinetuneConfig, FinetuneResult, finetune  # noqa: E402
from fractal_core.experimental.one_pass_scorer import (  # noqa: E402
    OnePassScorer,
    TokenStateCache,
    lower_states,
    one_pass_logp,
)
from fractal_core.experimental.one_pass_windows import (  # noqa: E402
    attention_bias,
    build_pass_windows,
    causal_mode,
)
from tests.fractal_core.test_finetune import _record, planted  # noqa: E402

CPU = torch.device("cpu")


def _tiny(tiny_dir: Path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)


def _config(tiny_dir: Path, **overrides) -> FinetuneConfig:
    base = dict(
        encoder=str(tiny_dir), device="cpu", precision="float32", route="one_pass", train_layers=1,
        window_tokens=40, context_tokens=6, sentence_tokens=8, learning_rate=1e-3, head_learning_rate=1e-2,
        calibrate=False, state_cache="",
    )  # fmt: skip
    return FinetuneConfig(**{**base, **overrides})


def _long(i: int, n: int, context: str = "what is the sum of these") -> ResponseRecord:
    words = ["add", "the", "two", "numbers", "then", "carry", "one", "so", "total"]
    sentences = [" ".join(words[(j + k) % len(words)] for k in range(3 + j % 4)) for j in range(n)]
    return _record(i, sentences, [0] * n, context=context)


def _vectors(model: OnePassScorer, data, causal_states=None) -> torch.Tensor:
    states = causal_states or lower_states(model, data, device=CPU)
    windows = torch.arange(data.n_windows)
    rows = torch.arange(data.n_sentences)
    with torch.no_grad():
        return one_pass_logp(model, data, states, windows, rows, device=CPU, vectors=True)


def test_windows_score_each_step_once_and_keep_the_context(tiny_encoder_dir: Path) -> None:
    _, tokenizer = _tiny(tiny_encoder_dir)
    records = [_long(0, 14), _long(1, 2, context="short"), _long(2, 9)]
    config = _config(tiny_encoder_dir)
    data = build_pass_windows(records, tokenizer, config, causal=True)
    assert int(data.lengths.max()) <= config.window_tokens and data.n_windows > len(
        records
    )  # windows were cut
    pooled = data.pool_row[data.pool_row >= 0]
    windows_of = torch.nonzero(data.pool_row >= 0)[:, 0]
    # Every step is pooled in exactly one window, the one recorded as scoring it.
    assert sorted(set(pooled.tolist())) == list(range(data.n_sentences))
    for row in range(data.n_sentences):
        assert set(windows_of[pooled == row].tolist()) == {int(data.step_window[row])}
    for w in range(data.n_windows):
        text = tokenizer.decode(data.input_ids[w, : data.lengths[w]])
        context = records[int(data.window_bag[w])].context
        kept = tokenizer.decode(
            tokenizer(context, add_special_tokens=False)["input_ids"][: config.context_tokens]
        )
        assert text.startswith(f"[CLS] {kept} [SEP]")
        scored = data.block[w][data.pool_row[w] >= 0]
        if w > 0 and data.window_bag[w] == data.window_bag[w - 1]:  # a later window reads earlier steps first
            first_block = int(data.block[w, int((data.block[w] > 0).nonzero()[0])])
            assert first_block < int(scored.min())


def test_a_step_never_sees_later_steps_under_the_causal_mask(tiny_encoder_dir: Path) -> None:
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    model = OnePassScorer(encoder, 2, train_layers=1, generator=torch.Generator().manual_seed(0)).eval()
    base = _record(0, ["add the two", "then carry one", "so total seven"], [0, 0, 0])
    changed = _record(0, ["add the two", "then carry one", "minus four times"], [0, 0, 0])
    config = _config(tiny_encoder_dir, window_tokens=64)
    for causal, same in ((True, True), (False, False)):
        a = _vectors(model, build_pass_windows([base], tokenizer, config, causal=causal))
        b = _vectors(model, build_pass_windows([changed], tokenizer, config, causal=causal))
        assert torch.equal(a[:2], b[:2]) is same  # full attention lets later steps in: the test can fail
        assert not torch.equal(a[2], b[2])


def test_pooling_is_the_mean_of_the_step_tokens_of_the_whole_encoder(tiny_encoder_dir: Path) -> None:
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    n_layers = encoder.config.num_hidden_layers
    model = OnePassScorer(encoder, 2, train_layers=n_layers).eval()  # lower = the embeddings only
    data = build_pass_windows(
        [_long(0, 4)], tokenizer, _config(tiny_encoder_dir, window_tokens=64), causal=True
    )
    assert data.n_windows == 1
    with torch.no_grad():
        hidden = encoder(
            input_ids=data.input_ids, attention_mask=attention_bias(data.block, causal=True)
        ).last_hidden_state[0]  # Hugging Face's own forward with the 4-D additive mask
    reference = torch.stack([hidden[data.pool_row[0] == row].mean(0) for row in range(data.n_sentences)])
    # The stored lower states are float16, so the match is to float16 precision.
    assert torch.allclose(_vectors(model, data), reference, atol=5e-3)


def test_cached_and_fresh_lower_states_give_the_same_step_vectors(
    tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    model = OnePassScorer(encoder, 2, train_layers=1).eval()
    data = build_pass_windows([_long(0, 12), _long(1, 3)], tokenizer, _config(tiny_encoder_dir), causal=True)
    cache = TokenStateCache(tmp_path / "states")
    fresh = lower_states(model, data, device=CPU, batch=3)
    written = lower_states(model, data, device=CPU, cache=cache, encoder_id="tiny")
    assert len(list((tmp_path / "states").glob("*.npy"))) == 2  # one entry per response
    with (
        torch.no_grad()
    ):  # the encoder's lower layer is changed: only the cache can still give the old states
        encoder.encoder.layer[0].attention.self.query.weight.mul_(3.0)
    read = lower_states(model, data, device=CPU, cache=cache, encoder_id="tiny")
    assert torch.equal(fresh.flat, written.flat) and torch.equal(fresh.flat, read.flat)
    assert torch.equal(_vectors(model, data, fresh), _vectors(model, data, read))
    other = lower_states(model, data, device=CPU, cache=cache, encoder_id="tiny-2")  # another key recomputes
    assert not torch.equal(other.flat, fresh.flat)


def test_auto_attention_is_causal_for_first_error_gold(tiny_encoder_dir: Path) -> None:
    config = _config(tiny_encoder_dir, attention="auto")
    steps = _record(0, ["a b", "c d", "e f"], [0, 1, 0])
    steps.sentence_labels = [0, 1, None]  # nothing judged after the first error
    assert causal_mode(config, [steps])
    steps.sentence_labels = [0, 1, 0]
    assert not causal_mode(config, [steps])
    assert causal_mode(_config(tiny_encoder_dir, attention="causal"), [steps])


def test_one_pass_route_trains_only_the_top_layers_and_reloads(
    tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = _config(tiny_encoder_dir, epochs=2, patience=2, calibrate=True, state_cache=str(tmp_path / "c"))
    train, valid = planted(24, seed=3), planted(8, seed=4)
    result = finetune(
        train, valid, aggregation="max", n_classes=2, config=config, seed=0, encoder=(encoder, tokenizer)
    )
    after = result.model.encoder.state_dict()
    assert torch.equal(
        after["embeddings.word_embeddings.weight"], before["embeddings.word_embeddings.weight"]
    )
    assert torch.equal(
        after["encoder.layer.0.output.dense.weight"], before["encoder.layer.0.output.dense.weight"]
    )
    assert not torch.equal(
        after["encoder.layer.1.output.dense.weight"], before["encoder.layer.1.output.dense.weight"]
    )
    assert len(result.train_loss) >= 1 and result.calibration is not None
    result.save(tmp_path / "m")
    loaded = FinetuneResult.load(tmp_path / "m", device="cpu")
    for a, b in zip(result.predict(valid), loaded.predict(valid), strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-6)


def test_train_layers_chosen_on_valid_and_the_compact_save(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    """``train_layers=0``: 1 and 2 top layers each trained from the same start, the better by the validation
    rule kept and recorded; the compact save holds the top layers and the head, and reloads the same scores."""
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = _config(tiny_encoder_dir, train_layers=0, epochs=2, patience=2, calibrate=True)
    train, valid = planted(24, seed=5), planted(8, seed=6)
    stages: list[str] = []
    result = finetune(
        train, valid, aggregation="max", n_classes=2, config=config, seed=0, encoder=(encoder, tokenizer),
        progress=lambda stage, fraction, message: stages.append(stage),
    )  # fmt: skip
    choice = result.layer_choice
    assert (
        choice is not None
        and set(choice["valid_score"]) == {"1", "2"}
        and choice["mode"] in ("sentence", "bag")
    )
    best = max(choice["valid_score"], key=lambda k: choice["valid_score"][k])
    assert choice["chosen"] == int(best) == result.config.train_layers
    assert result.valid_score[result.best_epoch] == choice["valid_score"][best]
    assert {"cache, top 1 layer", "finetune, top 1 layer", "finetune, top 2 layers"} <= set(stages)
    assert result.epochs_run == 4 and result.cache_seconds > 0
    # The caller's encoder is left as it was: each candidate trained a copy of it.
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    result.save(tmp_path / "compact", encoder_files=False)
    assert sorted(p.name for p in (tmp_path / "compact").iterdir()) == [
        "finetune.json",
        "head.pt",
        "top_layers.pt",
    ]
    loaded = FinetuneResult.load(tmp_path / "compact", device="cpu")
    assert loaded.layer_choice == choice and loaded.config.train_layers == result.config.train_layers
    for a, b in zip(result.predict(valid), loaded.predict(valid), strict=True):
        assert np.allclose(a, b, atol=1e-6)
    # Without validation responses nothing is chosen: the default count trains, and no choice is recorded.
    alone = finetune(train, None, aggregation="max", n_classes=2, config=replace(config, epochs=1), seed=0,
                     encoder=_tiny(tiny_encoder_dir))  # fmt: skip
    assert alone.layer_choice is None and alone.config.train_layers == 2


def test_cli_finetune_one_pass_then_score(tiny_encoder_dir: Path, tmp_path: Path, monkeypatch) -> None:
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
    for split, records in (("train", planted(10, seed=12)), ("valid", planted(5, seed=13))):
        lines = [json.dumps(record_to_dict(r)) for r in records]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "ft"
    args = ["finetune", str(data), "--out", str(out), "--encoder", str(tiny_encoder_dir), "--device", "cpu"]
    trained = CliRunner().invoke(app, [*args, "--epochs", "1", "--route", "one_pass", "--train-layers", "1"])
    assert trained.exit_code == 0, trained.output
    assert json.loads((out / "finetune.json").read_text())["config"]["route"] == "one_pass"
    assert list((tmp_path / "home" / "cache" / "token_states").glob("*.npy"))  # the lower states were cached
    scored = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(
        app, ["score", str(data / "valid.jsonl"), "--model", str(out), "--out", str(scored)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scored.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5 and all(len(r["sentence_scores"]) == len(r["sentences"]) for r in rows)
    for bad in (["--route", "bogus"], ["--route", "one_pass", "--train-layers", "9"]):
        refused = CliRunner().invoke(app, [*args[:3], str(tmp_path / "x"), *args[4:], "--epochs", "1", *bad])
        assert refused.exit_code == 2 and not (tmp_path / "x").exists(), refused.output
