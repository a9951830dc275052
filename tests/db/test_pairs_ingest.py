"""Preference pairs in the store: ingest (all or nothing, both engines), responses without a label of their own,
links to responses already stored, the CLI, and the store's own rules on the pairs table."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from db.integrity import check_store
from db.models import PreferencePair, Response
from db.pairs_cli import register
from db.pairs_ingest import ingest_pairs
from db.repository import list_datasets
from fractal_core.errors import InputError
from tests.db.conftest import store_digest, write_jsonl

PAIRS = [
    {
        "id": "p1",
        "context": "2 + 2?",
        "a_text": "It is 5. Done.",
        "b_id": "good",
        "b_text": "It is 4. Done.",
        "preferred": "b",
    },
    {
        "id": "p2",
        "context": "2 + 2?",
        "chosen_id": "good",
        "chosen_text": "It is 4. Done.",
        "rejected_sentences": ["It is 3.", "Done."],
        "strength": 0.5,
    },
]


def test_pairs_and_their_responses_are_stored(engine: Engine, tmp_path: Path) -> None:
    summary = ingest_pairs(engine, write_jsonl(tmp_path / "p.jsonl", PAIRS), "prefs", imported_by="ann")
    assert (summary.n_pairs, summary.n_responses, summary.n_linked, summary.n_sentences) == (2, 3, 0, 6)
    with engine.connect() as conn:
        labels = conn.execute(select(Response.external_id, Response.response_label)).all()
        pairs = conn.execute(
            select(
                PreferencePair.external_id,
                PreferencePair.strength,
                PreferencePair.source,
                PreferencePair.annotator,
            ).order_by(PreferencePair.external_id)
        ).all()
    assert sorted(labels) == [("good", None), ("p1:a", None), ("p2:rejected", None)]
    assert pairs == [("p1", 1.0, "imported", "ann"), ("p2", 0.5, "imported", "ann")]
    (row,) = [d for d in list_datasets(engine) if d.name == "prefs"]
    assert row.label_kind == "binary"
    assert not check_store(engine).drift


def test_a_second_file_links_stored_responses_and_refuses_changed_ones(
    engine: Engine, tmp_path: Path
) -> None:
    ingest_pairs(engine, write_jsonl(tmp_path / "p.jsonl", PAIRS), "prefs", imported_by="ann")
    more = [
        {
            "id": "p3",
            "a_id": "good",
            "a_text": "It is 4. Done.",
            "b_text": "Four? No: 6.",
            "preferred": "a",
            "context": "2 + 2?",
        }
    ]
    summary = ingest_pairs(engine, write_jsonl(tmp_path / "q.jsonl", more), "prefs", imported_by="ann")
    assert (summary.n_responses, summary.n_linked) == (1, 1)
    changed = [{**more[0], "id": "p4", "a_text": "It is four."}]
    before = store_digest(engine)
    with pytest.raises(InputError) as err:
        ingest_pairs(engine, write_jsonl(tmp_path / "r.jsonl", changed), "prefs", imported_by="ann")
    assert (err.value.line, err.value.field) == (
        1,
        "chosen response id",
    ) and "another text" in err.value.reason
    assert store_digest(engine) == before


@pytest.mark.parametrize(
    ("rows", "line", "field"),
    [
        ([PAIRS[0], {**PAIRS[1], "strength": 2}], 2, "strength"),
        ([PAIRS[0], {**PAIRS[1], "rejected_response_label": 7}], 2, None),  # does not fit a binary dataset
        ([PAIRS[0], PAIRS[0]], 2, "id"),
    ],
)
def test_bad_files_write_nothing(
    engine: Engine, tmp_path: Path, rows: list, line: int, field: str | None
) -> None:
    ingest_pairs(
        engine,
        write_jsonl(tmp_path / "seed.jsonl", [{**PAIRS[0], "id": "p0", "b_id": "x", "a_id": "y"}]),
        "prefs",
        label_kind="binary",
    )
    before = store_digest(engine)
    with pytest.raises(InputError) as err:
        ingest_pairs(engine, write_jsonl(tmp_path / "bad.jsonl", rows), "prefs")
    assert err.value.line == line and (field is None or err.value.field == field)
    assert store_digest(engine) == before


def test_the_same_file_twice_and_a_stored_pair_id_are_refused(engine: Engine, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    ingest_pairs(engine, path, "prefs")
    with pytest.raises(InputError, match="already ingested"):
        ingest_pairs(engine, path, "prefs")
    with pytest.raises(InputError, match="pair id 'p1' is already stored"):
        ingest_pairs(engine, write_jsonl(tmp_path / "again.jsonl", PAIRS[:1]), "prefs")


def test_the_pairs_table_keeps_its_own_rules(engine: Engine, tmp_path: Path) -> None:
    ingest_pairs(engine, write_jsonl(tmp_path / "p.jsonl", PAIRS), "prefs")
    with engine.begin() as conn:
        rid, ds = conn.execute(select(Response.id, Response.dataset_id).limit(1)).one()
    bad = [
        {"chosen_id": rid, "rejected_id": rid, "strength": 1.0, "source": "imported"},
        {"chosen_id": rid, "rejected_id": rid + 1, "strength": 1.5, "source": "imported"},
        {"chosen_id": rid, "rejected_id": rid + 1, "strength": 1.0, "source": "human"},
    ]
    for i, values in enumerate(bad):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                PreferencePair.__table__.insert(),
                {"dataset_id": ds, "external_id": f"x{i}", "annotator": "a", "meta": {}, **values},
            )
    with pytest.raises(IntegrityError), engine.begin() as conn:  # a present response label stays bounded
        conn.execute(text("UPDATE responses SET response_label = -1 WHERE id = :i"), {"i": rid})
    with engine.begin() as conn:  # deleting a response deletes its pairs
        conn.execute(text("DELETE FROM responses WHERE external_id = 'good'"))
        assert conn.scalar(select(func.count()).select_from(PreferencePair)) == 0


def _invoke(engine: Engine, *args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["pairs", "ingest", *args, "--db", url])
    return result.exit_code, result.stdout + result.stderr


def test_cli_ingests_and_refuses_bad_input_with_one_line(engine: Engine, tmp_path: Path) -> None:
    code, out = _invoke(engine, str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), "--dataset", "prefs")
    assert code == 0 and "ingested 2 preference pairs, 3 responses" in out
    before = store_digest(engine, logical=True)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**PAIRS[0], "id": "p9", "preferred": "c"}])
    code, out = _invoke(engine, str(bad), "--dataset", "prefs")
    assert code == 2 and out.strip().count("\n") == 0
    assert f"{bad}:1:preferred" in out
    assert store_digest(engine, logical=True) == before


def test_migration_keeps_labels_and_downgrades_only_without_unlabelled_responses(db_url: str) -> None:
    from alembic import command

    from db.engine import get_engine
    from db.schema import alembic_config, current_revision, migrating, upgrade

    eng = get_engine(db_url, check_schema=False)
    upgrade(eng, "0013")
    with eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (name, description, label_kind, max_label, gold_target, overlap_k, "
                "overlap_fraction, guidelines, created_at) VALUES ('d', '', 'binary', 1, 0.1, 1, 0, '', "
                "CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO responses (dataset_id, external_id, context, text, response_label, aggregation, "
                "label_kind, meta, n_sentences, n_gold) SELECT id, 'r', '', 't', 1, 'max', 'binary', '{}', 1, 0 "
                "FROM datasets"
            )
        )
    upgrade(eng)
    with eng.begin() as conn:
        assert conn.scalar(text("SELECT response_label FROM responses")) == 1.0
        conn.execute(text("UPDATE responses SET response_label = NULL"))
    with migrating(eng) as conn, pytest.raises(RuntimeError, match="cannot be downgraded"):
        command.downgrade(alembic_config(conn), "0013")
    with eng.begin() as conn:
        conn.execute(text("UPDATE responses SET response_label = 1"))
    with migrating(eng) as conn:
        command.downgrade(alembic_config(conn), "0013")
    assert current_revision(eng) == "0013"
    with pytest.raises(IntegrityError), eng.begin() as conn:
        conn.execute(text("UPDATE responses SET response_label = NULL"))
    eng.dispose()


@pytest.mark.parametrize("fmt", ["native", "stepwise-jsonl", "prm800k", "kto"])
def test_existing_exports_of_a_pairs_dataset(engine: Engine, tmp_path: Path, fmt: str) -> None:
    """Responses without a label of their own export with a null label (native), and KTO, which needs one,
    leaves them out; no format fails on them."""
    import json

    from db.export import export_dataset

    rows = [{**PAIRS[0], "a_response_label": 1}]
    ingest_pairs(engine, write_jsonl(tmp_path / "p.jsonl", rows), "prefs")
    out = tmp_path / "out.jsonl"
    export_dataset(engine, "prefs", out, format=fmt)  # type: ignore[arg-type]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    if fmt == "native":
        assert sorted((r["id"], r["response_label"]) for r in lines) == [("good", None), ("p1:a", 1)]
    elif fmt == "kto":
        assert [r["id"] for r in lines] == ["p1:a"]
    else:  # step formats write responses with step labels; these have none yet
        assert lines == []


def test_cli_trains_a_model_from_a_pairs_file(tmp_path: Path) -> None:
    from fractal_core.fitting.estimator import FractalModel

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["pairs", "train", str(path), "--out", str(out), "--max-epochs", "2"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "trained from 2 preference pairs (3 responses)" in result.stdout
    model = FractalModel.load(out)
    assert model.resolved_method_ == "preference" and model.aggregation_ == "max"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**PAIRS[0], "strength": -1}])
    result = CliRunner().invoke(app, ["pairs", "train", str(bad), "--out", str(tmp_path / "m2")])
    assert result.exit_code == 2 and f"{bad}:1:strength" in result.stderr
    assert not (tmp_path / "m2").exists()


def test_cli_trains_pairs_beside_their_responses_labels_unless_told_not_to(tmp_path: Path) -> None:
    from fractal_core.fitting.estimator import FractalModel

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    labelled = [
        {**PAIRS[0], "a_response_label": 1, "b_response_label": 0},
        {**PAIRS[1], "chosen_response_label": 0, "rejected_response_label": 1},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", labelled)
    args = ["pairs", "train", str(path), "--max-epochs", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "beside")])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "trained from 2 preference pairs beside 3 response labels (3 responses)" in result.stdout
    assert FractalModel.load(tmp_path / "beside").resolved_method_ == "preference+labels"
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "alone"), "--response-labels", "alone"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "trained from 2 preference pairs (3 responses)" in result.stdout
    assert FractalModel.load(tmp_path / "alone").resolved_method_ == "preference"
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--response-labels", "both"])
    assert result.exit_code == 2 and "--response-labels: expected one of beside, alone" in result.stderr
    assert not (tmp_path / "bad").exists()
