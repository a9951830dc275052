"""Hostile input against the store (issue 10, cases 1-4 and 8), on SQLite and PostgreSQL: forged provenance is
data, a dataset's label kind is fixed, ordinal levels are bounded, and strings that one engine would refuse are
refused by the reader for both, with ``file:line:field`` and the store unchanged."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import Engine
from typer.testing import CliRunner

from db import repository as repo
from db.cli import register
from db.ingest import ingest_file
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, store_digest, write_jsonl

SENTENCES = ["First step.", "Second step."]


def _row(i: int, label: float = 1, **extra: Any) -> dict[str, Any]:
    return {"id": f"x{i}", "sentences": SENTENCES, "response_label": label, **extra}


def _raw(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _labels(engine: Engine, dataset: str) -> list[tuple[int | None, str | None, str | None]]:
    ds = repo.require_dataset(engine, dataset)
    out = []
    for row in repo.list_responses(engine, ds.id, sort="id", page_size=500).rows:
        out += [(s.label, s.label_source, s.annotator) for s in repo.get_response(engine, row.id).sentences]
    return out


# --- case 1: provenance in a file is data, never authority ------------------------------------------------


def test_forged_gold_in_meta_fractal_labels_is_not_stored(engine: Engine, tmp_path: Path) -> None:
    forged = {
        "fractal": {
            "labels": [
                {"label": 7, "source": "gold", "annotator": "boss", "at": "2001-01-01T00:00:00+00:00"},
                {"label": 1, "source": "reviewed", "annotator": "boss", "at": "2001-01-01T00:00:00+00:00"},
            ]
        }
    }
    rows = [_row(0, 1, meta=forged), _row(1, 0, meta=forged)]
    summary = ingest_file(engine, write_jsonl(tmp_path / "f.jsonl", rows), "bin")
    assert summary.n_labels == 0
    assert _labels(engine, "bin") == [(None, None, None)] * 4
    ds = repo.require_dataset(engine, "bin")
    assert (ds.label_kind, ds.n_gold_responses) == ("binary", 0)
    assert repo.get_response(engine, repo.response_id_by_external(engine, ds.id, "x0") or -1).meta == {}


def test_file_labels_are_imported_by_the_importing_user_now(engine: Engine, tmp_path: Path) -> None:
    rows = [_row(0, 1, sentence_labels=[0, 1]), _row(1, 0, sentence_labels=[0, None])]
    before = datetime.now(UTC) - timedelta(seconds=1)
    ingest_file(engine, write_jsonl(tmp_path / "f.jsonl", rows), "imp", imported_by="carol")
    assert _labels(engine, "imp") == [
        (0, "imported", "carol"),
        (1, "imported", "carol"),
        (0, "imported", "carol"),
        (None, None, None),
    ]
    history = repo.label_history(engine, response_id=1)
    assert all(h.at >= before and h.source == "imported" for h in history)
    # Gold only by an explicit choice, and validated like any label (7 is not a binary label).
    bad = write_jsonl(tmp_path / "g.jsonl", [_row(5, 7, sentence_labels=[7, 1])])
    digest = store_digest(engine)
    with pytest.raises(
        InputError, match="g.jsonl:1:response_label: response_label is 7 but dataset 'imp' is binary"
    ):
        ingest_file(engine, bad, "imp", labels_as="gold")
    assert store_digest(engine) == digest


# --- case 2: a dataset's label kind is fixed when it is created ---------------------------------------------


def test_one_row_cannot_change_a_datasets_label_kind(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, write_jsonl(tmp_path / "a.jsonl", [_row(0, 1), _row(1, 0)]), "bin")
    digest = store_digest(engine)
    ordinal_row = write_jsonl(tmp_path / "b.jsonl", [_row(2, 0), _row(3, 2)])
    with pytest.raises(InputError) as err:
        ingest_file(engine, ordinal_row, "bin")
    assert "b.jsonl:2:response_label: response_label is 2 but dataset 'bin' is binary" in str(err.value)
    assert store_digest(engine) == digest
    assert repo.require_dataset(engine, "bin").label_kind == "binary"
    with pytest.raises(InputError, match="already binary"):
        ingest_file(engine, ordinal_row, "bin", label_kind="ordinal:3")
    # Declared at creation: ordinal with 5 levels takes 0..4, a 5 is refused even in the first file.
    ingest_file(engine, ordinal_row, "ord", label_kind="ordinal:5")
    ds = repo.require_dataset(engine, "ord")
    assert (ds.label_kind, ds.max_label) == ("ordinal", 4)
    with pytest.raises(InputError, match="ordinal with levels 0..4"):
        ingest_file(engine, write_jsonl(tmp_path / "c.jsonl", [_row(9, 5)]), "ord")
    with pytest.raises(InputError, match="ordinal with levels 0..4"):
        ingest_file(engine, write_jsonl(tmp_path / "d.jsonl", [_row(9, 5)]), "new", label_kind="ordinal:5")
    # Derived from the first file when not declared; later files must fit it.
    ingest_file(engine, write_jsonl(tmp_path / "e.jsonl", [_row(0, 3), _row(1, 1)]), "derived")
    assert repo.require_dataset(engine, "derived").max_label == 3
    with pytest.raises(InputError, match="is 4"):
        ingest_file(engine, write_jsonl(tmp_path / "f.jsonl", [_row(7, 4)]), "derived")
    ingest_file(engine, write_jsonl(tmp_path / "g.jsonl", [_row(7, 1)]), "derived")


def test_cli_declares_the_label_kind_and_refuses_misfits_with_exit_2(store_url: str, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    data = write_jsonl(tmp_path / "a.jsonl", [_row(0, 1), _row(1, 0)])
    result = runner.invoke(
        app, ["ingest", str(data), "--dataset", "d", "--label-kind", "ordinal:4", "--db", store_url]
    )
    assert result.exit_code == 0, result.output
    bad = write_jsonl(tmp_path / "b.jsonl", [_row(2, 3.5)])
    result = runner.invoke(app, ["ingest", str(bad), "--dataset", "d", "--db", store_url])
    assert result.exit_code == 2 and "b.jsonl:1:response_label" in result.stderr
    result = runner.invoke(
        app, ["ingest", str(data), "--dataset", "e", "--label-kind", "trinary", "--db", store_url]
    )
    assert result.exit_code == 2 and "label kind must be" in result.stderr


# --- case 3: ordinal levels are bounded integers -----------------------------------------------------------


@pytest.mark.parametrize("label", [1e308, 101, 2.5, -1])
def test_ordinal_levels_are_bounded_integers(engine: Engine, tmp_path: Path, label: float) -> None:
    ingest_file(engine, write_jsonl(tmp_path / "ok.jsonl", make_rows(2)), "demo")
    digest = store_digest(engine)
    with pytest.raises(InputError, match="b.jsonl:2:response_label"):
        ingest_file(engine, write_jsonl(tmp_path / "b.jsonl", [_row(0, 0), _row(1, label)]), "x")
    assert store_digest(engine) == digest
    ingest_file(engine, write_jsonl(tmp_path / "top.jsonl", [_row(0, 100), _row(1, 0)]), "top")
    assert repo.require_dataset(engine, "top").max_label == 100


# --- cases 4 and 8: strings every engine accepts, or exit 2 for all ----------------------------------------

HOSTILE = {
    "lone surrogate in a sentence": (
        '{"id": "a", "sentences": ["ok \\ud800"], "response_label": 0}',
        "sentences",
    ),
    "lone surrogate in meta": (
        '{"id": "a", "sentences": ["ok"], "response_label": 0, "meta": {"k": "\\udfff"}}',
        "meta",
    ),
    "NUL in the context": (
        '{"id": "a", "context": "a\\u0000b", "sentences": ["ok"], "response_label": 0}',
        "context",
    ),
    "NUL in the id": ('{"id": "a\\u0000", "sentences": ["ok"], "response_label": 0}', "id"),
    "NUL in a meta key": (
        '{"id": "a", "sentences": ["ok"], "response_label": 0, "meta": {"\\u0000": 1}}',
        "meta",
    ),
    "NaN in meta": ('{"id": "a", "sentences": ["ok"], "response_label": 0, "meta": {"k": NaN}}', "meta"),
    "600-character id": (json.dumps({"id": "i" * 600, "sentences": ["ok"], "response_label": 0}), "id"),
    "300-character task": (
        json.dumps({"id": "a", "sentences": ["ok"], "response_label": 0, "task": "t" * 300}),
        "task",
    ),
    "meta nested too deeply": (
        '{"id": "a", "sentences": ["ok"], "response_label": 0, "meta": ' + '{"k": ' * 40 + "1" + "}" * 41,
        "meta",
    ),
    "JSON nested beyond the parser": ('{"id": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", None),
    "span end past the text": (
        json.dumps(
            {"id": "a", "text": "One.", "sentences": ["One."], "spans": [[0, 40]], "response_label": 0}
        ),
        "spans",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_strings_exit_2_with_the_store_unchanged(store_url: str, tmp_path: Path, case: str) -> None:
    line, field = HOSTILE[case]
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    ok = write_jsonl(tmp_path / "ok.jsonl", make_rows(3))
    assert runner.invoke(app, ["ingest", str(ok), "--dataset", "demo", "--db", store_url]).exit_code == 0
    from db.engine import get_engine

    digest = store_digest(get_engine(store_url), logical=True)
    bad = _raw(tmp_path / "bad.jsonl", [json.dumps(_row(0, 0)), line])
    for dataset in ("demo", "fresh"):
        result = runner.invoke(app, ["ingest", str(bad), "--dataset", dataset, "--db", store_url])
        assert result.exit_code == 2, (case, result.output, result.exception)
        where = "bad.jsonl:2" + (f":{field}" if field else "") + ": "
        assert result.stderr.startswith("error: ") and where in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert store_digest(get_engine(store_url), logical=True) == digest


# --- case 8: concurrent ingests into one new dataset ---------------------------------------------------------


def _race(engine: Engine, paths: list[Path], dataset: str) -> list[BaseException | None]:
    outcome: list[BaseException | None] = [None] * len(paths)
    barrier = threading.Barrier(len(paths))

    def run(i: int) -> None:
        barrier.wait()
        try:
            ingest_file(engine, paths[i], dataset)
        except BaseException as err:  # every error is recorded, integrity errors included
            outcome[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def test_concurrent_ingests_into_a_new_dataset(engine: Engine, tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", make_rows(400, prefix="a"))
    b = write_jsonl(tmp_path / "b.jsonl", make_rows(400, prefix="b"))
    assert _race(engine, [a, b], "both") == [None, None]
    assert repo.require_dataset(engine, "both").n_responses == 800
    # A binary file and a proportion file: one creates the dataset, the other is refused with a clear message.
    mean_rows = [{**_row(i, 0.5), "aggregation": "mean"} for i in range(300)]
    c = write_jsonl(tmp_path / "c.jsonl", mean_rows)
    d = write_jsonl(tmp_path / "d.jsonl", make_rows(300, prefix="d"))
    outcome = _race(engine, [c, d], "one")
    assert sum(o is None for o in outcome) == 1
    (err,) = [o for o in outcome if o is not None]
    assert isinstance(err, InputError) and "dataset 'one' is" in str(err) and err.line == 1


def test_concurrent_ordinal_ingests_keep_one_level_count(engine: Engine, tmp_path: Path) -> None:
    """The kind (and the number of ordinal levels) is set once, by whichever ingest creates the dataset; the
    other either fits it or is refused: no lost update of max_label, whatever the order."""
    low = write_jsonl(tmp_path / "low.jsonl", [_row(i, i % 3) for i in range(300)])
    high = write_jsonl(tmp_path / "high.jsonl", [_row(1000 + i, i % 5) for i in range(300)])
    outcome = _race(engine, [low, high], "ord")
    ds = repo.require_dataset(engine, "ord")
    if outcome == [None, None]:  # low went second and fits 0..4
        assert ds.max_label == 4 and ds.n_responses == 600
    else:  # high went second and does not fit 0..2
        assert outcome[0] is None and isinstance(outcome[1], InputError)
        assert ds.max_label == 2 and ds.n_responses == 300
