"""What each background job does. The worker (``app.worker``) claims a job and calls :func:`run_job`.

Job kinds and payloads (every id is a database id):

- ``train``: ``{"dataset_id", "method", "config": TrainConfig overrides, "seed"}``. Loads the dataset with its
  gold labels, fits ``FractalModel``, scores every sentence, stores the scores in bulk under a new model
  version, evaluates the previous and the new model on the gold set, and only then activates the new version:
  until that last step the previously active version keeps serving the Review page, so a crash or a cancel
  never shows partial scores.
- ``score``: ``{"dataset_id"}``. Re-applies the active model's saved artifact to every response (for example
  after new responses were ingested) as a new version, activated the same way.
- ``embed``: ``{"dataset_id"}``. Embeds every sentence and context window into the on-disk cache (queued after
  an import) so the next training job starts from cached embeddings.
- ``import``: ``{"path", "dataset", "format", "column_map", "segment_mode", "labels_as"}``: ingests a file,
  then queues ``embed`` (and ``score`` when the dataset already has an active model).
- ``export``: ``{"dataset_id", "format", "model_version"}``: writes an export file under FRACTAL_HOME/exports.

Functions here take an engine and plain values so they can run from the worker, the CLI or a test.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from app.settings import AppSettings
from db import repository as repo
from fractal_core import registry
from fractal_core.errors import InputError

JOB_KINDS: tuple[str, ...] = ("train", "score", "embed", "import", "export")
"""Kinds the worker runs."""


class JobCancelled(Exception):
    """The user asked to stop the job (raised from the progress callback inside training)."""


@dataclass
class JobContext:
    """Progress, log and cancel plumbing for one running job (throttled so training is not slowed by writes)."""

    engine: Engine
    job_id: int
    cancel_flag: Callable[[], bool] = lambda: False
    min_interval_s: float = 0.5
    _last_write: float = 0.0
    _last_stage: str = ""
    _last_log: float = 0.0
    _stages_seen: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        repo.append_log(self.engine, self.job_id, line)

    def set(self, fraction: float, message: str, *, force: bool = False) -> None:
        """Record overall progress in [0, 1]; raises :class:`JobCancelled` when a cancel was requested."""
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            if repo.update_progress(self.engine, self.job_id, fraction, message):
                raise JobCancelled("cancelled by the user")
        if self.cancel_flag():
            raise JobCancelled("cancelled by the user")

    def training_callback(
        self, stages: Sequence[str], lo: float, hi: float
    ) -> Callable[[str, float, str], None]:
        """A training progress callback mapping its stages onto [lo, hi] of the overall bar.

        ``stages``: the training stages the job will run (``fractal_core.registry.training_stages``); the
        embedding step before them takes a fixed share, or all of it for a training-free method.
        """
        n_stages = len(stages)
        embed_share = 0.15 if n_stages else 1.0

        def callback(stage: str, fraction: float, message: str) -> None:
            now = time.monotonic()
            if stage != self._last_stage:
                self._last_stage = stage
                if stage != "embed":
                    self._stages_seen.append(stage)
                self._last_log = now
                self.log(f"[{stage}] {message}")
            elif now - self._last_log >= 1.0:
                # Epoch lines for the live log, at most one a second so the log stays readable.
                self._last_log = now
                self.log(f"[{stage}] {message}")
            if stage == "embed":
                overall = embed_share * fraction
            else:
                done = max(0, len(self._stages_seen) - 1)
                per = (1.0 - embed_share) / max(n_stages, len(self._stages_seen))
                overall = embed_share + per * (done + min(max(fraction, 0.0), 1.0))
            self.set(lo + (hi - lo) * min(overall, 1.0), f"{stage}: {message}")

        return callback


def run_job(engine: Engine, settings: AppSettings, job: repo.JobRow, ctx: JobContext) -> dict[str, Any]:
    """Run one claimed job to completion; returns its result. Raises on failure or :class:`JobCancelled`."""
    handlers: dict[str, Callable[[Engine, AppSettings, dict[str, Any], JobContext], dict[str, Any]]] = {
        "train": run_train,
        "score": run_score,
        "embed": run_embed,
        "import": run_import,
        "export": run_export,
    }
    handler = handlers.get(job.kind)
    if handler is None:
        raise ValueError(f"unknown job kind {job.kind!r}; this worker runs {', '.join(JOB_KINDS)}")
    return handler(engine, settings, dict(job.payload), ctx)


# ------------------------------------------------------------------------------------------------ training


def train_config(overrides: dict[str, Any] | None) -> Any:
    """A ``TrainConfig`` from the library defaults plus the user's overrides (unknown keys raise)."""
    from fractal_core import TrainConfig

    return TrainConfig.from_dict({**TrainConfig().to_dict(), **(overrides or {})})


