"""Store speed: ingest throughput, paginated review-list queries and correction saves (targets:
p95 <= 300 ms per page query and <= 50 ms per save at 100k responses).

Each figure is printed beside a peer measured in the same run on the same machine:
- ingest vs the bare write (plain ``sqlite3`` executemany of the same response and sentence rows, no
  validation, no labels): the ratio is what validation, segmentation bookkeeping and the ORM cost;
- list pages vs the same page computed without the per-response score summary (GROUP BY over all sentence
  scores, then sort): why ``response_scores`` and its indexes exist;
- correction saves vs a bare ``sqlite3`` INSERT + UPSERT + commit of the same rows.

    .venv/bin/python benchmarks/bench_db.py [--ingest-sentences 100000] [--responses 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from db import repository as repo
from db.engine import get_engine
from db.ingest import ingest_file
from fractal_core.data.io import iter_records
from fractal_core.mil import semantics


def machine() -> str:
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    cpu = cpu.split(":", 1)[-1].strip() or platform.processor()
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {cores} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


def write_file(path: Path, n_responses: int, sentences_per: int, seed: int = 0) -> int:
    """Synthetic max-bags with ProcessBench-sized steps (~120 characters); every 10th carries sentence labels."""
    rng = random.Random(seed)
    words = [
        "the",
        "of",
        "step",
        "so",
        "we",
        "then",
        "value",
        "equals",
        "add",
        "multiply",
        "answer",
        "total",
        "left",
        "right",
        "first",
        "next",
    ]
    n_sent = 0
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n_responses):
            k = sentences_per
            sents = [" ".join(rng.choice(words) for _ in range(20)).capitalize() + "." for _ in range(k)]
            label = rng.random() < 0.6
            row: dict[str, object] = {
                "id": f"bench-{i}",
                "context": f"Problem {i}: " + " ".join(rng.choice(words) for _ in range(30)),
                "sentences": sents,
                "response_label": int(label),
                "aggregation": "max",
            }
            if i % 10 == 0:
                first_bad = rng.randrange(k) if label else k
                row["sentence_labels"] = [
                    0 if j < first_bad else (1 if j == first_bad else None) for j in range(k)
                ]
            handle.write(json.dumps(row) + "\n")
            n_sent += k
    return n_sent


def percentiles(ms: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(ms, n=20, method="inclusive")
    return statistics.median(ms), qs[18]


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def bare_ingest(path: Path, db: Path) -> float:
    """Peer: the same rows through plain sqlite3 executemany, after parsing with json only."""
    con = sqlite3.connect(db)
    con.executescript(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        "CREATE TABLE r (id INTEGER PRIMARY KEY, ext TEXT UNIQUE, context TEXT, text TEXT, label REAL);"
        "CREATE TABLE s (id INTEGER PRIMARY KEY, rid INTEGER, pos INTEGER, start INTEGER, end INTEGER, text TEXT);"
    )
    t = time.perf_counter()
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    with con:
        sent_rows = []
        for i, row in enumerate(rows, start=1):
            text = " ".join(row["sentences"])
            con.execute(
                "INSERT INTO r VALUES (?, ?, ?, ?, ?)",
                (i, row["id"], row["context"], text, row["response_label"]),
            )
            at = 0
            for j, s in enumerate(row["sentences"]):
                sent_rows.append((i, j, at, at + len(s), s))
                at += len(s) + 1
        con.executemany("INSERT INTO s (rid, pos, start, end, text) VALUES (?, ?, ?, ?, ?)", sent_rows)
    seconds = time.perf_counter() - t
    con.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ingest-sentences", type=int, default=100_000)
    parser.add_argument("--responses", type=int, default=100_000)
    parser.add_argument("--sentences-per-response", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--saves", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=50)
    args = parser.parse_args()
    k = args.sentences_per_response
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)

        # --- ingest throughput
        small = tmp / "ingest.jsonl"
        n_sent = write_file(small, args.ingest_sentences // k, k, seed=1)
        engine = get_engine(f"sqlite:///{tmp / 'ingest.db'}")
        t = time.perf_counter()
        summary = ingest_file(engine, small, "ingest")
        ours = time.perf_counter() - t
        engine.dispose()
        t = time.perf_counter()
        n_read = sum(1 for _ in iter_records(small))
        read_only = time.perf_counter() - t
        bare = bare_ingest(small, tmp / "bare.db")
        print(
            f"ingest: {summary.n_responses} responses / {n_sent} sentences in {ours:.2f} s = {n_sent / ours:,.0f} "
            f"sentences/s; fractal_core.data.io read+validate alone {read_only:.2f} s ({n_read} records); "
            f"bare sqlite3 peer {bare:.2f} s = {n_sent / bare:,.0f} sentences/s (ours / bare = {ours / bare:.1f}x)"
        )

        # --- a 100k-response database with an active model version
        big = tmp / "big.jsonl"
        write_file(big, args.responses, k, seed=2)
        url = f"sqlite:///{tmp / 'big.db'}"
        engine = get_engine(url)
        t = time.perf_counter()
        ds = ingest_file(engine, big, "big").dataset_id
        big_ingest = time.perf_counter() - t
        ids = repo.load_training_set(engine, ds).sentence_ids
        mv = repo.create_model_version(engine, ds, method="bench")
        t = time.perf_counter()
        repo.store_scores(engine, mv.id, ids, np.random.default_rng(0).random(len(ids)))
        store = time.perf_counter() - t
        t = time.perf_counter()
        repo.activate_model_version(engine, repo.finish_model_version(engine, mv.id).id)
        finish = time.perf_counter() - t
        # The worker's path: the library computes the response figures from the scores it holds, the store
        # writes them (peer of the finish above, which reads the scores back to compute the same figures).
        data = repo.load_training_set(engine, ds)
        mv2 = repo.create_model_version(engine, ds, method="bench")
        scores = np.random.default_rng(0).random(len(ids))
        repo.store_scores(engine, mv2.id, data.sentence_ids, scores)
        t = time.perf_counter()
        index = np.repeat(np.arange(len(data.records)), np.diff(data.offsets))
        labels = np.array([r.response_label for r in data.records])
        summary = semantics.summarise(scores, index, labels, aggregation="max", gold=data.file_labels)
        computed = time.perf_counter() - t
        repo.store_response_summaries(engine, mv2.id, data.response_ids, summary)
        repo.finish_model_version(engine, mv2.id)
        written = time.perf_counter() - t
        print(
            f"setup: {args.responses} responses / {len(ids)} sentences ingested in {big_ingest:.1f} s; "
            f"store_scores {len(ids) / store:,.0f} rows/s; finish computing the per-response figures from the "
            f"stored scores {finish:.2f} s; worker path (semantics.summarise {computed:.2f} s + "
            f"store_response_summaries + finish) {written:.2f} s"
        )
        rng = random.Random(3)
        for rid_ in rng.sample(range(1, args.responses + 1), 200):
            sid = repo.get_response(engine, rid_).sentences[0].id
            repo.record_label(engine, sid, rng.randint(0, 1), rng.choice(["ann", "bob"]))

        # --- list pages
        n_pages = args.responses // args.page_size
        kinds = [
            ("uncertainty", {}),
            ("disagreement", {}),
            ("score", {}),
            ("id", {}),
            ("uncertainty", {"disagreement_only": True}),
            ("uncertainty", {"label_status": "unlabelled"}),
            ("id", {"annotator": "ann"}),
        ]
        list_ms: list[float] = []
        first_pages: list[float] = []
        for q in range(args.queries):
            sort, filters = kinds[q % len(kinds)]
            page = 0 if q % 4 == 0 else rng.randrange(n_pages // 4 if filters else n_pages)
            ms = timed(
                lambda sort=sort, filters=filters, page=page: repo.list_responses(
                    engine, ds, sort=sort, page=page, page_size=args.page_size, **filters
                )
            )
            list_ms.append(ms)
            if page == 0:
                first_pages.append(ms)
        p50, p95 = percentiles(list_ms)
        f50, f95 = percentiles(first_pages)

        raw = sqlite3.connect(tmp / "big.db")
        raw.execute("PRAGMA synchronous = NORMAL")  # what the store uses: same durability for the peer
        naive_sql = (
            "SELECT r.id, r.external_id, substr(r.text, 1, 200), MAX(ss.uncertainty) AS u "
            "FROM responses r JOIN sentences s ON s.response_id = r.id "
            "JOIN sentence_scores ss ON ss.sentence_id = s.id AND ss.model_version_id = ? "
            "WHERE r.dataset_id = ? GROUP BY r.id ORDER BY u DESC, r.id LIMIT ? OFFSET ?"
        )
        naive_ms = [
            timed(
                lambda: raw.execute(
                    naive_sql, (mv.id, ds, args.page_size, rng.randrange(n_pages) * args.page_size)
                ).fetchall()
            )
            for _ in range(max(5, args.queries // 20))
        ]
        n50, n95 = percentiles(naive_ms)
        print(
            f"list page ({args.page_size} rows, with total count; sorts/filters mixed, random pages): p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms over {len(list_ms)} queries (first pages p50 {f50:.1f} / p95 {f95:.1f} ms); "
            f"peer without the summary table p50 {n50:.0f} ms, p95 {n95:.0f} ms ({n50 / p50:.0f}x slower at p50)"
        )

        # --- correction saves
        save_ms = []
        targets = rng.sample(range(1, len(ids) + 1), args.saves)
        for i, sid in enumerate(targets):
            save_ms.append(timed(lambda sid=sid, i=i: repo.record_label(engine, sid, i % 2, "bench")))
        s50, s95 = percentiles(save_ms)
        undo_ms = [timed(lambda: repo.undo_last(engine, "bench")) for _ in range(50)]
        u50, u95 = percentiles(undo_ms)
        bare_ms = []
        for i, sid in enumerate(rng.sample(range(1, len(ids) + 1), args.saves)):

            def bare_save(sid: int = sid, i: int = i) -> None:
                with raw:
                    raw.execute(
                        "CREATE TABLE IF NOT EXISTS h (sid INTEGER, old INTEGER, new INTEGER, who TEXT, at TEXT)"
                    )
                    raw.execute(
                        "CREATE TABLE IF NOT EXISTS c (sid INTEGER PRIMARY KEY, label INTEGER, who TEXT)"
                    )
                    raw.execute("INSERT INTO h VALUES (?, NULL, ?, 'bench', datetime('now'))", (sid, i % 2))
                    raw.execute(
                        "INSERT INTO c VALUES (?, ?, 'bench') ON CONFLICT(sid) DO UPDATE SET label = excluded.label",
                        (sid, i % 2),
                    )

            bare_ms.append(timed(bare_save))
        b50, b95 = percentiles(bare_ms)
        print(
            f"correction save (record_label: history + current view + counter + consistency check, one transaction): "
            f"p50 {s50:.1f} ms, p95 {s95:.1f} ms over {len(save_ms)}; undo_last p50 {u50:.1f} / p95 {u95:.1f} ms; "
            f"bare sqlite3 insert+upsert+commit p50 {b50:.2f} / p95 {b95:.2f} ms"
        )
        raw.close()
        engine.dispose()
        ok = p95 <= 300 and s95 <= 50
        print(f"targets (page p95 <= 300 ms, save p95 <= 50 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
