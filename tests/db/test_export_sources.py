"""Every export format carries each label's source and who set it, and agrees with native on both; the
human-only and soft-label options; first-error data ends each erroneous solution at its first error."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from typer.testing import CliRunner

from db import repository as repo
from db import team
from db.cli import register
from db.export import LEFT_OUT_CONTRADICTS, export_dataset
from db.ingest import ingest_file
from tests.db.conftest import processbench_valid, write_jsonl

SOURCES = ("none", "imported", "human", "model", "adjudicated")
_names = itertools.count()

response_st = st.tuples(
    st.integers(0, 1),  # response label
    st.lists(st.tuples(st.sampled_from(SOURCES), st.integers(0, 1)), min_size=1, max_size=4),
)


def _build(
    engine: Engine,
    tmp_path: Path,
    responses: list[Any],
    scores: list[float] | None,
    metrics: dict[str, Any] | None = None,
) -> str:
    """A max-bag dataset whose sentences carry the drawn labels from the drawn sources (imported ones only
    where a file may hold them: consistent with the response label), and optionally a model's scores."""
    name = f"p{next(_names)}"
    rows = []
    for i, (label, sents) in enumerate(responses):
        imported = [lab if src == "imported" and (label == 1 or lab == 0) else None for src, lab in sents]
        if label == 1 and all(v is not None for v in imported) and 1 not in imported:
            imported[-1] = 1
        row: dict[str, Any] = {
            "id": f"x{i}",
            "context": f"Q{i}?",
            "sentences": [f"Step {j} of {i}." for j in range(len(sents))],
            "response_label": label,
            "aggregation": "max",
        }
        if any(v is not None for v in imported):
            row["sentence_labels"] = imported
        rows.append(row)
    ds = ingest_file(engine, write_jsonl(tmp_path / f"{uuid.uuid4().hex}.jsonl", rows), name).dataset_id
    for i, (_, sents) in enumerate(responses):
        detail = repo.get_response(engine, repo.response_id_by_external(engine, ds, f"x{i}") or -1)
        for source in ("human", "model"):
            labels = {
                s.id: lab for s, (src, lab) in zip(detail.sentences, sents, strict=True) if src == source
            }
            if labels:
                repo.record_labels(engine, detail.id, labels, "ann", source=source)
        adjudicated = {
            s.id: lab for s, (src, lab) in zip(detail.sentences, sents, strict=True) if src == "adjudicated"
        }
        if adjudicated:
            team.adjudicate(engine, detail.id, adjudicated, "rita")
    if scores is not None:
        ids = repo.load_training_set(engine, ds).sentence_ids
        mv = repo.create_model_version(engine, ds, method="fractal")
        repo.store_scores(engine, mv.id, ids, np.resize(np.asarray(scores), len(ids)))
        repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id, metrics=metrics).id)
    return name


