"""One machine, many sentences: time and peak memory of each stage at 10k, 100k and 1M sentences.

Usage (what BENCHMARKS.md records):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000,1000000

Synthetic data (5 sentences per response, 8-15 random words each, max-aggregated binary labels) is written as
JSONL, then every stage runs in its own process so that its peak RSS (``VmHWM``) is its own:

- ingest: ``db.ingest.ingest_file`` into a fresh SQLite store (streams the file, chunked inserts);
- embed: the sentences are streamed out of the store in chunks into a float16 memory-mapped matrix. The real
  encoder embeds the first ``--embed-slice`` sentences (its rate gives the extrapolated time for all of them);
  the rest are random unit vectors, because embedding 1M sentences on 2 shared cores takes hours. So this stage
  measures the streaming and the memory, and the encoder's cost is reported separately as an extrapolation;
- train: ``FractalModel("bagloss").fit_bags`` over the memory-mapped float16 matrix (minibatches are upcast),
  a fixed ``--epochs`` (no early stopping), so sizes are comparable;
- score: ``predict_proba_bags`` in chunks of bags over the memory-mapped matrix;
- store: ``store_scores`` (chunked transactions) + ``finish_model_version`` (per-response summary) + activate;
- review: what the Review page reads per request: ``list_responses`` (one page sorted by uncertainty, at a
  random offset) + ``get_response`` (one response with its sentences and scores); p50/p95 over ``--requests``;
- cache: precomputed vectors (random unit vectors) for every sentence and context window into the embedding
  cache, as a finished embed job leaves them (preparation for the two job stages);
- job-train: the worker's train job end to end (``app.worker.Worker`` runs ``app.jobs.run_train``): load the
  dataset, embed from the cache into a float16 memory-mapped matrix, ``bagloss`` for a fixed ``--epochs`` with
  its 10% hold-out, score, store the scores and response figures, activate;
- job-score: the worker's score job (``run_score``): the active model re-scores every response, stored likewise.

The stages themselves are in ``scale_stages.py``; this script writes the data, runs them and prints the table.

Growth = time at the larger size / time at the smaller one (linear would be 10x for 10x the data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale_stages import PER_RESPONSE, STAGE_FUNCS  # noqa: E402

STAGES = ("ingest", "embed", "train", "score", "store", "review", "cache", "job-train", "job-score")
_WORD_TEXT = (
    "the a of to and in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no what up out who them some could "
    "into its then two more these time than first new other number way may people only over such make like "
    "step value answer total sum equal therefore because since each price cost apple train hour minute speed "
    "area triangle circle radius square root prime factor divide multiply add subtract half third quarter"
)
WORDS = _WORD_TEXT.split()


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(path: Path, n_sentences: int, seed: int = 0) -> None:
    """Write ``n_sentences / 5`` responses as JSONL, streaming (labels: max over hidden sentence labels)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n_sentences // PER_RESPONSE):
            sentences = [
                " ".join(rng.choices(WORDS, k=rng.randint(8, 15))) + f" ({i}.{j})."
                for j in range(PER_RESPONSE)
            ]
            hidden = [int(rng.random() < 0.15) for _ in sentences]
            row = {
                "id": f"r{i}",
                "context": f"Question {i}: " + " ".join(rng.choices(WORDS, k=12)) + "?",
                "sentences": sentences,
                "response_label": max(hidden),
                "aggregation": "max",
            }
            out.write(json.dumps(row) + "\n")


def run_stage(args: argparse.Namespace) -> None:
    work = Path(args.work)
    # Imports first (torch alone takes seconds on a busy machine): the stage's time is its work only.
    import torch  # noqa: F401

    import app.jobs  # noqa: F401
    import db.repository  # noqa: F401
    import fractal_core.fitting.estimator  # noqa: F401
    import fractal_core.fitting.pipeline  # noqa: F401
    from db.ingest import ingest_file  # noqa: F401
    from fractal_core.embedding.encoder import Encoder  # noqa: F401

    started = time.perf_counter()
    extra = STAGE_FUNCS[args.stage](work, args)
    seconds = time.perf_counter() - started
    print(json.dumps({"stage": args.stage, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}))


# ----------------------------------------------------------------------------------------------- orchestrate
def run_size(n: int, args: argparse.Namespace, root: Path) -> dict[str, dict[str, Any]]:
    work = root / f"n{n}"
    work.mkdir()
    generate(work / "data.jsonl", n)
    labels = [json.loads(line)["response_label"] for line in (work / "data.jsonl").open()]
    np.save(work / "labels.npy", np.array(labels, dtype=np.float32))
    del labels
    results: dict[str, dict[str, Any]] = {}
    for stage in [s for s in STAGES if s in args.stages.split(",")]:
        cmd = [sys.executable, __file__, "--stage", stage, "--work", str(work), "--n", str(n)]
        cmd += ["--epochs", str(args.epochs), "--embed-slice", str(args.embed_slice)]
        cmd += ["--requests", str(args.requests), "--threads", str(args.threads)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        if done.returncode:
            print(f"n={n} {stage} failed:\n{done.stderr[-3000:]}", flush=True)
            results[stage] = {"failed": True}
            break
        results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[stage]
        extra = {k: v for k, v in r.items() if k not in ("stage", "seconds", "peak_rss_mb")}
        print(
            f"n={n:>9,} {stage:7s} {r['seconds']:8.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  {extra}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--embed-slice", type=int, default=1000, help="sentences embedded by the real encoder"
    )
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", default=",".join(STAGES), help="a subset, e.g. ingest,embed,store,review")
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args)
        return
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; python {platform.python_version()}; "
        f"nproc {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}"
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="fractal-scale-", dir=args.dir) as tmp:
        all_results = {n: run_size(n, args, Path(tmp)) for n in sizes}
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print("\n| stage | " + " | ".join(f"{n:,} s / peak MB" for n in sizes) + " | growth |")
    print("|---" * (len(sizes) + 2) + "|")
    for stage in STAGES:
        cells, times = [], []
        for n in sizes:
            r = all_results[n].get(stage, {})
            if "seconds" in r:
                cells.append(f"{r['seconds']:.1f} / {r['peak_rss_mb']:.0f}")
                times.append(r["seconds"])
            else:
                cells.append("–")
        growth = ", ".join(f"{b / a:.1f}x" for a, b in zip(times, times[1:], strict=False) if a > 0)
        print(f"| {stage} | " + " | ".join(cells) + f" | {growth} |")


if __name__ == "__main__":
    main()
