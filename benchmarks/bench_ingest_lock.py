"""How long an annotator's label save waits while a large file is being ingested.

One process ingests a synthetic file of ``--responses`` responses (4 sentences each) into a new dataset (or,
with ``--into existing``, appends it to a dataset that already holds 1,000 responses) while this process saves
a label on another dataset every ``--every`` seconds and times each save. The ingest is staged in chunks (each
its own write transaction) and published in one transaction, whose duration is reported too. The peer, in the
same run, is the same saves with no ingest running. Target: the longest save during the ingest <= 0.5 s.

    .venv/bin/python benchmarks/bench_ingest_lock.py [--responses 100000] [--into new|existing] [--chunk N]
        [--db sqlite|URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import machine, write_file  # noqa: E402

from db import repository as repo  # noqa: E402
from db.engine import get_engine  # noqa: E402
from db.ingest import CHUNK_RESPONSES, ingest_file  # noqa: E402


def _ingest(url: str, path: str, chunk: int, started: object, done: object) -> None:
    engine = get_engine(url)
    chunks: list[float] = []
    started.set()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    summary = ingest_file(
        engine, Path(path), "big", chunk_size=chunk, progress=lambda n, _: chunks.append(time.perf_counter())
    )
    end = time.perf_counter()
    # publish: from the last chunk's commit to the end (the last chunk's commit to publish's commit)
    done.put((end - t0, summary.n_responses, len(chunks), end - chunks[-1]))  # type: ignore[attr-defined]


def _saves(
    engine, sentence_ids: list[int], seconds: float, every: float, stop: object | None = None
) -> list[float]:
    waits = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end and not (stop is not None and stop()):  # type: ignore[operator]
        t0 = time.perf_counter()
        repo.record_label(engine, sentence_ids[i % len(sentence_ids)], i % 2, "bench")
        waits.append(time.perf_counter() - t0)
        i += 1
        time.sleep(every)
    return waits


def _stats(waits: list[float]) -> dict[str, float]:
    ordered = sorted(waits)
    return {
        "n": len(waits),
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--responses", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a database URL")
    parser.add_argument("--chunk", type=int, default=CHUNK_RESPONSES, help="responses per ingest transaction")
    parser.add_argument(
        "--into", choices=("new", "existing"), default="new", help="ingest into a new or an existing dataset"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db" if args.db == "sqlite" else args.db
        engine = get_engine(url)
        small = Path(tmp) / "small.jsonl"
        write_file(small, 50, 4, seed=1)
        ds = ingest_file(engine, small, "annotated").dataset_id
        sentence_ids = [
            s.id
            for r in repo.list_responses(engine, ds, sort="id", page_size=50).rows
            for s in repo.get_response(engine, r.id).sentences
        ]
        if args.into == "existing":
            first = Path(tmp) / "first.jsonl"
            write_file(first, 1000, 4, seed=2)
            # the big file's ids must not repeat the first file's
            first.write_text(first.read_text().replace('"bench-', '"first-'))
            ingest_file(engine, first, "big")
        big = Path(tmp) / "big.jsonl"
        write_file(big, args.responses, 4)
        idle = _saves(engine, sentence_ids, 3.0, args.every)

        ctx = mp.get_context("spawn")
        started, done = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_ingest, args=(url, str(big), args.chunk, started, done))
        proc.start()
        started.wait(120)
        busy = _saves(engine, sentence_ids, 3600.0, args.every, stop=lambda: not proc.is_alive())
        proc.join()
        ingest_seconds, n, n_chunks, publish_seconds = done.get(timeout=10)
        result = {
            "machine": machine(),
            "engine": engine.dialect.name,
            "into": args.into,
            "responses": n,
            "ingest_seconds": round(ingest_seconds, 2),
            "chunk_size": args.chunk,
            "chunks": n_chunks,
            "publish_seconds": round(publish_seconds, 3),
            "save_idle": _stats(idle),
            "save_during_ingest": _stats(busy),
        }
        print(json.dumps(result, indent=1))
        engine.dispose()


if __name__ == "__main__":
    main()
