"""`fractal evaluate / train / score / segment` end to end, and their bad-input errors (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fractal_core.cli import register
from tests.shared_data import shared


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _slice(source: Path, target: Path, sizes: dict[str, int]) -> Path:
    target.mkdir()
    for split, n in sizes.items():
        lines = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (target / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@pytest.mark.slow
def test_evaluate_on_a_processbench_slice(cli: typer.Typer, tmp_path: Path) -> None:
    data = _slice(shared("processbench"), tmp_path / "pb", {"train": 40, "valid": 12, "test": 16})
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            str(data),
            "--methods",
            "naive,constant,prior-only,bagloss,pslab,hybrid,supervised",
            "--seeds",
            "2",
            "--gold-fraction",
            "0.25",
            "--max-epochs",
            "3",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert {r["method"] for r in records} == {
        "naive",
        "constant",
        "prior_only",
        "bagloss",
        "pslab",
        "hybrid",
        "supervised",
    }
    assert len(records) == 14
    for r in records:
        for key in (
            "method",
            "gold_fraction",
            "seed",
            "instance_auc_roc",
            "instance_auprc",
            "bag_auc_roc",
            "first_error_acc",
            "first_error_acc_given_y",
            "first_error_top3_given_y",
            "train_seconds",
        ):
            assert key in r
        assert 0.0 <= r["instance_auc_roc"] <= 1.0
    # First-error data: the official F1 (threshold tuned on valid) per subset, and the F key's rules.
    for r in records:
        assert 0.0 <= r["first_error_f1"] <= 1.0 and 0.0 <= r["fkey_top1"] <= 1.0
        assert set(r["first_error_f1_by_subset"]) <= {"gsm8k", "math", "olympiadbench", "omnimath"}
    assert "first_error_f1" in result.output and "fkey_top1" in result.output
    assert "hybrid: first_error_f1 by subset: " in result.output
    assert {r["gold_fraction"] for r in records if r["method"] == "hybrid"} == {0.25}
    assert {r["gold_fraction"] for r in records if r["method"] == "supervised"} == {1.0}
    assert {r["instance_auc_roc"] for r in records if r["method"] == "constant"} == {0.5}  # all ties
    assert "pslab" in result.output and "constant" in result.output and "instance_auc_roc" in result.output


@pytest.mark.slow
def test_hazard_evaluates_trains_and_scores_on_step_data(cli: typer.Typer, tmp_path: Path) -> None:
    data = _slice(shared("processbench"), tmp_path / "pb", {"train": 40, "valid": 20, "test": 16})
    out = tmp_path / "out.json"
    args = ["--methods", "hazard", "--seeds", "1", "--gold-fraction", "0.5", "--max-epochs", "2"]
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(data), *args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    [record] = json.loads(out.read_text())
    assert record["method"] == record["resolved_method"] == "hazard" and record["gold_fraction"] == 0.5
    assert 0.0 <= record["first_error_f1"] <= 1.0 and 0.0 <= record["fkey_top1"] <= 1.0
    assert "hazard: first_error_f1 by subset: " in result.output
    rows = _train_then_score(cli, data, tmp_path, "hazard")
    assert len(rows) == 16 and all(0.0 <= s <= 1.0 for r in rows for s in r["sentence_scores"])


def _train_then_score(cli: typer.Typer, data: Path, tmp_path: Path, method: str) -> list[dict]:
    """`fractal train` on ``data`` with ``method`` (2 epochs), then `fractal score` of its test split: the rows."""
    model_dir = tmp_path / "model"
    trained = CliRunner().invoke(
        cli, ["train", str(data), "--out", str(model_dir), "--method", method, "--max-epochs", "2"]
    )
    assert trained.exit_code == 0, trained.output
    scored_path = tmp_path / "scored.jsonl"
    scored = CliRunner().invoke(
        cli, ["score", str(data / "test.jsonl"), "--model", str(model_dir), "--out", str(scored_path)]
    )
    assert scored.exit_code == 0, scored.output
    return [json.loads(line) for line in scored_path.read_text().splitlines()]


@pytest.mark.slow
def test_ordinal_data_reports_mae_and_trains_then_scores(cli: typer.Typer, tmp_path: Path) -> None:
    data = _slice(shared("delucionqa"), tmp_path / "dq", {"valid": 20, "test": 20})
    # 40 ordinary answers plus every level-2 ("Conflicted") one: an ordinal task with three levels.
    rows = (shared("delucionqa") / "train.jsonl").read_text(encoding="utf-8").splitlines()
    level2 = [line for line in rows if json.loads(line)["response_label"] == 2]
    others = [line for line in rows if json.loads(line)["response_label"] != 2][:40]
    assert level2
    (data / "train.jsonl").write_text("\n".join(others + level2) + "\n", encoding="utf-8")
    out = tmp_path / "dq.json"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            str(data),
            "--methods",
            "bagloss",
            "--seeds",
            "1",
            "--max-epochs",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    [record] = json.loads(out.read_text())
    assert 0.0 <= record["instance_mae"] <= 2.0  # ordinal view: mean |expected level - gold level|
    rows = _train_then_score(cli, data, tmp_path, "pslab")
    assert len(rows) == 20
    assert all(len(r["sentence_scores"]) == len(r["sentences"]) == len(r["offsets"]) for r in rows)
    assert all(0.0 <= s <= 1.0 for r in rows for s in r["sentence_scores"])


def test_segment_prints_offsets(cli: typer.Typer) -> None:
    text = "First step. Second one!\n\nThird."
    result = CliRunner().invoke(cli, ["segment", text])
    assert result.exit_code == 0
    spans = [json.loads(line) for line in result.output.splitlines()]
    assert [text[s["start"] : s["end"]] for s in spans] == [s["text"] for s in spans]
    assert len(spans) == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"id": "a", "sentences": ["x"], "response_label": 1}\n{"id": "b", "sentences": ["y"], "response_label": 1\n',
            "train.jsonl:2",
        ),
        ('{"id": "a", "sentences": [], "response_label": 1}\n', "train.jsonl:1:sentences"),
        ('{"id": "a", "sentences": ["x"], "response_label": "yes"}\n', "train.jsonl:1:response_label"),
        (
            '{"id": "a", "sentences": ["x"], "response_label": 1, "aggregation": "median"}\n',
            "train.jsonl:1:aggregation",
        ),
        (
            '{"id": "a", "sentences": ["x"], "response_label": 1.5, "aggregation": "min"}\n',
            "train.jsonl:1:response_label",
        ),
        ('{"id": "a", "sentences": ["x"]}\n', "train.jsonl:1:response_label"),
    ],
)
def test_bad_input_exits_2_with_location_and_writes_nothing(
    cli: typer.Typer, tmp_path: Path, content: str, expected: str
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "train.jsonl").write_text(content, encoding="utf-8")
    (data / "test.jsonl").write_text(
        '{"id": "t", "sentences": ["x"], "response_label": 0}\n', encoding="utf-8"
    )
    out = tmp_path / "out.json"
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--json", str(out)])
    assert result.exit_code == 2
    assert expected in result.output
    assert not out.exists()
    model_dir = tmp_path / "m"
    trained = CliRunner().invoke(cli, ["train", str(data / "train.jsonl"), "--out", str(model_dir)])
    assert trained.exit_code == 2 and expected in trained.output
    assert not model_dir.exists()


def test_an_output_path_in_a_missing_folder_is_refused_before_any_work(
    cli: typer.Typer, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "train.jsonl").write_text(
        '{"id": "a", "sentences": ["x"], "response_label": 0}\n', encoding="utf-8"
    )
    (data / "test.jsonl").write_text(
        '{"id": "t", "sentences": ["x"], "response_label": 0}\n', encoding="utf-8"
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}", encoding="utf-8")  # never loaded: the output is checked first
    missing = tmp_path / "no-such-folder"
    commands = {
        "train": ["train", str(data / "train.jsonl"), "--out", str(missing / "m")],
        "score": [
            "score",
            str(data / "test.jsonl"),
            "--model",
            str(model),
            "--out",
            str(missing / "s.jsonl"),
        ],
        "evaluate": ["evaluate", "--data", str(data), "--json", str(missing / "e.json")],
        "finetune": ["finetune", str(data / "train.jsonl"), "--out", str(missing / "f")],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (name, result.output)
        assert f"the folder {missing} does not exist" in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) == 1, (name, result.output)
    assert not missing.exists()


def test_bad_options_exit_2(cli: typer.Typer, tmp_path: Path) -> None:
    data = _slice(shared("processbench"), tmp_path / "pb", {"train": 5, "test": 5})
    bad_scorer = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--scorer", "lstm"])
    assert bad_scorer.exit_code == 2 and "--scorer" in bad_scorer.output
    assert CliRunner().invoke(cli, ["evaluate", "--data", str(tmp_path), "--methods", "magic"]).exit_code == 2
    assert CliRunner().invoke(cli, ["evaluate", "--data", str(tmp_path / "nope")]).exit_code == 2
    assert (
        CliRunner().invoke(cli, ["evaluate", "--data", str(tmp_path), "--gold-fraction", "2"]).exit_code == 2
    )
    unreadable = CliRunner().invoke(
        cli,
        [
            "score",
            str(tmp_path / "missing.jsonl"),
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert unreadable.exit_code == 2


def test_cuda_device_without_a_gpu_is_refused_in_one_line(cli: typer.Typer, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bench_gpu.py measures the CUDA path there")
    data = tmp_path / "d.jsonl"
    row = {"id": "a", "sentences": ["One.", "Two."], "response_label": 1}
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    for args in (
        ["embed", str(data), "--device", "cuda"],
        ["train", str(data), "--out", str(tmp_path / "m"), "--device", "cuda"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "--device: device 'cuda': no CUDA GPU is available here" in result.output
    assert not (tmp_path / "m").exists()


def test_unknown_encoder_exits_2(cli: typer.Typer, tmp_path: Path) -> None:
    data = _slice(shared("processbench"), tmp_path / "pb", {"train": 5, "test": 5})
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--encoder", "no-such-encoder"])
    assert result.exit_code == 2 and "--encoder" in result.output and "all-mpnet-base-v2" in result.output
    embedded = CliRunner().invoke(cli, ["embed", str(data), "--encoder", str(tmp_path / "nope")])
    assert embedded.exit_code == 2 and "config.json" in embedded.output


def test_unknown_precision_exits_2_and_a_chosen_one_is_kept_by_the_model(
    cli: typer.Typer, tmp_path: Path, tiny_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "home"))
    data = tmp_path / "d.jsonl"
    rows = [
        {"id": str(i), "sentences": [f"Step {i}.", "Then the end."], "response_label": i % 2}
        for i in range(8)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bad = CliRunner().invoke(cli, ["embed", str(data), "--precision", "int4"])
    assert bad.exit_code == 2 and "--precision" in bad.output
    args = ["train", str(data), "--out", str(tmp_path / "m"), "--encoder", str(tiny_encoder_dir)]
    trained = CliRunner().invoke(cli, [*args, "--precision", "onnx-int8", "--max-epochs", "1"])
    assert trained.exit_code == 0, trained.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    assert meta["encoder"]["precision"] == "onnx-int8" and meta["encoder_id"].endswith("-onnx-int8")
