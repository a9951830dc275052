"""Hostile input against the store, on SQLite and PostgreSQL: forged provenance is data, a dataset's label kind is
fixed, ordinal levels are bounded, strings that one engine would refuse are refused by the reader for both,
input that would be silently lost (a key written twice, a misspelt field, a blank id, a split that is a path)
is refused, with ``file:line:field`` and the store unchanged; a store URL that cannot be opened exits 2 in one
line, no command but ``fractal db upgrade`` creates a store, and an output folder that does not exist is
refused."""

from __future__ import annotations

import csv
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
    "a key written twice": ('{"id": "x107", "id": "x108", "sentences": ["ok"], "response_label": 0}', "id"),
    "a key written twice in meta": (
        '{"id": "a", "sentences": ["ok"], "response_label": 0, "meta": {"k": 1, "k": 2}}',
        "meta",
    ),
    "a misspelt field": (
        '{"id": "a", "sentences": ["ok"], "response_label": 1, "sentencelabels": [1]}',
        "sentencelabels",
    ),
    "an id of only spaces": ('{"id": "   ", "sentences": ["ok"], "response_label": 0}', "id"),
    "a split that is a path": (
        '{"id": "a", "sentences": ["ok"], "response_label": 0, "meta": {"fractal": {"split": "../x"}}}',
        "meta.fractal.split",
    ),
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


# --- split names, one field-size limit -------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.mark.parametrize("split", ["../../x", "a/b", "", " ", "..", "s" * 33])
def test_a_split_that_is_not_a_plain_name_is_refused(store_url: str, tmp_path: Path, split: str) -> None:
    from db.engine import get_engine

    digest = store_digest(get_engine(store_url), logical=True)
    data = write_jsonl(tmp_path / "a.jsonl", make_rows(2))
    result = CliRunner().invoke(
        _cli(), ["ingest", str(data), "--dataset", "d", "--split", split, "--db", store_url]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: split: must be a plain name"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert store_digest(get_engine(store_url), logical=True) == digest
    ok = CliRunner().invoke(
        _cli(), ["ingest", str(data), "--dataset", "d", "--split", "dev-2", "--db", store_url]
    )
    assert ok.exit_code == 0, ok.output


def test_a_cell_over_the_csv_modules_default_limit_is_stored_like_jsonl(
    store_url: str, tmp_path: Path
) -> None:
    """200,000 characters: over the 131,072 the csv module allows by default, within the one limit."""
    context = "c" * 200_000
    path = tmp_path / "big.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "context", "text", "response_label"])
        writer.writerow(["a", context, "Hello there. Bye.", "1"])
    jsonl = write_jsonl(
        tmp_path / "big.jsonl", [{"id": "b", "context": context, "text": "Hi.", "response_label": 0}]
    )
    for data in (path, jsonl):
        result = CliRunner().invoke(_cli(), ["ingest", str(data), "--dataset", "big", "--db", store_url])
        assert result.exit_code == 0, result.output
    from db.engine import get_engine

    engine = get_engine(store_url)
    ds = repo.require_dataset(engine, "big")
    rows = repo.list_responses(engine, ds.id, sort="id", page_size=10).rows
    assert [len(repo.get_response(engine, r.id).context) for r in rows] == [200_000, 200_000]


# --- store URLs: one line, exit 2, never a store created unasked -----------------------------------------------

COMMANDS: list[list[str]] = [
    ["db", "datasets"],
    ["db", "current"],
    ["export", "{tmp}/out.jsonl", "--dataset", "d", "--format", "native"],
    ["ingest", "{tmp}/a.jsonl", "--dataset", "d"],
]


def _run_all(url: str, tmp_path: Path, commands: list[list[str]]) -> list[Any]:
    write_jsonl(tmp_path / "a.jsonl", make_rows(2))
    app = _cli()
    results = []
    for command in commands:
        args = [a.format(tmp=tmp_path) for a in command]
        results.append(CliRunner().invoke(app, [*args, "--db", url]))
    return results


def _one_line_error(result: Any, *expected: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sqlite:///{tmp}/passwd", "not an SQLite database file"),
        ("sqlite:////etc/passwd", "not an SQLite database file"),
        ("sqlite:////dev/null", "not an SQLite file"),
        ("sqlite:///{tmp}", "a directory"),
        ("postgresql+psycopg://mallory:hunter2@127.0.0.1:1/fractal", "Connection refused"),
        ("file:///etc/passwd", "unknown database kind 'file'"),
        ("mysql+nosuchdriver://u@h/d", "unknown database kind"),
        ("not a url at all", "not a database URL"),
    ],
)
def test_a_store_url_that_cannot_be_opened_exits_2_in_one_line(tmp_path: Path, url: str, why: str) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text(encoding="utf-8"), encoding="utf-8")
    before = passwd.read_bytes()
    url = url.format(tmp=tmp_path)
    commands = [*COMMANDS, ["db", "upgrade"], ["users", "list"]]
    from db.users_cli import register as register_users

    write_jsonl(tmp_path / "a.jsonl", make_rows(2))
    app = _cli()
    register_users(app)
    for command in commands:
        if url == "sqlite:////etc/passwd" and command[-1] == "upgrade":
            continue  # the copy above stands in for it: a test never tries to write a system file
        args = [a.format(tmp=tmp_path) for a in command]
        result = CliRunner().invoke(app, [*args, "--db", url])
        _one_line_error(result, why)
        assert "hunter2" not in result.output
    assert passwd.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists()


