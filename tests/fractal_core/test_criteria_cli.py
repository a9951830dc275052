"""`fractal train / score / evaluate` on data with several criteria, and their refusals (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fractal_core.cli import register

SENTENCES = [
    ["The brake holds the car.", "The moon is made of cheese.", "Apply it fully."],
    ["Drain the water filter.", "Then start the engine.", "Call a dealer."],
    ["Open the hood.", "Check the oil.", "Close it again.", "The engine sings opera."],
]


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        sentences = SENTENCES[(i + offset) % len(SENTENCES)]
        wrong = [int("moon" in s or "opera" in s) for s in sentences]
        late = [int(k == len(sentences) - 1) for k in range(len(sentences))]
        out.append(
            {
                "id": f"r{offset + i}",
                "context": "How do I park?",
                "sentences": sentences,
                "criteria": {
                    "wrong": {"response_label": max(wrong), "sentence_labels": wrong},
                    "share_late": {"response_label": sum(late) / len(late), "aggregation": "mean"},
                },
            }
        )
    return out


def data_dir(root: Path) -> Path:
    root.mkdir()
    for split, (n, offset) in {"train": (24, 0), "valid": (9, 100), "test": (9, 200)}.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n, offset)))
    return root


@pytest.mark.slow
def test_train_score_and_evaluate_several_criteria(cli: typer.Typer, tmp_path: Path) -> None:
    data = data_dir(tmp_path / "data")
    runner = CliRunner()
    model = tmp_path / "model"
    args = ["train", str(data), "--out", str(model), "--method", "priors", "--max-epochs", "2"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "2 criteria (wrong, share_late)" in result.output
    assert {p.name for p in model.iterdir()} == {"criteria.json", "weights.pt"}

    out = tmp_path / "scores.jsonl"
    result = runner.invoke(cli, ["score", "--model", str(model), str(data / "test.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first["criterion_scores"]) == {"wrong", "share_late"} and "sentence_scores" not in first
    assert len(first["criterion_scores"]["wrong"]) == len(first["sentences"])
    assert all(0.0 <= v <= 1.0 for v in first["criterion_scores"]["share_late"])

    one = tmp_path / "one.jsonl"
    args = [
        "score",
        "--model",
        str(model),
        str(data / "test.jsonl"),
        "--out",
        str(one),
        "--criterion",
        "wrong",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    first_one = json.loads(one.read_text().splitlines()[0])
    assert list(first_one["criterion_scores"]) == ["wrong"]
    assert first_one["sentence_scores"] == first["criterion_scores"]["wrong"]

    single = tmp_path / "single"
    args = ["train", str(data), "--out", str(single), "--method", "bagloss", "--criterion", "share_late"]
    result = runner.invoke(cli, [*args, "--max-epochs", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((single / "model.json").read_text())["aggregation"] == "mean"

    report = tmp_path / "eval.json"
    args = [
        "evaluate",
        "--data",
        str(data),
        "--methods",
        "naive,bagloss",
        "--seeds",
        "1",
        "--max-epochs",
        "2",
    ]
    result = runner.invoke(cli, [*args, "--criterion", "wrong", "--json", str(report)])
    assert result.exit_code == 0, result.output
    records = json.loads(report.read_text())
    assert {r["criterion"] for r in records} == {"wrong"} and {r["method"] for r in records} == {
        "naive",
        "bagloss",
    }


def test_criteria_refusals_exit_2_and_write_nothing(cli: typer.Typer, tmp_path: Path) -> None:
    data = data_dir(tmp_path / "data")
    runner = CliRunner()
    out = tmp_path / "m"
    result = runner.invoke(cli, ["train", str(data), "--out", str(out)])  # the default method is not joint
    assert result.exit_code == 2 and "--method: several criteria train together" in result.output
    result = runner.invoke(cli, ["train", str(data), "--out", str(out), "--criterion", "nope"])
    assert (
        result.exit_code == 2 and "no criterion 'nope'; the data declare wrong, share_late" in result.output
    )
    result = runner.invoke(cli, ["evaluate", "--data", str(data)])
    assert result.exit_code == 2 and "declare several criteria (wrong, share_late); name one" in result.output
    assert not out.exists()

    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "sentences": ["x."], "response_label": 1}) + "\n")
    result = runner.invoke(cli, ["train", str(plain), "--out", str(out), "--criterion", "wrong"])
    assert result.exit_code == 2 and "declare no criteria" in result.output

    bad = tmp_path / "bad.jsonl"
    lines = rows(2)
    lines[1]["criteria"]["wrong"]["sentence_labels"] = [0, 1, 0]  # its response label is 0
    bad.write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = runner.invoke(cli, ["train", str(bad), "--out", str(out), "--method", "priors"])
    assert result.exit_code == 2
    assert f"{bad}:2:criteria: criterion 'wrong', response_label:" in result.output
    assert not out.exists()