def _gold_records(records: list[Any]) -> list[Any]:
    return [r for r in records if r.sentence_labels is not None]


def _gold_metrics(model: Any, gold: list[Any]) -> dict[str, float]:
    """The model's metrics on the current gold sentences; empty when there is no gold to judge by."""
    if not gold:
        return {}
    metrics = model.evaluate(gold)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN: keep the key (the chart shows a gap) with a null value.
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}


def _store_version(
    engine: Engine,
    settings: AppSettings,
    ctx: JobContext,
    *,
    dataset_id: int,
    model: Any,
    records: list[Any],
    method: str,
    config: dict[str, Any],
    parent: Any,
    extra_metrics: dict[str, Any],
    lo: float,
) -> dict[str, Any]:
    """Score ``records`` with ``model`` and publish the scores as a new active model version.

    The version is created in status ``training``; scores are written in chunks; the version is marked
    ``ready`` and activated only after every score is stored. Any failure marks it ``failed`` and leaves
    the previously active version in place.
    """
    mv = repo.create_model_version(
        engine, dataset_id, method=method, config=config, parent_id=parent.id if parent else None
    )
    try:
        ctx.log(f"model version {mv.version}: scoring {sum(len(r.spans) for r in records)} sentences")
        ctx.set(lo, "scoring every sentence", force=True)
        scores = model.predict(records)
        ids = np.fromiter(
            (i for r in records for i in r.meta["db_sentence_ids"]),
            dtype=np.int64,
            count=sum(len(s) for s in scores),
        )
        flat = np.clip(np.concatenate(scores).astype(np.float64), 0.0, 1.0) if scores else np.zeros(0)
        queue, reasons = gold_proposals(records, scores)
        if queue:
            extra_metrics = {**extra_metrics, "gold_queue": queue, "gold_queue_reasons": reasons}
        ctx.set(lo + (1 - lo) * 0.4, "storing scores", force=True)
        repo.store_scores(engine, mv.id, ids, flat)
        artifact = settings.models_dir / f"dataset{dataset_id}-v{mv.version}"
        model.save(artifact)
        ctx.set(lo + (1 - lo) * 0.8, "publishing the new version", force=True)
        row = repo.finish_model_version(
            engine, mv.id, status="ready", metrics=extra_metrics, artifact_path=str(artifact)
        )
        repo.activate_model_version(engine, mv.id)
    except BaseException as exc:
        reason = "cancelled" if isinstance(exc, JobCancelled) else f"{type(exc).__name__}: {exc}"
        # The version may already be closed; the job's own error still says what happened.
        with contextlib.suppress(Exception):
            repo.finish_model_version(engine, mv.id, status="failed", error=reason)
        raise
    ctx.log(f"model version {row.version} is active ({len(ids)} sentence scores)")
    return {
        "model_version_id": mv.id,
        "version": row.version,
        "n_scores": int(len(ids)),
        "metrics": extra_metrics,
    }


GOLD_QUEUE_SIZE = 200
"""Responses proposed per selection strategy and stored with each model version (the Gold queue page)."""
_DIVERSE_MAX_SENTENCES = 50_000  # diverse needs every sentence embedding in memory: only for modest datasets