def _absent(db_url: str, tmp_path: Path) -> str:
    """A store that does not exist on this engine: a new file name, or a database the server does not have."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'absent.db'}"
    from sqlalchemy.engine import make_url

    return make_url(db_url).set(database="fractal_absent_db").render_as_string(hide_password=False)


def test_commands_refuse_a_store_that_does_not_exist_and_create_nothing(db_url: str, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    # An empty database (PostgreSQL) or a new file name (SQLite): told how to create one, nothing written.
    for result in _run_all(db_url, tmp_path, COMMANDS):
        if result.stderr.startswith("error: no store at") or db_url.startswith("sqlite"):
            _one_line_error(result, "no store at", "create one with `fractal db upgrade --db")
        else:
            _one_line_error(result, "no store at", "an empty database")
    if db_url.startswith("sqlite"):
        assert not (tmp_path / "fractal.db").exists()
    else:
        raw = create_engine(db_url)
        assert inspect(raw).get_table_names() == []
        raw.dispose()
    # A database the server does not have: one line, exit 2.
    for result in _run_all(_absent(db_url, tmp_path), tmp_path, COMMANDS):
        _one_line_error(result)
    assert not (tmp_path / "absent.db").exists()


def test_db_upgrade_creates_a_store_and_says_so(db_url: str, tmp_path: Path) -> None:
    from db.schema import head_revision

    app = _cli()
    result = CliRunner().invoke(app, ["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("created a new store at ") and head_revision() in result.stdout
    again = CliRunner().invoke(app, ["db", "upgrade", "--db", db_url])
    assert again.exit_code == 0 and "created" not in again.stdout
    data = write_jsonl(tmp_path / "a.jsonl", make_rows(2))
    assert CliRunner().invoke(app, ["ingest", str(data), "--dataset", "d", "--db", db_url]).exit_code == 0


def test_a_store_in_a_folder_that_does_not_exist_is_refused_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///no-such-folder/x.db", f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"):
        for result in _run_all(url, tmp_path, [*COMMANDS, ["db", "upgrade"]]):
            _one_line_error(result, "no-such-folder", "does not exist")
        assert not (tmp_path / "no-such-folder").exists()


def test_export_into_a_folder_that_does_not_exist_is_refused(store_url: str, tmp_path: Path) -> None:
    app = _cli()
    data = write_jsonl(tmp_path / "a.jsonl", make_rows(3))
    assert CliRunner().invoke(app, ["ingest", str(data), "--dataset", "d", "--db", store_url]).exit_code == 0
    for fmt in ("native", "kto"):
        out = tmp_path / "nonexistent" / "dir" / "x.jsonl"
        result = CliRunner().invoke(
            app, ["export", str(out), "--dataset", "d", "--format", fmt, "--db", store_url]
        )
        _one_line_error(result, "does not exist")
        assert not (tmp_path / "nonexistent").exists()