def _lines(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    responses=st.lists(response_st, min_size=1, max_size=4),
    scores=st.none() | st.lists(st.floats(0.02, 0.98), min_size=1, max_size=6),
    human_only=st.booleans(),
    soft=st.booleans(),
    fill=st.booleans(),
)
def test_every_format_agrees_with_native_on_label_and_source(
    engine: Engine,
    tmp_path: Path,
    responses: list[Any],
    scores: list[float] | None,
    human_only: bool,
    soft: bool,
    fill: bool,
) -> None:
    name = _build(engine, tmp_path, responses, scores)
    opts = {"human_only": human_only, "soft_labels": soft, "scores_as_labels": fill}
    out = {}
    for fmt in ("native", "stepwise-jsonl", "stepwise-parquet", "prm800k", "kto"):
        out[fmt] = tmp_path / f"{name}.{fmt}"
        export_dataset(engine, name, out[fmt], format=fmt, **opts)  # type: ignore[arg-type]
    native = _lines(out["native"])
    stepwise = _lines(out["stepwise-jsonl"])
    assert pq.read_table(out["stepwise-parquet"]).to_pylist() == list(stepwise.values())
    prm = _lines(out["prm800k"])
    kto = _lines(out["kto"])
    assert set(native) == set(kto) and set(stepwise) == set(prm) <= set(native)
    for rid, row in native.items():
        block = row["meta"]["fractal"]
        truth = [
            (None, "none", None) if x is None else (x["label"], x["source"], x["annotator"])
            for x in block["labels"]
        ]
        if human_only:
            assert {src for _, src, _ in truth} <= {"human", "adjudicated", "none"}
        assert (
            list(zip(kto[rid]["sentence_labels"], kto[rid]["sources"], kto[rid]["annotators"], strict=True))
            == truth
        )
        if rid not in stepwise:
            # Left out only when the labels contradict the response label, or a step would need a label
            # that neither a person nor (when asked) the model gives.
            unlabelled = any(lab is None for lab, _, _ in truth)
            assert not block["consistent"] or (unlabelled and not soft)
            assert row["sentence_labels"] is None or not block["consistent"] or unlabelled
            continue
        assert block["consistent"]
        steps = stepwise[rid]
        m = len(steps["labels"])
        labelled = [lab for lab, _, _ in truth]
        first_error = next((i for i, v in enumerate(labelled) if v != 0), None)
        assert m == len(truth) or (
            first_error is not None
            and labelled[first_error] == 1
            and m == first_error + 1
            and all(v is None for v in labelled[m:])
        )
        prm_steps = [s["completions"][0] for s in prm[rid]["label"]["steps"]]
        assert len(prm_steps) == m
        for i, (lab, src, who) in enumerate(truth[:m]):
            if lab is None:
                expected = "score" if fill and steps["sources"][i] == "score" else "none"
                assert steps["sources"][i] == prm_steps[i]["source"] == expected
                assert steps["labels"][i] is None or expected == "score"
            else:
                assert (steps["labels"][i], steps["sources"][i], steps["annotators"][i]) == (
                    lab == 0,
                    src,
                    who,
                )
                assert (prm_steps[i]["rating"], prm_steps[i]["source"]) == (1 if lab == 0 else -1, src)
        assert len(steps["completions"]) == m


def test_human_only_keeps_labels_a_person_set(engine: Engine, tmp_path: Path) -> None:
    name = _build(
        engine,
        tmp_path,
        [(1, [("imported", 0), ("human", 0), ("model", 1), ("adjudicated", 1)])],
        None,
    )
    export_dataset(engine, name, tmp_path / "all.jsonl", format="native")
    export_dataset(engine, name, tmp_path / "h.jsonl", format="native", human_only=True)
    everything = _lines(tmp_path / "all.jsonl")["x0"]["meta"]["fractal"]["labels"]
    human = _lines(tmp_path / "h.jsonl")["x0"]["meta"]["fractal"]["labels"]
    assert [x["source"] for x in everything] == ["imported", "human", "model", "adjudicated"]
    assert [x and x["source"] for x in human] == [None, "human", None, "adjudicated"]
    code = CliRunner().invoke(
        _cli(),
        [
            "export",
            str(tmp_path / "k.jsonl"),
            "--dataset",
            name,
            "--format",
            "kto",
            "--human-only",
            "--db",
            engine.url.render_as_string(hide_password=False),
        ],
    )
    assert code.exit_code == 0, code.stdout
    assert _lines(tmp_path / "k.jsonl")["x0"]["sources"] == ["none", "human", "none", "adjudicated"]


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_soft_labels_are_the_score_given_the_response_label(engine: Engine, tmp_path: Path) -> None:
    # x0 labelled 0: every sentence is fine given the label; x1 labelled 1 with nothing entered: the scores
    # rise given that some sentence is a problem.
    name = _build(
        engine, tmp_path, [(0, [("none", 0)] * 3), (1, [("none", 0), ("none", 0)])], [0.3, 0.6, 0.2]
    )
    export_dataset(engine, name, tmp_path / "n.jsonl", format="native", soft_labels=True)
    rows = _lines(tmp_path / "n.jsonl")
    assert rows["x0"]["meta"]["fractal"]["soft_labels"] == [0.0, 0.0, 0.0]
    scores = rows["x1"]["meta"]["fractal"]["scores"]
    soft = rows["x1"]["meta"]["fractal"]["soft_labels"]
    either = 1 - (1 - scores[0]) * (1 - scores[1])
    assert soft == [
        np.float64(scores[0] / either).item(),
        np.float64(scores[1] / either).item(),
    ] or np.allclose(soft, [scores[0] / either, scores[1] / either])
    summary = export_dataset(engine, name, tmp_path / "s.jsonl", format="stepwise-jsonl", soft_labels=True)
    steps = _lines(tmp_path / "s.jsonl")
    assert summary.n_skipped == 0 and steps["x1"]["labels"] == [None, None]  # no score became a label
    assert np.allclose(steps["x1"]["soft_labels"], [1 - v for v in soft])  # P(step is good)
    assert steps["x1"]["sources"] == ["none", "none"]