def gold_proposals(
    records: list[Any], scores: list[np.ndarray], *, k: int = GOLD_QUEUE_SIZE
) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """Per strategy of ``fractal_core.selection``, the database ids of the responses to label next (best first),
    and the library's reason for each proposal (same order).

    Responses that already carry gold labels are never proposed. Computed once per model version in the
    worker, so the Gold queue page reads a short list instead of ranking the whole dataset per request.
    Returns ({}, {}) when the library cannot rank this data (e.g. mixed aggregations).
    """
    # torch-heavy: imported only where ranking runs (the worker)
    from fractal_core.selection import explain_gold, select_gold

    already = [i for i, r in enumerate(records) if r.sentence_labels is not None]
    n_sentences = sum(len(s) for s in scores)
    out: dict[str, list[int]] = {}
    why: dict[str, list[str]] = {}
    for strategy in registry.QUEUE_STRATEGIES:
        embeddings = None
        if registry.strategy(strategy).needs_embeddings:
            if n_sentences > _DIVERSE_MAX_SENTENCES:
                continue
            from fractal_core.encoder import get_encoder

            flat = get_encoder().encode([s.text for r in records for s in r.spans])  # cached: no re-encoding
            embeddings = np.split(flat, np.cumsum([len(r.spans) for r in records])[:-1])
        try:
            picked = select_gold(
                records, scores, k=k, strategy=strategy, already=already, embeddings=embeddings
            )
            reasons = explain_gold(records, scores, picked, strategy=strategy)
        except ValueError:
            return {}, {}
        out[strategy] = [int(records[i].meta["db_response_id"]) for i in picked]
        why[strategy] = reasons
    return out, why


