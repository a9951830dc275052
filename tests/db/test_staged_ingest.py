"""Staged ingest: a file is written in chunks, each its own short transaction, into a hidden staging dataset and
published in one transaction. Readers see all of it or nothing; between chunks the write lock is free; a
failed or killed ingest leaves nothing visible and its staged rows are removed.

Every check runs from the ``progress`` hook, which the ingest calls after each chunk is committed: no timing."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text, update

from db import repository as repo
from db.engine import get_engine, run_read, run_write
from db.export import export_dataset
from db.ingest import ingest_file, purge_abandoned_imports
from db.models import Dataset, IngestedFile, Response
from db.schema import upgrade
from fractal_core.errors import InputError
from tests.db.conftest import make_rows, store_digest, write_jsonl

CHUNK = 8
ROWS = 50  # 7 chunks of 8 records


def raw_responses(engine: Engine) -> int:
    """Every response row in the store, staged or not (what no reader may show)."""
    return int(run_read(engine, lambda s: s.scalar(select(func.count()).select_from(Response))) or 0)


def visible(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    """What readers show: dataset list with counts, a list page, training set, gold meter, a native export."""
    datasets = repo.list_datasets(engine)
    demo = repo.require_dataset(engine, "demo")
    out = tmp_path / "export.jsonl"
    export_dataset(engine, "demo", out, format="native")
    return {
        "datasets": [(d.name, d.n_responses, d.n_sentences, d.label_kind, d.max_label) for d in datasets],
        "page": repo.list_responses(engine, demo.id, sort="id", page_size=500).total,
        "training": len(repo.load_training_set(engine, demo.id).response_ids),
        "gold": repo.gold_budget(engine, demo.id).total_responses,
        "export": len(out.read_text().splitlines()),
        "fresh": repo.get_dataset(engine, "fresh"),
    }


def impatient(url: str) -> Engine:
    """An engine whose SQLite connections give up on the write lock after 0.2 s instead of 30 s: a save that
    has to wait for a whole ingest fails instead of stalling the test."""
    engine = get_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _short_timeout(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 200")

        engine.dispose()  # the schema check's connection was opened with the default timeout
    return engine


@pytest.fixture
def demo(engine: Engine, tmp_path: Path) -> int:
    return ingest_file(engine, write_jsonl(tmp_path / "demo.jsonl", make_rows(6)), "demo").dataset_id


@pytest.mark.parametrize("target", ["fresh", "demo"])
def test_readers_see_nothing_of_an_ingest_until_it_is_published(
    engine: Engine, demo: int, tmp_path: Path, target: str
) -> None:
    before = visible(engine, tmp_path)
    base = raw_responses(engine)
    staged: list[int] = []

    def between_chunks(done: int, _total: int | None) -> None:
        # The chunk is committed (the rows are in the table, the write lock is free) but nobody sees it.
        staged.append(raw_responses(engine) - base)
        assert visible(engine, tmp_path) == before

    big = write_jsonl(tmp_path / "big.jsonl", make_rows(ROWS, prefix="big"))
    summary = ingest_file(engine, big, target, chunk_size=CHUNK, progress=between_chunks)
    assert staged == [min(ROWS, CHUNK * (i + 1)) for i in range(-(-ROWS // CHUNK))]
    after = visible(engine, tmp_path)
    ds = repo.require_dataset(engine, target)
    assert ds.id == summary.dataset_id and ds.label_kind == "binary" and ds.max_label == 1
    assert ds.n_responses == ROWS + (6 if target == "demo" else 0)
    assert after["page"] == before["page"] + (ROWS if target == "demo" else 0)
    assert [d[0] for d in after["datasets"]] == (["demo", "fresh"] if target == "fresh" else ["demo"])
    assert run_read(engine, lambda s: s.scalar(select(func.count()).select_from(Dataset))) == len(
        after["datasets"]
    )
    (state,) = run_read(
        engine,
        lambda s: list(s.scalars(select(IngestedFile.state).where(IngestedFile.filename == "big.jsonl"))),
    )
    assert state == "published"


def test_a_label_save_on_another_dataset_succeeds_between_chunks(
    engine: Engine, db_url: str, demo: int, tmp_path: Path
) -> None:
    saver = impatient(db_url)
    sentence_ids = repo.load_training_set(engine, demo).sentence_ids
    saved: list[int] = []

    def between_chunks(done: int, _total: int | None) -> None:
        sid = int(sentence_ids[len(saved) % len(sentence_ids)])
        repo.record_label(saver, sid, 1, "ann")
        saved.append(sid)

    big = write_jsonl(tmp_path / "big.jsonl", make_rows(ROWS, prefix="big"))
    ingest_file(engine, big, "fresh", chunk_size=CHUNK, progress=between_chunks)
    assert len(saved) == -(-ROWS // CHUNK)
    for sid in set(saved):  # every save landed at once (its event is there, by "ann")
        assert [e.annotator for e in repo.label_history(engine, sentence_id=sid)][-1] == "ann"
    saver.dispose()


def test_a_file_refused_late_leaves_nothing_and_its_staged_rows_are_removed(
    engine: Engine, demo: int, tmp_path: Path
) -> None:
    before = store_digest(engine, logical=True)
    base = raw_responses(engine)
    staged: list[int] = []
    rows = make_rows(ROWS, prefix="big")
    rows[44] = {**rows[44], "response_label": "x"}  # line 45, in the 6th chunk
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    for target in ("demo", "fresh"):
        staged.clear()
        with pytest.raises(InputError) as err:
            ingest_file(
                engine,
                bad,
                target,
                chunk_size=CHUNK,
                progress=lambda done, _: staged.append(raw_responses(engine) - base),
            )
        assert err.value.line == 45 and err.value.field == "response_label"
        assert staged == [8, 16, 24, 32, 40]  # five chunks were staged, then removed
        assert store_digest(engine, logical=True) == before


def test_a_refused_publish_removes_the_staged_rows(engine: Engine, demo: int, tmp_path: Path) -> None:
    """Another ingest publishes an id of this file's first chunk (already checked) while this file is being
    staged: the publish is refused with exit 2 and a clear message, the other file stays whole."""
    first = make_rows(ROWS, prefix="big")
    other = write_jsonl(tmp_path / "other.jsonl", [{**first[3], "meta": {}}] + make_rows(4, prefix="o"))

    def between_chunks(done: int, _total: int | None) -> None:
        if done == CHUNK:
            ingest_file(engine, other, "demo")

    with pytest.raises(InputError) as err:
        ingest_file(
            engine,
            write_jsonl(tmp_path / "big.jsonl", first),
            "demo",
            chunk_size=CHUNK,
            progress=between_chunks,
        )
    assert err.value.field == "id" and "'big3' is already stored in dataset 'demo'" in str(err.value)
    assert repo.require_dataset(engine, "demo").n_responses == raw_responses(engine) == 6 + 5
    files = run_read(engine, lambda s: s.execute(select(IngestedFile.filename, IngestedFile.state)).all())
    assert sorted(files) == [("demo.jsonl", "published"), ("other.jsonl", "published")]
    assert run_read(engine, lambda s: s.scalar(select(func.count()).select_from(Dataset))) == 1


def ordinal_rows(prefix: str, labels: list[int]) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "sentences": ["One.", "Two."], "response_label": y, "aggregation": "max"}
        for i, y in enumerate(labels)
    ]


@pytest.mark.parametrize("fits", [True, False])
def test_a_dataset_created_while_a_file_is_staged(engine: Engine, tmp_path: Path, fits: bool) -> None:
    """Two ingests into one new dataset: the first to publish fixes its kind; the other joins it when it fits
    and is refused with file:line:field when it does not (here line 5: its first label above 0..2)."""
    low = write_jsonl(tmp_path / "low.jsonl", ordinal_rows("low", [i % 3 for i in range(ROWS)]))

    def between_chunks(done: int, _total: int | None) -> None:
        if done == CHUNK:
            ingest_file(engine, low, "fresh")

    labels = [i % 3 for i in range(ROWS)] if fits else [4 if i == 4 else i % 2 for i in range(ROWS)]
    ours = write_jsonl(tmp_path / "ours.jsonl", ordinal_rows("ours", labels))
    if fits:
        ingest_file(engine, ours, "fresh", chunk_size=CHUNK, progress=between_chunks)
        ds = repo.require_dataset(engine, "fresh")
        assert (ds.label_kind, ds.max_label, ds.n_responses) == ("ordinal", 2, 2 * ROWS)
    else:
        with pytest.raises(InputError) as err:
            ingest_file(engine, ours, "fresh", chunk_size=CHUNK, progress=between_chunks)
        assert (err.value.line, err.value.field) == (5, "response_label")
        assert "dataset 'fresh' is ordinal with levels 0..2" in str(err.value)
        ds = repo.require_dataset(engine, "fresh")
        assert (ds.label_kind, ds.max_label, ds.n_responses) == ("ordinal", 2, ROWS)
    assert [d.name for d in repo.list_datasets(engine)] == ["fresh"]
    assert run_read(engine, lambda s: s.scalar(select(func.count()).select_from(Dataset))) == 1


def _killed_mid_ingest(url: str, path: str) -> None:
    """Ingest ``path`` and die without any clean-up after the third chunk (as a killed process would)."""

    def die(done: int, _total: int | None) -> None:
        if done >= 3 * CHUNK:
            os._exit(9)

    ingest_file(get_engine(url), path, "fresh", chunk_size=CHUNK, progress=die)


def _kill_an_ingest(db_url: str, tmp_path: Path) -> None:
    big = write_jsonl(tmp_path / "big.jsonl", make_rows(ROWS, prefix="big"))
    proc = mp.get_context("spawn").Process(target=_killed_mid_ingest, args=(db_url, str(big)))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 9


@pytest.mark.slow
def test_a_killed_ingest_is_hidden_and_removed_when_the_next_one_starts(
    engine: Engine, db_url: str, demo: int, tmp_path: Path
) -> None:
    before_visible = visible(engine, tmp_path)
    before = store_digest(engine, logical=True)
    base = raw_responses(engine)
    _kill_an_ingest(db_url, tmp_path)
    assert raw_responses(engine) - base == 3 * CHUNK  # staged rows stayed behind, hidden
    assert visible(engine, tmp_path) == before_visible
    assert purge_abandoned_imports(engine) == 1  # its process is gone (this host)
    assert store_digest(engine, logical=True) == before
    assert purge_abandoned_imports(engine) == 0


@pytest.mark.slow
def test_the_ingest_command_removes_a_killed_ingest_first(db_url: str, demo: int, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from db.cli import register

    engine = get_engine(db_url)
    before = store_digest(engine, logical=True)
    _kill_an_ingest(db_url, tmp_path)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "big.jsonl"), "--dataset", "fresh", "--db", db_url]
    )
    assert result.exit_code == 0, result.stderr
    assert repo.require_dataset(engine, "fresh").n_responses == ROWS
    assert raw_responses(engine) == 6 + ROWS
    assert store_digest(engine, logical=True) != before


def test_only_dead_or_silent_imports_are_purged(engine: Engine, demo: int, tmp_path: Path) -> None:
    """A live import (this process, heartbeat fresh) is left alone; one on another host is removed once its
    heartbeat is older than the limit."""
    purged: list[int] = []

    def between_chunks(done: int, _total: int | None) -> None:
        purged.append(purge_abandoned_imports(engine))

    big = write_jsonl(tmp_path / "big.jsonl", make_rows(ROWS, prefix="big"))
    ingest_file(engine, big, "fresh", chunk_size=CHUNK, progress=between_chunks)
    assert set(purged) == {0} and repo.require_dataset(engine, "fresh").n_responses == ROWS

    def elsewhere(done: int, _total: int | None) -> None:
        if done == CHUNK:  # pretend this import runs on another host and stopped beating
            run_write(
                engine,
                lambda s: s.execute(
                    update(IngestedFile).where(IngestedFile.state == "staging").values(owner="another-host:1")
                ),
            )
            assert purge_abandoned_imports(engine, stale_after_s=3600) == 0
            assert purge_abandoned_imports(engine, stale_after_s=0) == 1

    other = write_jsonl(tmp_path / "other.jsonl", make_rows(ROWS, prefix="other"))
    with pytest.raises(InputError) as err:
        ingest_file(engine, other, "other", chunk_size=CHUNK, progress=elsewhere)
    assert "were removed while this file was read" in str(err.value)
    assert repo.get_dataset(engine, "other") is None


def test_existing_files_count_as_published_after_the_migration(db_url: str, tmp_path: Path) -> None:
    raw = get_engine(db_url, check_schema=False)
    upgrade(raw, "0007")
    with raw.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO datasets (id, name, description, label_kind, max_label, gold_target, created_at) "
                "VALUES (1, 'old', '', 'binary', 1, 0.1, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ingested_files (id, dataset_id, filename, sha256, format, segment_mode, "
                "segmenter_version, n_responses, n_sentences, ingested_at) "
                "VALUES (1, 1, 'a.jsonl', :sha, 'jsonl', 'sentences', 'v1', 0, 0, CURRENT_TIMESTAMP)"
            ),
            {"sha": "0" * 64},
        )
    upgrade(raw)
    with raw.connect() as conn:
        assert conn.execute(text("SELECT state, owner, heartbeat_at FROM ingested_files")).one() == (
            "published",
            None,
            None,
        )
    raw.dispose()
    engine = get_engine(db_url)
    assert [d.name for d in repo.list_datasets(engine)] == ["old"]
    # and the new rule is enforced by the database itself
    with pytest.raises(Exception, match="(?i)check"):
        run_write(engine, lambda s: s.execute(update(IngestedFile).values(state="bogus")))
    engine.dispose()


def test_staged_rows_are_removed_a_few_responses_per_transaction(
    engine: Engine, demo: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a staged import never holds the write lock for the whole file: one short transaction per
    ``chunk_size`` responses (their sentences and labels go with them), then the staging dataset itself."""
    import db.ingest_staging

    before = store_digest(engine, logical=True)
    transactions: list[int] = []
    removed: list[int] = []

    def counting(engine_: Engine, fn: Any, **kwargs: Any) -> Any:
        transactions.append(1)
        return run_write(engine_, fn, **kwargs)

    def between_chunks(done: int, _total: int | None) -> None:
        if done == 3 * CHUNK:
            staged = run_read(engine, lambda s: s.scalars(repo.staging_dataset_ids()).one())
            monkeypatch.setattr(db.ingest_staging, "run_write", counting)
            removed.append(db.ingest_staging.discard_staged(engine, staged, chunk_size=5))
            monkeypatch.setattr(db.ingest_staging, "run_write", run_write)

    big = write_jsonl(tmp_path / "big.jsonl", make_rows(ROWS, prefix="big"))
    with pytest.raises(InputError, match="were removed while this file was read"):
        ingest_file(engine, big, "fresh", chunk_size=CHUNK, progress=between_chunks)
    assert removed == [3 * CHUNK] and len(transactions) == -(-3 * CHUNK // 5) + 1
    assert store_digest(engine, logical=True) == before
