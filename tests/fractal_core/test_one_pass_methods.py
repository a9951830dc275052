"""Every trained method of the suite on the one-pass scorer (fractal_core.experimental.one_pass_methods): the
frozen route's plan, objective code and constant targets, on a tiny random BERT on CPU."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fractal_core.embedding.encoder import EncoderConfig, get_encoder  # noqa: E402
from fractal_core.embedding.features import embed_records  # noqa: E402
from fractal_core.errors import InputError  # noqa: E402
from fractal_core.experimental.finetune import finetune  # noqa: E402
from fractal_core.experimental.one_pass_methods import frozen_targets, one_pass_plan  # noqa: E402
from fractal_core.experimental.one_pass_scorer import (  # noqa: E402
    OnePassScorer,
    lower_states,
    one_pass_logp,
    one_pass_loss,
)
from fractal_core.experimental.one_pass_windows import build_pass_windows, record_bags  # noqa: E402
from fractal_core.fitting import registry  # noqa: E402
from fractal_core.fitting.config import TrainConfig  # noqa: E402
from fractal_core.fitting.objectives import bag_terms  # noqa: E402
from fractal_core.mil.hazard import hazard_loss  # noqa: E402
from fractal_core.mil.losses import bag_loss, cosine_prior  # noqa: E402
from tests.fractal_core.test_finetune import planted  # noqa: E402
from tests.fractal_core.test_one_pass import _config, _tiny  # noqa: E402

CPU = torch.device("cpu")


def _first_error(records):
    """The records with their gold cut after the first error (step data: what hazard trains on)."""
    for r in records:
        labels = list(r.sentence_labels)
        first = labels.index(1) if 1 in labels else len(labels)
        r.sentence_labels = labels[: first + 1] + [None] * (len(labels) - first - 1)
    return records


@pytest.mark.parametrize("method", registry.ONE_PASS_METHODS)
def test_every_method_trains_the_one_pass_scorer(tiny_encoder_dir: Path, method: str) -> None:
    """Each method runs its frozen-route stages on the one-pass scorer: the progress reports the plan's stages,
    the top layer is trained and every step of new responses is scored."""
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    before = encoder.encoder.layer[1].output.dense.weight.clone()
    train, valid = _first_error(planted(24, seed=3)), _first_error(planted(8, seed=4))
    config = _config(
        tiny_encoder_dir, method=method, gold_weight=0.0, epochs=2, patience=2, bag=TrainConfig(max_epochs=5)
    )
    seen: list[str] = []
    result = finetune(
        train, valid, aggregation="max", n_classes=2, config=config, seed=0, encoder=(encoder, tokenizer),
        progress=lambda stage, fraction, message: seen.append(stage),
    )  # fmt: skip
    plan = one_pass_plan(method, record_bags(train), aggregation="max", config=config.bag)
    expected = {"finetune" if s == registry.STAGE_BAG else f"finetune ({s})" for s in plan.stages}
    expected -= {f"finetune ({registry.STAGE_TEACHER})"}  # the hybrid teacher is the frozen route's
    assert expected <= set(seen)
    if plan.runs(registry.STAGE_TEACHER):
        assert registry.STAGE_TEACHER in seen
    if method == "hazard":  # hazard early-stops on its own objective, as on the frozen route
        assert result.layer_choice is None and plan.config.valid_metric == "first_error"
    trained = result.model.encoder.encoder.layer[1].output.dense.weight
    assert not torch.equal(
        trained, before
    )  # (pslab's: a fresh copy of the encoder, trained on pseudo-labels)
    scores = result.predict(valid)
    assert [len(s) for s in scores] == [len(r.spans) for r in valid]


def test_the_bag_stage_loss_is_the_suite_objective_on_one_pass_log_probabilities(
    tiny_encoder_dir: Path,
) -> None:
    """``one_pass_loss`` with the plan's ``bag_terms`` equals the suite's loss functions on the same
    log-probabilities and targets: BagLoss + cosine prior for priors, the hazard likelihood + cosine for hazard."""
    encoder, tokenizer = _tiny(tiny_encoder_dir)
    model = OnePassScorer(encoder, 2, train_layers=1, generator=torch.Generator().manual_seed(0)).eval()
    records = _first_error(planted(6, seed=7))
    config = _config(tiny_encoder_dir)
    data = build_pass_windows(records, tokenizer, config, causal=True)
    states = lower_states(model, data, device=CPU)
    bags = torch.tensor([4, 1, 3])
    windows, rows, bag_index = data.select(bags)
    with torch.no_grad():
        logp = one_pass_logp(model, data, states, windows, rows, device=CPU)
    encoder_config = EncoderConfig(model_path=str(tiny_encoder_dir), device="cpu", cache_dir="")
    cos = embed_records(records, get_encoder(encoder_config)).with_cosine_target().cos_target
    assert cos is not None
    for method in ("priors", "hazard"):
        plan = one_pass_plan(method, record_bags(records), aggregation="max", config=TrainConfig())
        targets, _ = frozen_targets(
            plan, data.bagset(), records, None, n_classes=2, seed=0, encoder=encoder_config
        )
        assert targets.cos_target is not None and torch.allclose(targets.cos_target, cos)
        with torch.no_grad():
            got = one_pass_loss(
                model,
                data,
                states,
                bags,
                bag_terms(plan.config, "max", plan.loss_weights),
                targets,
                device=CPU,
            )
        w = plan.loss_weights
        labels, gold = data.labels[bags], data.gold[rows]
        first = (
            bag_loss(logp, bag_index, labels, aggregation="max")
            if method == "priors"
            else hazard_loss(logp, bag_index, labels, gold, rank=TrainConfig().hazard_rank)
        )
        want = w.get("bag", w.get("hazard", 0.0)) * first + w["cosine"] * cosine_prior(
            logp, bag_index, len(bags), cos[rows]
        )
        assert torch.allclose(got, want, atol=1e-6), method


def test_hybrid_targets_come_from_the_frozen_teacher(tiny_encoder_dir: Path) -> None:
    """hybrid's soft targets are the frozen route's teacher predictions, trained once on frozen vectors."""
    _, tokenizer = _tiny(tiny_encoder_dir)
    records = planted(12, seed=8)
    data = build_pass_windows(records, tokenizer, _config(tiny_encoder_dir), causal=False)
    plan = one_pass_plan("hybrid", record_bags(records), aggregation="max", config=TrainConfig())
    encoder_config = EncoderConfig(model_path=str(tiny_encoder_dir), device="cpu", cache_dir="")
    targets, stages = frozen_targets(
        plan, data.bagset(), records, None, n_classes=2, seed=0, encoder=encoder_config
    )
    assert [s.stage for s in stages] == [registry.STAGE_TEACHER]
    assert targets.hyb_target is not None and targets.hyb_target.shape == (data.n_sentences, 2)
    assert torch.allclose(targets.hyb_target.sum(1), torch.ones(data.n_sentences))
    # bagloss needs no frozen vector: the windows' own bags, nothing embedded
    bare = one_pass_plan("bagloss", record_bags(records), aggregation="max", config=TrainConfig())
    view = data.bagset()
    assert frozen_targets(bare, view, records, None, n_classes=2, seed=0, encoder=encoder_config)[0] is view


def test_refusals_name_the_method_field(tiny_encoder_dir: Path) -> None:
    records = planted(6, seed=9)
    no_gold = planted(6, seed=9)
    for r in no_gold:
        r.sentence_labels = None
    for method, data in (("auto", records), ("fractal", records), ("naive", records), ("hybrid", no_gold)):
        with pytest.raises(InputError) as err:
            one_pass_plan(method, record_bags(data), aggregation="max", config=TrainConfig())
        assert err.value.field == "method" and method in str(err.value)
    with pytest.raises(InputError) as err:
        one_pass_plan("hazard", record_bags(records), aggregation="mean", config=TrainConfig())
    assert err.value.field == "method"
    per_step = replace(_config(tiny_encoder_dir), route="per_step", method="priors")
    with pytest.raises(InputError) as err:
        finetune(
            records, None, aggregation="max", n_classes=2, config=per_step, encoder=_tiny(tiny_encoder_dir)
        )
    assert err.value.field == "method"


def test_cli_finetune_one_pass_with_a_method(tiny_encoder_dir: Path, tmp_path: Path, monkeypatch) -> None:
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
        lines = [json.dumps(record_to_dict(r)) for r in _first_error(records)]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["finetune", str(data), "--encoder", str(tiny_encoder_dir), "--device", "cpu", "--epochs", "1"]
    out = tmp_path / "ft"
    one_pass = ["--route", "one_pass", "--train-layers", "1"]
    trained = CliRunner().invoke(app, [*args, "--out", str(out), *one_pass, "--method", "hazard"])
    assert trained.exit_code == 0, trained.output
    config = json.loads((out / "finetune.json").read_text())["config"]
    assert config["method"] == "hazard" and config["gold_weight"] == 0.0
    for bad in (["--method", "auto", *one_pass], ["--method", "bogus", *one_pass], ["--method", "priors"]):
        refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), *bad])
        assert refused.exit_code == 2 and not (tmp_path / "x").exists(), refused.output
        assert "--method" in refused.output
