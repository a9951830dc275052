"""Team-work speed at 100k responses (targets: a save with the stale-view version check p95 <= 50 ms;
agreement over 100k labels <= 1 s).

Each figure is printed beside a peer measured in the same run on the same machine:
- saves with the version check (``record_labels(expected=...)``) vs the same saves without it;
- ``db.team.agreement`` (read 100k annotator labels + Krippendorff's alpha + Cohen's kappa per pair + per-label
  agreement) vs scikit-learn's ``cohen_kappa_score`` on the same pair's arrays, already in memory.

    .venv/bin/python benchmarks/bench_team.py [--responses 100000] [--labels 100000] [--saves 300]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_db import machine, percentiles, write_file  # noqa: E402

from db import repository as repo  # noqa: E402
from db import team  # noqa: E402
from db.engine import get_engine  # noqa: E402
from db.ingest import ingest_file  # noqa: E402
from db.models import Annotation, Sentence  # noqa: E402
from fractal_core.evaluation import agreement as stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=100_000)
    parser.add_argument("--sentences-per-response", type=int, default=4)
    parser.add_argument(
        "--labels", type=int, default=100_000, help="annotator labels for the agreement figure"
    )
    parser.add_argument("--saves", type=int, default=300)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        big = tmp / "big.jsonl"
        write_file(big, args.responses, args.sentences_per_response, seed=2)
        engine = get_engine(f"sqlite:///{tmp / 'big.db'}")
        t = time.perf_counter()
        ds = ingest_file(engine, big, "big").dataset_id
        print(f"setup: {args.responses} responses ingested in {time.perf_counter() - t:.1f} s")

        # --- saves: with the version check (as the Review page saves) and without (peer), interleaved
        rng = random.Random(5)
        checked: list[float] = []
        unchecked: list[float] = []
        for i in range(args.saves):
            rid = rng.randrange(1, args.responses + 1)
            detail = repo.get_response(engine, rid)
            s = detail.sentences[rng.randrange(len(detail.sentences))]
            label = 0  # consistent with every max response
            seen = {s.id: s.label_version}
            t = time.perf_counter()
            if i % 2 == 0:
                repo.record_labels(
                    engine, rid, {s.id: label if s.label is None else None}, "ann", expected=seen
                )
                checked.append((time.perf_counter() - t) * 1e3)
            else:
                repo.record_labels(engine, rid, {s.id: label if s.label is None else None}, "ann")
                unchecked.append((time.perf_counter() - t) * 1e3)
        c50, c95 = percentiles(checked)
        u50, u95 = percentiles(unchecked)
        print(
            f"save with version check: p50 {c50:.1f} ms, p95 {c95:.1f} ms over {len(checked)}; "
            f"peer without the check p50 {u50:.1f} ms, p95 {u95:.1f} ms (p95 ratio {c95 / u95:.2f})"
        )

        # --- agreement over args.labels annotator labels: 2 annotators on labels/2 sentences, ~80% agreeing
        n_units = args.labels // 2
        sentence_rows = (
            engine.connect()
            .execute(select(Sentence.id, Sentence.response_id).order_by(Sentence.id).limit(n_units))
            .all()
        )
        sids = np.array([r[0] for r in sentence_rows])
        rids = np.array([r[1] for r in sentence_rows])
        gen = np.random.default_rng(0)
        a = gen.integers(0, 2, len(sids))
        b = np.where(gen.random(len(sids)) < 0.8, a, 1 - a)
        rows = [
            {
                "sentence_id": int(s),
                "annotator": who,
                "response_id": int(r),
                "dataset_id": ds,
                "label": int(v),
            }
            for who, labels in (("ann", a), ("bob", b))
            for s, r, v in zip(sids, rids, labels, strict=True)
        ]
        with engine.begin() as conn:
            conn.execute(insert(Annotation), rows)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            report = team.agreement(engine, ds)
            times.append(time.perf_counter() - t)
        units = np.concatenate([sids, sids])
        values = np.concatenate([a, b])
        t = time.perf_counter()
        stats.krippendorff_alpha(units, values, n_values=2)
        alpha_only = time.perf_counter() - t
        from sklearn.metrics import cohen_kappa_score

        t = time.perf_counter()
        peer_kappa = cohen_kappa_score(a, b)
        peer = time.perf_counter() - t
        [pair] = report.pairs
        print(
            f"agreement over {report.n_labels} labels ({report.n_sentences} sentences, {report.n_responses} "
            f"responses): median {np.median(times):.3f} s, max {max(times):.3f} s (store read + alpha + kappa + "
            f"per label); alpha alone {alpha_only * 1e3:.1f} ms; alpha {report.alpha:.3f}, kappa {pair.kappa:.4f} "
            f"(scikit-learn {peer_kappa:.4f}, its kappa alone {peer * 1e3:.1f} ms)"
        )
        ok = c95 <= 50 and max(times) <= 1.0
        print(f"targets (save p95 <= 50 ms, agreement <= 1 s): {'met' if ok else 'NOT met'}")
        engine.dispose()


if __name__ == "__main__":
    main()
