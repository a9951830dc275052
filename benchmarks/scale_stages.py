"""The stages ``bench_scale.py`` times, each run in a process of its own on the work directory it prepared
(``data.jsonl``, ``labels.npy``): what each stage does is listed in ``bench_scale.py``'s docstring."""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
PER_RESPONSE = 5


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