@pytest.mark.parametrize("chosen", [True, False])
def test_the_view_reads_scores_through_the_step_calibration_chosen_for_it(
    engine: Engine, tmp_path: Path, chosen: bool
) -> None:
    # A version whose step calibration was chosen on valid for the given-label view: Review (view_score) and the
    # soft labels of every export read the stored scores through it; the raw score stays as it was.
    step = {"scale": 0.5, "bias": -1.0, "given_label": chosen, "fitted_on": "gold_steps", "n_fitted": 40}
    name = _build(engine, tmp_path, [(1, [("none", 0), ("none", 0)])], [0.3, 0.6], {"step_calibration": step})
    ds = repo.get_dataset(engine, name)
    assert ds is not None
    detail = repo.get_response(engine, repo.response_id_by_external(engine, ds.id, "x0") or -1)
    raw = np.array([s.score for s in detail.sentences], dtype=np.float64)
    basis = 1 / (1 + np.exp(-(0.5 * np.log(raw / (1 - raw)) - 1.0))) if chosen else raw
    assert np.allclose([s.view_score for s in detail.sentences], basis)
    export_dataset(engine, name, tmp_path / "n.jsonl", format="native", soft_labels=True)
    fractal = _lines(tmp_path / "n.jsonl")["x0"]["meta"]["fractal"]
    assert np.allclose(fractal["scores"], raw)  # the raw score is exported unchanged
    either = 1 - (1 - basis[0]) * (1 - basis[1])
    assert np.allclose(fractal["soft_labels"], basis / either)


def test_first_error_data_ends_each_erroneous_solution_at_its_first_error(
    engine: Engine, tmp_path: Path
) -> None:
    rows = [
        {"id": "bad", "context": "Q", "sentences": ["a.", "b.", "c.", "d."], "response_label": 1,
         "aggregation": "max", "sentence_labels": [0, 1, None, None]},
        {"id": "good", "context": "Q", "sentences": ["a.", "b."], "response_label": 0, "aggregation": "max",
         "sentence_labels": [0, 0]},
    ]  # fmt: skip
    ingest_file(engine, write_jsonl(tmp_path / "fe.jsonl", rows), "fe", labels_as="gold")
    summary = export_dataset(engine, "fe", tmp_path / "s.jsonl", format="stepwise-jsonl")
    steps = _lines(tmp_path / "s.jsonl")
    assert (summary.n_rows, summary.n_skipped) == (2, 0)
    assert steps["bad"]["completions"] == ["a.", "b."] and steps["bad"]["labels"] == [True, False]
    assert steps["bad"]["sources"] == ["imported_gold"] * 2
    export_dataset(engine, "fe", tmp_path / "p.jsonl", format="prm800k")
    prm = _lines(tmp_path / "p.jsonl")["bad"]["label"]
    assert [s["completions"][0]["rating"] for s in prm["steps"]] == [1, -1] and prm[
        "finish_reason"
    ] == "found_error"


def test_processbench_validation_keeps_every_solution(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, processbench_valid(), "pb", labels_as="gold")
    summary = export_dataset(engine, "pb", tmp_path / "pb.jsonl", format="stepwise-jsonl")
    assert (summary.n_rows, summary.n_skipped) == (352, 0)
    rows = list(_lines(tmp_path / "pb.jsonl").values())
    assert sum(not all(r["labels"]) for r in rows) == 234  # every erroneous solution, ending at its error
    assert all(r["labels"][-1] is False for r in rows if not all(r["labels"]))


def test_a_contradicting_label_is_in_no_step_format(engine: Engine, tmp_path: Path) -> None:
    name = _build(engine, tmp_path, [(1, [("human", 0), ("human", 0)])], [0.5])
    export_dataset(engine, name, tmp_path / "n.jsonl", format="native")
    assert _lines(tmp_path / "n.jsonl")["x0"]["sentence_labels"] is None
    summary = export_dataset(
        engine, name, tmp_path / "s.jsonl", format="stepwise-jsonl", scores_as_labels=True
    )
    assert summary.left_out == {LEFT_OUT_CONTRADICTS: 1} and _lines(tmp_path / "s.jsonl") == {}
