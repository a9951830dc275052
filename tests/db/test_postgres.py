"""PostgreSQL-only behaviour on a fresh database of the test server (``FRACTAL_TEST_PG_URL``, see
:mod:`tests.engines`): several workers claiming jobs (FOR UPDATE SKIP LOCKED) while annotators save, racing
idempotent job creation, and the migrated schema matching the models. The rest of the store's tests run on
both engines through the ``engine`` fixture."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db import jobs
from db import repository as repo
from db.engine import get_engine
from db.export import export_dataset
from db.ingest import ingest_file
from db.models import Base
from tests.db.conftest import processbench_valid
from tests.engines import fresh_pg_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


def test_store_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    engine = get_engine(pg_url)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    try:
        summary = ingest_file(engine, processbench_valid(), name)
        ds = summary.dataset_id
        data = repo.load_training_set(engine, ds, include_imported=True)
        assert len(data.records) == 352
        first = data.sentence_ids_of(0)[0]
        assert repo.record_label(engine, first, 1, "ann").changes
        assert repo.undo_last(engine, "ann") is not None
        ids = data.sentence_ids
        mv = repo.create_model_version(engine, ds, method="fractal")
        repo.store_scores(engine, mv.id, ids, np.linspace(0, 1, len(ids)))
        repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)
        page = repo.list_responses(engine, ds, sort="uncertainty", disagreement_only=True)
        assert page.total > 0
        export_dataset(engine, name, tmp_path / "n.jsonl", format="native")
        ingest_file(engine, tmp_path / "n.jsonl", name + "-copy")

        key = f"train:{name}"
        made: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: made.append(jobs.create_job(engine, "train", idempotency_key=key).id)
            )
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(made)) == 1

        # Several workers claim each job once (FOR UPDATE SKIP LOCKED), while annotators save labels.
        created = {jobs.create_job(engine, f"pg-{name}", {"i": i}).id for i in range(20)}
        claimed: list[int] = []

        def work(worker: str) -> None:
            while (job := jobs.claim_next_job(engine, worker, kinds=[f"pg-{name}"])) is not None:
                claimed.append(job.id)
                jobs.finish_job(engine, job.id)

        def annotate(w: int) -> None:
            for k in range(w * 10, (w + 1) * 10):
                repo.record_label(engine, data.sentence_ids_of(k)[-1], 1, f"pg{w}")

        threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(3)]
        threads += [threading.Thread(target=annotate, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claimed) == sorted(created)
        assert repo.list_responses(engine, ds, annotator="pg3", sort="id").total == 10

        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()
