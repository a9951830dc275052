"""The ``import`` and ``export`` jobs: a file into a dataset (then follow-up jobs), a dataset into a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.job_context import JobContext
from app.job_queue import queue_after_import
from app.settings import AppSettings
from db import repository as repo
from fractal_core.errors import InputError


def run_import(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from db.ingest import ingest_file

    ctx.set(0.05, f"reading {Path(payload['path']).name}", force=True)
    keys = (
        "format",
        "column_map",
        "label_map",
        "extra_columns",
        "segment_mode",
        "labels_as",
        "label_kind",
        "imported_by",
    )
    options = {k: payload[k] for k in keys if payload.get(k)}
    try:
        summary = ingest_file(engine, payload["path"], payload["dataset"], **options)
    except InputError:
        path = Path(payload["path"])
        if path.parent.resolve() == (settings.home / "uploads").resolve():
            path.unlink(missing_ok=True)  # a rejected upload is never imported: do not keep it on disk
        raise
    ctx.log(
        f"ingested {summary.n_responses} responses, {summary.n_sentences} sentences into {summary.dataset!r}"
        + (f"; extra columns {summary.extras_note()}" if summary.extra_columns else "")
        + (
            f"; one dataset per criterion: {', '.join(summary.criteria_datasets)}"
            if summary.criteria_datasets
            else ""
        )
    )
    for dataset_id in summary.dataset_ids():  # one dataset per criterion for a file with several
        queue_after_import(engine, dataset_id)
    return {
        "dataset_id": summary.dataset_id,
        "n_responses": summary.n_responses,
        "n_sentences": summary.n_sentences,
        "extra_columns": list(summary.extra_columns),
        "extras_mode": summary.extras_mode,
    }


EXPORT_INLINE_MAX_RESPONSES = 5_000
"""Datasets up to this size are exported in the web process; larger ones by an export job."""

EXPORT_SUFFIX: dict[str, str] = {
    "native": ".jsonl",
    "stepwise-jsonl": ".jsonl",
    "stepwise-parquet": ".parquet",
    "prm800k": ".jsonl",
    "kto": ".jsonl",
}
"""File suffix of each ``db.export`` format."""


def export_path(settings: AppSettings, dataset_name: str, fmt: str) -> Path:
    """Where an export job writes: one file per dataset and format, replaced by the next export."""
    settings.exports_dir.mkdir(parents=True, exist_ok=True)
    return settings.exports_dir / f"{dataset_name}-{fmt}{EXPORT_SUFFIX.get(fmt, '.jsonl')}"


def run_export(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from db.export import export_dataset

    dataset = repo.require_dataset(engine, int(payload["dataset_id"]))
    fmt = str(payload["format"])
    out = export_path(settings, dataset.name, fmt)
    ctx.set(0.05, f"exporting {dataset.name} as {fmt}", force=True)
    version = payload.get("model_version")
    summary = export_dataset(
        engine,
        dataset.id,
        out,
        format=fmt,  # type: ignore[arg-type]
        model_version=version,
        human_only=bool(payload.get("human_only", False)),
        soft_labels=bool(payload.get("soft_labels", False)),
    )
    ctx.log(f"wrote {summary.n_rows} rows to {out} ({summary.n_skipped} responses left out)")
    return {"path": summary.path, "format": fmt, "n_rows": summary.n_rows, "n_skipped": summary.n_skipped}
