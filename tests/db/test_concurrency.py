"""8 annotator threads save corrections while another process bulk-writes a new model version's scores:
every correction must land, and no caller may see "database is locked"."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from db import repository as repo
from db.engine import get_engine, run_read
from db.ingest import ingest_file
from db.models import LabelEvent
from tests.db.conftest import make_rows, write_jsonl

WRITERS = 8
SAVES_PER_WRITER = 30


def _score_writer(url: str, dataset_id: int, started: object, rounds: int) -> None:
    engine = get_engine(url)
    ids = repo.load_training_set(engine, dataset_id).sentence_ids
    for round_ in range(rounds):
        mv = repo.create_model_version(engine, dataset_id, method="fractal", config={"round": round_})
        started.set()  # type: ignore[attr-defined]
        scores = np.random.default_rng(round_).random(len(ids))
        repo.store_scores(engine, mv.id, ids, scores, chunk_size=2000)
        repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)
    engine.dispose()


@pytest.mark.slow
def test_corrections_and_bulk_scores_at_once(db_url: str, engine: Engine, tmp_path: Path) -> None:
    ds = ingest_file(
        engine, write_jsonl(tmp_path / "big.jsonl", make_rows(3000, labelled_every=10**9)), "big"
    ).dataset_id
    data = repo.load_training_set(engine, ds)
    n_sentences = len(data.sentence_ids)
    # Disjoint sentences per writer, one response each save; plus one sentence every writer fights over.
    shared = data.sentence_ids_of(0)[0]
    plans = [range(1 + w * SAVES_PER_WRITER, 1 + (w + 1) * SAVES_PER_WRITER) for w in range(WRITERS)]

    ctx = mp.get_context("spawn")
    started = ctx.Event()
    scorer = ctx.Process(target=_score_writer, args=(db_url, ds, started, 3))
    scorer.start()
    assert started.wait(60), "score writer did not start"

    errors: list[BaseException] = []
    expected: dict[int, int] = {}
    lock = threading.Lock()

    def annotate(w: int) -> None:
        own = get_engine(db_url)
        try:
            for i, k in enumerate(plans[w]):
                sids = data.sentence_ids_of(k)
                if i % 2:
                    repo.record_labels(own, int(data.response_ids[k]), {s: 1 for s in sids}, f"ann{w}")
                    with lock:
                        expected.update({s: 1 for s in sids})
                else:
                    repo.record_label(own, sids[0], 1, f"ann{w}")
                    with lock:
                        expected[sids[0]] = 1
                repo.record_label(own, shared, (w + i) % 2, f"ann{w}")
        except BaseException as err:  # every error, "database is locked" included, fails the test
            errors.append(err)
        finally:
            own.dispose()

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scorer.join(120)
    assert scorer.exitcode == 0
    assert errors == []

    # No lost correction: every save is in the history and the current view holds the last value.
    labels: dict[int, int | None] = {}
    for k in (k for plan in plans for k in plan):
        detail = repo.get_response(engine, int(data.response_ids[k]))
        labels.update({s.id: s.label for s in detail.sentences})
    assert {s: labels[s] for s in expected} == expected
    events = run_read(
        engine,
        lambda s: dict(
            s.execute(select(LabelEvent.annotator, func.count()).group_by(LabelEvent.annotator)).all()
        ),
    )
    per_writer = {
        f"ann{w}": sum(len(data.records[k].spans) if i % 2 else 1 for i, k in enumerate(plans[w]))
        for w in range(WRITERS)
    }
    shared_history = repo.label_history(engine, sentence_id=shared)
    for w in range(WRITERS):
        own_shared = sum(1 for h in shared_history if h.annotator == f"ann{w}")
        assert events[f"ann{w}"] == per_writer[f"ann{w}"] + own_shared
    # The shared sentence's history is a chain: each event's old value is the previous event's new one.
    assert all(a.new_label == b.old_label for a, b in zip(shared_history, shared_history[1:], strict=False))
    versions = repo.list_model_versions(engine, ds)
    assert [v.n_scores for v in versions] == [n_sentences] * 3 and versions[0].is_active
    # The two really overlapped: corrections were saved while scores were being written.
    first_start, last_end = versions[-1].created_at, versions[0].finished_at
    during = [h for h in shared_history if first_start <= h.at <= last_end]  # type: ignore[operator]
    assert during, "no correction was saved while scores were being written"
