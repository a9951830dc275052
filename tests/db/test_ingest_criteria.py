"""A file with several criteria is stored as one dataset per criterion (``GROUP.<criterion>``) of one group:
the same responses and sentences in every sibling, each with its criterion's labels (source imported); every
refusal leaves the store as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from db import repository as repo
from db.cli import register
from db.engine import get_engine, run_read
from db.ingest import ingest_file
from db.models import Response, Sentence
from db.sources import IMPORTED
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, store_digest, write_jsonl


def criteria_rows(n: int, *, prefix: str = "c") -> list[dict[str, Any]]:
    """``n`` responses judged on ``wrong`` (max, with the rows' sentence labels) and ``helpful`` (ordinal 0..2)."""
    rows = []
    for i, row in enumerate(make_rows(n, prefix=prefix)):
        label = row.pop("response_label")
        row.pop("aggregation")
        sentence_labels = row.pop("sentence_labels", None)
        row["criteria"] = {
            "wrong": {"response_label": label, "aggregation": "max", "sentence_labels": sentence_labels},
            "helpful": {"response_label": i % 3},
        }
        rows.append(row)
    return rows


def _stored(engine: Any, dataset_id: int) -> list[tuple[str, float | None, list[tuple[int, int, str]]]]:
    def work(session: Any) -> list[tuple[str, float | None, list[tuple[int, int, str]]]]:
        out = []
        for r in session.scalars(
            select(Response).where(Response.dataset_id == dataset_id).order_by(Response.external_id)
        ):
            spans = session.execute(
                select(Sentence.start, Sentence.end, Sentence.text)
                .where(Sentence.response_id == r.id)
                .order_by(Sentence.position)
            ).all()
            out.append((r.external_id, r.response_label, [tuple(s) for s in spans]))
        return out

    return run_read(engine, work)


def test_a_criteria_file_fills_one_dataset_per_criterion_with_the_same_responses(
    db_url: str, tmp_path: Path
) -> None:
    engine = get_engine(db_url)
    rows = criteria_rows(7)
    summary = ingest_file(engine, write_jsonl(tmp_path / "train.jsonl", rows), "rated", chunk_size=3)
    assert summary.criteria_datasets == ("rated.wrong", "rated.helpful")
    assert len(summary.dataset_ids()) == 2 and summary.n_responses == 7
    by_name = {d.name: d for d in repo.list_datasets(engine)}
    assert set(by_name) == {"rated.wrong", "rated.helpful"}
    wrong, helpful = by_name["rated.wrong"], by_name["rated.helpful"]
    assert (wrong.criteria_group, wrong.criterion, wrong.label_kind) == ("rated", "wrong", "binary")
    assert (helpful.criteria_group, helpful.criterion, helpful.label_kind) == ("rated", "helpful", "ordinal")
    assert helpful.max_label == 2
    assert [d.criterion for d in repo.criteria_siblings(engine, wrong.id)] == ["helpful", "wrong"]
    assert repo.criteria_siblings(engine, wrong.id) == repo.criteria_siblings(engine, helpful.id)
    stored_wrong, stored_helpful = _stored(engine, wrong.id), _stored(engine, helpful.id)
    # Same ids and the same sentences (offsets and text) in both; each its own criterion's response label.
    assert [(i, s) for i, _, s in stored_wrong] == [(i, s) for i, _, s in stored_helpful]
    want = {r["id"]: r["criteria"] for r in rows}
    assert all(label == want[i]["wrong"]["response_label"] for i, label, _ in stored_wrong)
    assert all(label == want[i]["helpful"]["response_label"] for i, label, _ in stored_helpful)
    assert len(repo.load_records(engine, helpful.id, split="train")) == 7
    # Sentence labels: the criterion's own, stored as imported; the other criterion has none.
    labelled = [r for r in repo.load_records(engine, wrong.id, include_imported=True) if r.sentence_labels]
    assert sorted(r.id for r in labelled) == sorted(
        i for i, c in want.items() if c["wrong"]["sentence_labels"]
    )
    for record in labelled:
        assert record.sentence_labels == want[record.id]["wrong"]["sentence_labels"]
    assert summary.labels_source == IMPORTED
    assert not any(r.sentence_labels for r in repo.load_records(engine, helpful.id, include_imported=True))
    # A second file with the same criteria extends every sibling.
    ingest_file(engine, write_jsonl(tmp_path / "more.jsonl", criteria_rows(2, prefix="m")), "rated")
    assert {d.name: d.n_responses for d in repo.list_datasets(engine)} == {
        "rated.wrong": 9,
        "rated.helpful": 9,
    }


def _refused(engine: Any, path: Path, dataset: str, line: int | None, field: str, words: str) -> None:
    before = store_digest(engine, logical=True)
    with pytest.raises(InputError) as err:
        ingest_file(engine, path, dataset, chunk_size=2)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert words in str(err.value)
    assert store_digest(engine, logical=True) == before


def test_refusals_write_nothing_in_any_sibling(db_url: str, tmp_path: Path) -> None:
    engine = get_engine(db_url)
    ingest_file(engine, write_jsonl(tmp_path / "plain.jsonl", make_rows(3)), "plain")
    ingest_file(engine, write_jsonl(tmp_path / "first.jsonl", criteria_rows(3)), "rated")
    # A bad label on the last line (after chunks were staged): nothing of the file in any sibling.
    rows = criteria_rows(5, prefix="x")
    rows[4]["criteria"]["helpful"]["response_label"] = -1
    _refused(engine, write_jsonl(tmp_path / "bad.jsonl", rows), "rated", 5, "criteria", "helpful")
    # A level the existing sibling's fixed kind does not allow (wrong is binary).
    rows = criteria_rows(4, prefix="y")
    rows[3]["criteria"]["wrong"] = {"response_label": 2, "aggregation": "max"}
    _refused(engine, write_jsonl(tmp_path / "level.jsonl", rows), "rated", 4, "response_label", "rated.wrong")
    # Another set of criteria than the group's.
    rows = criteria_rows(2, prefix="z")
    for row in rows:
        row["criteria"].pop("helpful")
    _refused(engine, write_jsonl(tmp_path / "other.jsonl", rows), "rated", 1, "criteria", "same criteria")
    # An id already stored in the group.
    _refused(engine, write_jsonl(tmp_path / "again.jsonl", criteria_rows(2)), "rated", 1, "id", "'c0'")
    # The same file twice.
    _refused(engine, tmp_path / "first.jsonl", "rated", None, None, "already ingested")  # type: ignore[arg-type]
    # A criterion name that cannot name a dataset.
    rows = criteria_rows(2, prefix="w")
    for row in rows:
        row["criteria"]["is helpful?"] = row["criteria"].pop("helpful")
    _refused(engine, write_jsonl(tmp_path / "name.jsonl", rows), "new", 1, "criteria", "is helpful?")
    # A single-label file into one criterion's dataset, and a criteria file whose dataset exists ungrouped.
    single = write_jsonl(tmp_path / "single.jsonl", make_rows(2, prefix="s"))
    _refused(engine, single, "rated.wrong", None, "dataset", "every criterion of the group")
    _refused(engine, single, "rated", None, "dataset", "is a group of criteria")
    path = write_jsonl(tmp_path / "g2.jsonl", criteria_rows(2, prefix="g"))
    _refused(engine, path, "plain", 1, "dataset", "makes a group")
    _refused(engine, path, "rated.wrong", 1, "dataset", "of group 'rated'")
    ingest_file(engine, write_jsonl(tmp_path / "p2.jsonl", make_rows(2, prefix="q")), "other.wrong")
    path = write_jsonl(tmp_path / "o.jsonl", criteria_rows(2, prefix="o"))
    _refused(engine, path, "other", None, "dataset", "outside any group")
    assert {d.name: d.n_responses for d in repo.list_datasets(engine)} == {
        "plain": 3,
        "rated.helpful": 3,
        "rated.wrong": 3,
        "other.wrong": 2,
    }


def test_cli_ingest_of_a_criteria_file_names_its_datasets_and_refuses_with_exit_2(
    store_url: str, tmp_path: Path
) -> None:
    cli = typer.Typer()
    register(cli)

    def run(*args: object) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, [str(a) for a in args])
        return result.exit_code, result.stdout, result.stderr

    good = write_jsonl(tmp_path / "train.jsonl", criteria_rows(3))
    code, out, err = run("ingest", good, "--dataset", "rated", "--db", store_url)
    assert code == 0, err
    assert "ingested 3 responses" in out and "rated.wrong, rated.helpful" in out
    rows = criteria_rows(2, prefix="b")
    rows[1]["criteria"]["wrong"]["response_label"] = "x"
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    code, out, err = run("ingest", bad, "--dataset", "rated", "--db", store_url)
    assert code == 2
    assert "bad.jsonl" in err and ":2" in err and "criteria" in err, err
    code, out, _ = run("db", "datasets", "--db", store_url)
    assert "rated.helpful: 3 responses" in out and "rated.wrong: 3 responses" in out


def test_migration_0015_upgrades_a_store_with_data_and_refuses_to_downgrade_past_a_group(
    db_url: str, tmp_path: Path
) -> None:
    from alembic import command

    from db.schema import alembic_config, current_revision, head_revision, migrating, upgrade

    engine = get_engine(db_url)
    ingest_file(engine, write_jsonl(tmp_path / "plain.jsonl", make_rows(3)), "plain")
    with migrating(engine) as conn:
        command.downgrade(alembic_config(conn), "0014")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert [(d.name, d.criteria_group) for d in repo.list_datasets(engine)] == [("plain", None)]
    ingest_file(engine, write_jsonl(tmp_path / "c.jsonl", criteria_rows(2)), "rated")
    with pytest.raises(RuntimeError, match="cannot be downgraded"), migrating(engine) as conn:
        command.downgrade(alembic_config(conn), "0014")
    assert current_revision(engine) == head_revision()
