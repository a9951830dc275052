"""Review app speed with a large store: server-side time to render the Review page and to save a correction.

Targets: p95 <= 300 ms per Review page render and <= 50 ms per correction save at 100k responses.

- Page render: one full script run of ``app/main.py`` on the Review page through Streamlit's AppTest (the same
  code path the server runs per interaction, minus the websocket), moving to another response each time
  (``S``: skip, plus jumps to random list positions). Peer in the same run: the same page on a 1k-response store,
  so the ratio shows how much the page slows down with store size.
- Save: what the ``1``/``0`` keys call (``review.propose`` consistency check + ``review.store`` = one
  ``record_labels`` transaction) on random sentences. Peer: a bare ``sqlite3`` INSERT + commit on the same disk.
- Keypress: the full rerun after pressing ``0`` (save + re-render), the latency a user feels server-side.

    .venv/bin/python benchmarks/bench_app.py [--responses 100000] [--renders 40] [--saves 200]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_db import machine, write_file  # noqa: E402

from app import review  # noqa: E402
from db import repository as repo  # noqa: E402
from db.engine import get_engine  # noqa: E402
from db.ingest import ingest_file  # noqa: E402
from tests.app import review_driver as drive  # noqa: E402


def percentiles(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 95))


def build_store(home: Path, n_responses: int) -> tuple[str, int]:
    """A store with ``n_responses`` responses x 4 sentences, scored by an active model version."""
    home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{home / 'fractal.db'}"
    engine = get_engine(url)
    path = home / "data.jsonl"
    write_file(path, n_responses, 4)
    t = time.perf_counter()
    summary = ingest_file(engine, path, "bench")
    ids = repo.load_training_set(engine, summary.dataset_id, with_gold=False).sentence_ids
    mv = repo.create_model_version(engine, summary.dataset_id, method="bench")
    repo.store_scores(engine, mv.id, ids, np.random.default_rng(0).random(len(ids)))
    repo.finish_model_version(engine, mv.id)
    repo.activate_model_version(engine, mv.id)
    print(f"  built {n_responses} responses / {len(ids)} scored sentences in {time.perf_counter() - t:.1f} s")
    engine.dispose()
    return url, summary.dataset_id


def time_renders(
    home: Path, url: str, n_total: int, renders: int, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Review page renders (ms) while moving through responses, and full reruns after pressing ``0``."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["FRACTAL_HOME"] = str(home)
    os.environ["FRACTAL_DB_URL"] = url
    os.environ["FRACTAL_ANNOTATOR"] = "bench"
    os.environ["FRACTAL_AUTH"] = "off"  # single-user mode: the page itself is measured, not sign-in
    st.cache_resource.clear()
    rng = random.Random(seed)
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
    at.run()  # warm-up: imports, engine, schema check
    at.switch_page(
        "views/review.py"
    ).run()  # the root URL hands over to Review; AppTest is sent there directly
    assert not at.exception, at.exception
    render_ms, key_ms = [], []
    for i in range(renders):
        nav = at.session_state[review.NAV_KEY]
        if i % 2:
            nav.go_to(rng.randrange(n_total), n_total)
            t = time.perf_counter()
            at.run()
        else:
            t = time.perf_counter()
            drive.move(at, 1)  # S
        render_ms.append((time.perf_counter() - t) * 1000)
        assert not at.exception, at.exception
        # A label key as the browser sends it: the component's batch, stored, answered (the server's part of a
        # key; the browser recolours before this returns). A contradiction is asked and left unanswered.
        t = time.perf_counter()
        drive.label(at, 0, 0)
        key_ms.append((time.perf_counter() - t) * 1000)
    return render_ms, key_ms


def time_saves(url: str, dataset_id: int, saves: int, seed: int = 1) -> list[float]:
    engine = get_engine(url)
    rng = random.Random(seed)
    n = repo.get_dataset(engine, dataset_id).n_responses
    first = repo.list_responses(engine, dataset_id, sort="id", page=0, page_size=1).rows[0].id
    out = []
    for _ in range(saves):
        rid = first + rng.randrange(n)
        detail = repo.get_response(engine, rid)  # the page already holds this; not part of the save
        sentence = rng.choice(detail.sentences)
        t = time.perf_counter()
        proposal = review.propose(detail, {sentence.id: rng.choice([0, 1])})
        review.store(engine, proposal, "bench")
        out.append((time.perf_counter() - t) * 1000)
    engine.dispose()
    return out


def bare_saves(path: Path, saves: int) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, sentence INTEGER, label INTEGER)")
    out = []
    for i in range(saves):
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (sentence, label) VALUES (?, ?)", (i, i % 2))
        conn.execute("COMMIT")
        out.append((time.perf_counter() - t) * 1000)
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=100_000)
    parser.add_argument("--peer-responses", type=int, default=1_000)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--saves", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big_url, big_ds = build_store(root / "big", args.responses)
        small_url, _ = build_store(root / "small", args.peer_responses)
        small_render, small_key = time_renders(root / "small", small_url, args.peer_responses, args.renders)
        big_render, big_key = time_renders(root / "big", big_url, args.responses, args.renders)
        saves = time_saves(big_url, big_ds, args.saves)
        bare = bare_saves(root / "bare.db", args.saves)
    rp50, rp95 = percentiles(big_render)
    sp50, sp95 = percentiles(small_render)
    kp50, kp95 = percentiles(big_key)
    vp50, vp95 = percentiles(saves)
    bp50, bp95 = percentiles(bare)
    print(
        f"Review page render @ {args.responses:,}: p50 {rp50:.0f} ms, p95 {rp95:.0f} ms (target p95 <= 300 ms)"
    )
    print(
        f"  peer @ {args.peer_responses:,}: p50 {sp50:.0f} ms, p95 {sp95:.0f} ms -> ratio p95 {rp95 / sp95:.2f}x"
    )
    print(f"Keypress '0' (save + rerun) @ {args.responses:,}: p50 {kp50:.0f} ms, p95 {kp95:.0f} ms")
    print(f"  peer @ {args.peer_responses:,}: p50 {statistics.median(small_key):.0f} ms")
    print(f"Correction save @ {args.responses:,}: p50 {vp50:.1f} ms, p95 {vp95:.1f} ms (target p95 <= 50 ms)")
    print(f"  peer bare sqlite3 insert+commit: p50 {bp50:.2f} ms, p95 {bp95:.2f} ms")


if __name__ == "__main__":
    main()
