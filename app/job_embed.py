"""The ``embed`` job and what embedding in any job needs: the encoder settings, Ray, the scratch directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from app.job_context import JobContext
from app.settings import AppSettings
from db import jobs as db_jobs
from db import repository as repo

if TYPE_CHECKING:  # the library's encoder loads torch: only the job functions import it
    from fractal_core.embedding.encoder import EncoderConfig


def scratch_dir(settings: AppSettings) -> Path:
    """This process's scratch directory (``FRACTAL_HOME/scratch/host:pid``): a job's embeddings file lives there
    while it runs, so what a killed job left is found and removed by :func:`purge_scratch`."""
    directory = settings.home / "scratch" / db_jobs.process_owner()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def purge_scratch(settings: AppSettings) -> list[str]:
    """Remove the scratch directories of processes on this host that no longer exist (a killed worker's
    embeddings file can be hundreds of MB); returns their owners (``host:pid``)."""
    root = settings.home / "scratch"
    gone = [d for d in root.iterdir() if d.is_dir() and db_jobs.owner_gone(d.name)] if root.is_dir() else []
    for directory in gone:
        shutil.rmtree(directory, ignore_errors=True)
    return [d.name for d in gone]


def encoder_config(settings: AppSettings) -> EncoderConfig | None:
    """The encoder of new embed and train jobs (``FRACTAL_ENCODER``, ``FRACTAL_ENCODER_PRECISION``); ``None``:
    the bundled one at its default precision."""
    from fractal_core.embedding.encoder import EncoderConfig

    if settings.encoder is None and settings.precision == "auto":
        return None
    return EncoderConfig(model_path=settings.encoder, precision=settings.precision)  # type: ignore[arg-type]


def run_embed(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core.embedding.encoder import get_encoder

    records = repo.load_records(engine, int(payload["dataset_id"]), with_gold=False)
    encoder = get_encoder(encoder_config(settings))
    if payload.get("bundled_embeddings") and encoder.cache is not None:
        # The demo ships its vectors (fractal_core/data/demo): only a different encoder embeds it again.
        from fractal_core.data.demo import demo_embeddings_path

        loaded = encoder.cache.import_pack(demo_embeddings_path(), encoder.encoder_id)
        ctx.log(
            f"loaded {loaded} precomputed demo embeddings" if loaded else "demo embeddings: other encoder"
        )
    sentences = [s.text for r in records for s in r.spans]
    if settings.ray_address:
        ctx.log(
            f"embedding {len(sentences)} sentences and {len(records)} contexts on Ray ({settings.ray_address})"
        )
        embed_on_ray(records, encoder.config, settings.ray_address, ctx, hi=1.0)
        return {"sentences": len(sentences), "encoder": encoder.encoder_id, "ray": settings.ray_address}
    ctx.log(f"embedding {len(sentences)} sentences and {len(records)} contexts with {encoder.encoder_id}")

    def progress(done: int, total: int) -> None:
        ctx.set(0.9 * done / max(total, 1), f"sentences: {done}/{total} unique texts embedded")

    encoder.encode(sentences, progress=progress)
    ctx.set(0.9, "context windows", force=True)
    encoder.encode_windows([r.context for r in records])
    ctx.log("embeddings cached")
    return {"sentences": len(sentences), "encoder": encoder.encoder_id}


def embed_on_ray(records: list[Any], config: Any, address: str, ctx: JobContext, *, hi: float) -> None:
    """Fill the embedding cache with the records' sentences and context windows on a Ray cluster."""
    from fractal_core.embedding.encoder import context_windows
    from fractal_core.experimental.distributed import ray_embed

    windows, _ = context_windows([r.context for r in records])

    def progress(done: int, total: int) -> None:
        ctx.set(hi * 0.95 * done / max(total, 1), f"Ray: {done}/{total} unique texts embedded")

    ray_embed(
        [s.text for r in records for s in r.spans] + windows,
        address=address,
        config=config,
        progress=progress,
    )
