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

DIM = 384
PER_RESPONSE = 5
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


# --------------------------------------------------------------------------------------------------- stages
def stage_ingest(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from db.engine import get_engine
    from db.ingest import ingest_file
    from db.schema import upgrade

    engine = get_engine(f"sqlite:///{work / 'store.db'}", check_schema=False)
    upgrade(engine)
    summary = ingest_file(engine, work / "data.jsonl", "scale")
    return {"responses": summary.n_responses, "sentences": summary.n_sentences}


def _sentence_rows(engine: Any, chunk: int) -> Any:
    """(ids, texts) of the dataset's sentences in (response, position) order, ``chunk`` rows at a time."""
    from sqlalchemy import select

    from db.models import Sentence

    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Sentence.id, Sentence.text)
                .where(Sentence.id > last)
                .order_by(Sentence.id)
                .limit(chunk)
            ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield [r[0] for r in rows], [r[1] for r in rows]


def stage_embed(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from db.engine import get_engine
    from fractal_core.embedding.encoder import Encoder, EncoderConfig

    torch.set_num_threads(args.threads)
    engine = get_engine(f"sqlite:///{work / 'store.db'}")
    n = args.n
    matrix = np.lib.format.open_memmap(work / "emb.npy", mode="w+", dtype=np.float16, shape=(n, DIM))
    ids = np.lib.format.open_memmap(work / "ids.npy", mode="w+", dtype=np.int64, shape=(n,))
    encoder = Encoder(EncoderConfig(cache_dir=""))
    rng = np.random.default_rng(0)
    done = 0
    encode_s = 0.0
    encoded = 0
    for chunk_ids, texts in _sentence_rows(engine, 50_000):
        k = len(texts)
        real = max(0, min(args.embed_slice - done, k))
        if real:
            started = time.perf_counter()
            matrix[done : done + real] = encoder.encode(texts[:real])
            encode_s += time.perf_counter() - started
            encoded += real
        if k > real:
            fake = rng.standard_normal((k - real, DIM), dtype=np.float32)
            matrix[done + real : done + k] = fake / np.linalg.norm(fake, axis=1, keepdims=True)
        ids[done : done + k] = chunk_ids
        done += k
    matrix.flush()
    ids.flush()
    rate = encoded / encode_s if encode_s else float("nan")
    return {"encoded": encoded, "encoder_rate": rate, "encoder_extrapolated_s": n / rate}


def _bags(work: Path, n: int) -> Any:
    import torch

    from fractal_core.fitting.bags import BagSet

    emb = torch.from_numpy(np.load(work / "emb.npy", mmap_mode="r+"))  # (N, d) float16, memory-mapped
    n_bags = n // PER_RESPONSE
    labels = np.load(work / "labels.npy")
    ctx = torch.nn.functional.normalize(
        torch.randn(n_bags, DIM, generator=torch.Generator().manual_seed(1)), dim=1
    )
    return BagSet(
        sent_emb=emb,
        bag_index=torch.arange(n_bags).repeat_interleave(PER_RESPONSE),
        ctx_emb=ctx.half(),
        win_bag=torch.arange(n_bags),
        labels=torch.from_numpy(labels).float(),
        gold=torch.full((n,), -1, dtype=torch.long),
    )


def stage_train(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from fractal_core.fitting.config import TrainConfig
    from fractal_core.fitting.estimator import FractalModel

    torch.set_num_threads(1)
    bags = _bags(work, args.n)
    config = TrainConfig(device="cpu", max_epochs=args.epochs, patience=args.epochs)
    model = FractalModel("bagloss", config=config, seed=0).fit_bags(
        bags, None, aggregation="max", n_classes=2, encoder_id="synthetic"
    )
    model.save(work / "model")
    return {"epochs": args.epochs, "bags": bags.n_bags}


def stage_score(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from fractal_core.fitting.estimator import FractalModel

    torch.set_num_threads(1)
    bags = _bags(work, args.n)
    model = FractalModel.load(work / "model")
    proba = model.predict_proba_bags(bags)  # (N, 2)
    np.save(work / "scores.npy", (1.0 - proba[:, 0]).numpy().astype(np.float32))
    return {}


def stage_store(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from db import repository as repo
    from db.engine import get_engine

    engine = get_engine(f"sqlite:///{work / 'store.db'}")
    dataset = repo.require_dataset(engine, "scale")
    mv = repo.create_model_version(engine, dataset.id, method="bagloss")
    ids = np.load(work / "ids.npy", mmap_mode="r")
    if (work / "scores.npy").exists():
        scores = np.load(work / "scores.npy", mmap_mode="r")
    else:  # `--stages` without score: random scores (what this stage costs does not depend on the values)
        scores = np.random.default_rng(0).random(len(ids)).astype(np.float32)
    for lo in range(0, len(ids), 200_000):  # the caller streams too: no full Python lists of 1M rows
        repo.store_scores(engine, mv.id, ids[lo : lo + 200_000], scores[lo : lo + 200_000])
    repo.finish_model_version(engine, mv.id)
    repo.activate_model_version(engine, mv.id)
    return {}


def stage_review(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from db import repository as repo
    from db.engine import get_engine

    engine = get_engine(f"sqlite:///{work / 'store.db'}")
    dataset = repo.require_dataset(engine, "scale")
    n_pages = max(1, dataset.n_responses // 50)
    rng = random.Random(0)
    first = repo.list_responses(engine, dataset.id, sort="id", page=0, page_size=1).rows[0].id
    times = []
    for i in range(args.requests + 3):
        started = time.perf_counter()
        page = repo.list_responses(engine, dataset.id, sort="uncertainty", page=rng.randrange(n_pages))
        repo.get_response(engine, first + rng.randrange(dataset.n_responses))
        if i >= 3:  # the first requests warm SQLite's page cache
            times.append((time.perf_counter() - started) * 1000)
        assert page.rows
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def _settings(work: Path) -> Any:
    from app.settings import AppSettings

    os.environ["FRACTAL_HOME"] = str(work / "home")  # the worker's embedding cache: FRACTAL_HOME/cache
    return AppSettings(home=work / "home", db_url=f"sqlite:///{work / 'store.db'}", annotator="bench")


def stage_cache(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Precomputed vectors for the worker's jobs: random unit vectors for every sentence and context window,
    put in the embedding cache under the bundled encoder's id (what a finished embed job leaves)."""
    from sqlalchemy import select

    from db.engine import get_engine
    from db.models import Response
    from fractal_core.embedding.cache import EmbeddingCache, text_digest
    from fractal_core.embedding.encoder import EncoderConfig, context_windows, encoder_id_for

    engine = get_engine(f"sqlite:///{work / 'store.db'}")
    cache = EmbeddingCache(work / "home" / "cache" / "embeddings.sqlite")
    encoder_id = encoder_id_for(EncoderConfig())
    rng = np.random.default_rng(0)

    def put(texts: list[str]) -> None:
        vectors = rng.standard_normal((len(texts), DIM), dtype=np.float32)
        cache.put_digests(
            encoder_id,
            [text_digest(t) for t in texts],
            vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        )

    n = 0
    for _, texts in _sentence_rows(engine, 50_000):
        put(texts)
        n += len(texts)
    with engine.connect() as conn:
        contexts = [r[0] for r in conn.execute(select(Response.context).order_by(Response.id))]
    windows, _ = context_windows(contexts)
    for lo in range(0, len(windows), 50_000):
        put(windows[lo : lo + 50_000])
    cache.close()
    return {"sentences": n, "windows": len(windows)}


def _run_worker_job(work: Path, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from app.worker import Worker
    from db import repository as repo

    torch.set_num_threads(1)
    worker = Worker(_settings(work))
    job = repo.create_job(worker.engine, kind, payload)
    worker.run(once=True)
    done = repo.get_job(worker.engine, job.id)
    assert done is not None
    if done.state != "succeeded":
        raise RuntimeError(f"{kind} job {done.state}: {done.error}")
    return {"n_scores": done.result.get("n_scores")}


def stage_job_train(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The worker's train job (``app.jobs.run_train``) on the store, from the cached vectors: load the
    dataset, embed (cache look-ups), train bagloss for a fixed ``--epochs``, score, store and activate."""
    from db import repository as repo
    from db.engine import get_engine

    dataset = repo.require_dataset(get_engine(f"sqlite:///{work / 'store.db'}"), "scale")
    config = {"max_epochs": args.epochs, "patience": args.epochs, "device": "cpu"}
    return _run_worker_job(
        work, "train", {"dataset_id": dataset.id, "method": "bagloss", "config": config, "seed": 0}
    )


def stage_job_score(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The worker's score job (``app.jobs.run_score``): the active model re-scores every response."""
    from db import repository as repo
    from db.engine import get_engine

    dataset = repo.require_dataset(get_engine(f"sqlite:///{work / 'store.db'}"), "scale")
    return _run_worker_job(work, "score", {"dataset_id": dataset.id})


STAGE_FUNCS = {
    "ingest": stage_ingest,
    "embed": stage_embed,
    "train": stage_train,
    "score": stage_score,
    "store": stage_store,
    "review": stage_review,
    "cache": stage_cache,
    "job-train": stage_job_train,
    "job-score": stage_job_score,
}


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
