"""Embedding on a Ray cluster (optional: ``pip install 'fractal-studio[ray]'``).

When one machine is not enough, :func:`ray_embed` spreads the encoder over a Ray cluster with Ray Data: the texts
not yet in the embedding cache become a dataset, ``map_batches`` runs them through a pool of actors that each
load ONE encoder (on a GPU when the worker has one: ``gpus_per_worker``), and the driver writes every finished
batch to the cache as it arrives. Cache writes are keyed by (encoder id, text digest) and ignore existing keys,
so they are idempotent: a run that loses a worker (or is interrupted) is simply run again and only the batches
that never reached the cache are embedded. The result is returned in the order of ``texts``.

Embeddings are the single-process ones bit for bit, in every precision: the driver cuts the texts into the
encoder's own batches (``encoder.batch_plan``) and each worker encodes exactly those batches, so every text is
encoded with the same neighbours and padding (see tests/fractal_core/test_ray.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fractal_core.embedding.cache import EmbeddingCache, text_digest
from fractal_core.embedding.encoder import (
    EncoderConfig,
    batch_plan,
    default_cache_dir,
    encoder_id_for,
    max_length_for,
    resolve_model_path,
)

ProgressFn = Callable[[int, int], None]


def connect(address: str) -> Any:
    """Join the Ray cluster at ``address``; ``"auto"``: the cluster this machine belongs to, else a local one.

    Returns the ``ray`` module. Raises ``RuntimeError`` with the install command when Ray is missing.
    """
    try:
        import ray
    except ImportError as err:  # an optional dependency
        raise RuntimeError("Ray is not installed: pip install 'fractal-studio[ray]'") from err
    if ray.is_initialized():
        return ray
    # Workers must import this package from the same place the driver does (a source checkout or a wheel).
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
    if address == "auto":
        try:
            ray.init(address="auto", runtime_env=runtime_env, log_to_driver=False)
        except ConnectionError:  # no cluster running here: start one on this machine
            ray.init(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return ray


def _hidden_size(config: EncoderConfig) -> int:
    import json

    model_config = json.loads(
        (resolve_model_path(config.model_path) / "config.json").read_text(encoding="utf-8")
    )
    return int(model_config["hidden_size"])


class _EmbedBatch:
    """A Ray Data actor: one encoder per worker, reused for every batch it is given."""

    def __init__(self, config: EncoderConfig, threads: int) -> None:
        import torch

        from fractal_core.embedding.encoder import Encoder

        if threads > 0:
            torch.set_num_threads(threads)
        self.encoder = Encoder(replace(config, cache_dir=""))  # workers compute; the driver owns the cache

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Each item is one batch of the encoder's own plan (``batch_plan``): encoded as that one batch, with
        # the neighbours and padding the single process gives it, so the vectors are the same bit for bit.
        rows = [np.asarray(r, dtype=np.int64) for r in batch["rows"]]
        vectors = [self.encoder.encode([str(t) for t in texts]) for texts in batch["texts"]]  # (b, dim) each
        return {"row": np.concatenate(rows), "vec": np.concatenate(vectors)}


def _planned_batches(texts: list[str], rows: np.ndarray, config: EncoderConfig) -> list[dict[str, Any]]:
    """The encoder's batches of ``texts`` (``encoder.batch_plan``), one Ray Data item each: ``rows`` (b,) the
    texts' ``rows`` entries, ``texts`` the texts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.model_path), local_files_only=True)
    _, batches = batch_plan(
        tokenizer, texts, max_length=max_length_for(config), batch_tokens=config.batch_tokens
    )
    return [{"rows": rows[b].tolist(), "texts": [texts[i] for i in b]} for b in batches]


def ray_embed(
    texts: Sequence[str],
    *,
    address: str = "auto",
    config: EncoderConfig | None = None,
    workers: int | None = None,
    batch_size: int = 1,
    gpus_per_worker: float | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Embed ``texts`` on a Ray cluster; returns ``(len(texts), dim)`` float32 like :meth:`Encoder.encode`.

    Args:
        texts: any strings; duplicates and cached texts are not sent to the cluster.
        address: ``"auto"`` or a Ray address (``ray://host:10001``, ``host:6379``).
        config: the encoder (its ``cache_dir`` is the driver's cache; ``""`` keeps no cache).
        workers: encoder actors (default: one per CPU of the cluster, or per GPU when ``gpus_per_worker``);
            never more than there are encoder batches to embed.
        batch_size: encoder batches per Ray Data batch (the unit a lost worker repeats). The texts are cut into
            encoder batches here exactly as one process would cut them (``encoder.batch_plan``: length-sorted,
            a token budget each), so every text gets the same vector as in a single process.
        gpus_per_worker: GPUs per actor; ``None``: 1 when the cluster has GPUs, else 0 (CPU).
        progress: ``progress(done, total)`` in unique texts, after the cache lookup and per finished batch.
    """
    config = config or EncoderConfig()
    ray = connect(address)
    encoder_id = encoder_id_for(config)
    cache_dir = default_cache_dir() if config.cache_dir is None else config.cache_dir
    cache = EmbeddingCache(os.path.join(cache_dir, "embeddings.sqlite")) if cache_dir else None

    unique = list(dict.fromkeys(texts))
    digests = [text_digest(t) for t in unique]
    vectors: np.ndarray | None = None
    todo = np.arange(len(unique))
    if cache is not None:
        found, cached = cache.get_digests(encoder_id, digests)
        if found.any():
            vectors = np.zeros((len(unique), cached.shape[1]), dtype=np.float32)
            vectors[found] = cached
        todo = np.flatnonzero(~found)
    done = len(unique) - len(todo)
    if progress is not None:
        progress(done, len(unique))

    if len(todo):
        resources = ray.cluster_resources()
        gpus = (1.0 if resources.get("GPU", 0) > 0 else 0.0) if gpus_per_worker is None else gpus_per_worker
        n_workers = workers or max(
            1, int(resources.get("GPU", 0) // gpus if gpus else resources.get("CPU", 1))
        )
        items = _planned_batches([unique[i] for i in todo], todo, config)
        # An actor loads a whole encoder: never start more of them than there are batches to give out.
        n_workers = min(n_workers, len(items))
        # Several blocks per worker, so every worker gets some and a slow one is balanced out.
        dataset = ray.data.from_items(items, override_num_blocks=min(len(items), 16 * n_workers))
        embedded = dataset.map_batches(
            _EmbedBatch,
            fn_constructor_kwargs={"config": replace(config, device="auto"), "threads": 0 if gpus else 1},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=n_workers,
            num_cpus=0 if gpus else 1,
            num_gpus=gpus,
        )
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            rows = batch["row"].astype(np.int64)  # positions in `unique`
            vec = np.asarray(batch["vec"], dtype=np.float32)  # (b, dim)
            if vectors is None:
                vectors = np.zeros((len(unique), vec.shape[1]), dtype=np.float32)
            vectors[rows] = vec
            if cache is not None:  # each finished batch is kept at once: a rerun skips it
                cache.put_digests(encoder_id, [digests[r] for r in rows], vec)
            done += len(rows)
            if progress is not None:
                progress(done, len(unique))
    if cache is not None:
        cache.close()
    if vectors is None:  # no texts at all
        return np.zeros((0, _hidden_size(config)), dtype=np.float32)
    position = {t: i for i, t in enumerate(unique)}
    return vectors[np.fromiter((position[t] for t in texts), dtype=np.int64, count=len(texts))]