def run_train(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel
    from fractal_core.train import TrainingCancelled

    dataset_id = int(payload["dataset_id"])
    method = str(payload.get("method", "fractal"))
    config = train_config(payload.get("config"))
    seed = int(payload.get("seed", 0))
    ctx.set(0.0, "loading responses and gold labels", force=True)
    records = repo.load_records(engine, dataset_id)
    if not records:
        raise ValueError("the dataset has no responses to train on")
    gold = _gold_records(records)
    n_gold = sum(sum(v is not None for v in r.sentence_labels) for r in gold)
    ctx.log(
        f"training {method!r} on {len(records)} responses ({len(gold)} with gold labels, {n_gold} sentences)"
    )
    parent = repo.active_model_version(engine, dataset_id)
    before: dict[str, float] = {}
    if parent is not None and parent.artifact_path and gold and Path(parent.artifact_path).exists():
        before = _gold_metrics(FractalModel.load(parent.artifact_path), gold)
    model = FractalModel(method, config=config, seed=seed)
    try:
        stages = registry.training_stages(
            method, has_gold=bool(gold), aggregation=records[0].aggregation, config=config
        )
        model.fit(records, progress=ctx.training_callback(stages, 0.02, 0.8))
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    after = _gold_metrics(model, gold)
    # Labels that came with the file (source "imported") are not gold, but they are the best check a user
    # has before correcting anything: report them separately.
    with_file_labels = [
        r
        for r in repo.load_records(engine, dataset_id, include_imported=True)
        if r.sentence_labels is not None
    ]
    file_metrics = _gold_metrics(model, with_file_labels) if len(with_file_labels) > len(gold) else {}
    metrics: dict[str, Any] = {
        "gold_before": _finite(before),
        "gold_after": _finite(after),
        "file_labels_after": _finite(file_metrics),
        "gold_responses": len(gold),
        "gold_sentences": n_gold,
        "responses": len(records),
        "resolved_method": getattr(model, "resolved_method_", method),
        # auto / fractal: the candidate chosen, the criterion and every candidate's figures (Models page).
        **({"method_choice": model.selection_} if getattr(model, "selection_", None) else {}),
        "compared_with_version": parent.version if parent is not None else None,
        **{k: v for k, v in _finite(dict(getattr(model, "metrics_", {}) or {})).items()},
    }
    return _store_version(
        engine, settings, ctx, dataset_id=dataset_id, model=model, records=records, method=method,
        config={"train": config.to_dict(), "seed": seed}, parent=parent, extra_metrics=metrics, lo=0.8,
    )  # fmt: skip


def run_score(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel

    dataset_id = int(payload["dataset_id"])
    parent = repo.active_model_version(engine, dataset_id)
    if parent is None or not parent.artifact_path:
        raise ValueError("the dataset has no active model to score with; start a training job instead")
    records = repo.load_records(engine, dataset_id)
    model = FractalModel.load(parent.artifact_path)
    metrics = {**parent.metrics, "rescored_from_version": parent.version}
    return _store_version(
        engine, settings, ctx, dataset_id=dataset_id, model=model, records=records, method=parent.method,
        config={**parent.config, "rescored_from_version": parent.version}, parent=parent, extra_metrics=metrics,
        lo=0.1,
    )  # fmt: skip


def run_embed(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core.encoder import get_encoder

    records = repo.load_records(engine, int(payload["dataset_id"]), with_gold=False)
    encoder = get_encoder()
    if payload.get("bundled_embeddings") and encoder.cache is not None:
        # The demo ships its vectors (fractal_core/demo): only a different encoder embeds it again.
        from fractal_core.demo import demo_embeddings_path

        loaded = encoder.cache.import_pack(demo_embeddings_path(), encoder.encoder_id)
        ctx.log(
            f"loaded {loaded} precomputed demo embeddings" if loaded else "demo embeddings: other encoder"
        )
    sentences = [s.text for r in records for s in r.spans]
    ctx.log(f"embedding {len(sentences)} sentences and {len(records)} contexts with {encoder.encoder_id}")

    def progress(done: int, total: int) -> None:
        ctx.set(0.9 * done / max(total, 1), f"sentences: {done}/{total} unique texts embedded")

    encoder.encode(sentences, progress=progress)
    ctx.set(0.9, "context windows", force=True)
    encoder.encode_windows([r.context for r in records])
    ctx.log("embeddings cached")
    return {"sentences": len(sentences), "encoder": encoder.encoder_id}


def queue_after_import(
    engine: Engine, dataset_id: int, *, bundled_embeddings: bool = False
) -> list[repo.JobRow]:
    """Follow-up work for new responses: embed them now; re-score with the active model if there is one.

    ``bundled_embeddings``: the dataset is the bundled demo, whose precomputed vectors the embed job loads first.
    """
    payload: dict[str, Any] = {"dataset_id": dataset_id}
    if bundled_embeddings:
        payload["bundled_embeddings"] = True
    queued = [repo.create_job(engine, "embed", payload, idempotency_key=f"embed:{dataset_id}")]
    if repo.active_model_version(engine, dataset_id) is not None:
        queued.append(
            repo.create_job(
                engine, "score", {"dataset_id": dataset_id}, idempotency_key=f"score:{dataset_id}"
            )
        )
    return queued


# ----------------------------------------------------------------------------------------- import / export


def run_import(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from db.ingest import ingest_file

    ctx.set(0.05, f"reading {Path(payload['path']).name}", force=True)
    options = {k: payload[k] for k in ("format", "column_map", "segment_mode", "labels_as") if payload.get(k)}
    try:
        summary = ingest_file(engine, payload["path"], payload["dataset"], **options)
    except InputError:
        path = Path(payload["path"])
        if path.parent.resolve() == (settings.home / "uploads").resolve():
            path.unlink(missing_ok=True)  # a rejected upload is never imported: do not keep it on disk
        raise
    ctx.log(
        f"ingested {summary.n_responses} responses, {summary.n_sentences} sentences into {summary.dataset!r}"
    )
    queue_after_import(engine, summary.dataset_id)
    return {
        "dataset_id": summary.dataset_id,
        "n_responses": summary.n_responses,
        "n_sentences": summary.n_sentences,
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
    summary = export_dataset(engine, dataset.id, out, format=fmt, model_version=version)  # type: ignore[arg-type]
    ctx.log(f"wrote {summary.n_rows} rows to {out} ({summary.n_skipped} responses left out)")
    return {"path": summary.path, "format": fmt, "n_rows": summary.n_rows, "n_skipped": summary.n_skipped}
