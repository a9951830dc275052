"""What each background job does. The worker (``app.worker``) claims a job and calls :func:`run_job`.

Job kinds and payloads (every id is a database id):

- ``train``: ``{"dataset_id", "method", "config": TrainConfig overrides, "seed"}`` (:class:`TrainPayload`,
  checked when the job is queued). Loads the dataset once
  (records, gold labels and ids), hands it to the library's one entry point
  (``fractal_core.fitting.pipeline.train_and_score``: embed once, train, score, summarise each response, measure the
  previous and the new model on the gold set, propose gold), stores what it returns under a new model version
  and only then activates it, if it is not worse than the active version on the current gold set beyond noise
  (else it waits for a person): until that last step the previously active version keeps serving the Review
  page, so a crash or a cancel never shows partial scores.
- ``score``: ``{"dataset_id"}``. Re-applies the active model's saved artifact to every response (for example
  after new responses were ingested) through ``fractal_core.fitting.pipeline.score_records``, as a new version,
  activated the same way.
- ``embed``: ``{"dataset_id"}``. Embeds every sentence and context window into the on-disk cache (queued after
  an import) so the next training job starts from cached embeddings.
- ``import``: ``{"path", "dataset", "format", "column_map", "label_map", "segment_mode", "labels_as"}``: ingests a file,
  then queues ``embed`` and ``score`` when the dataset already has an active model, else ``train``.
- ``export``: ``{"dataset_id", "format", "model_version", "human_only", "soft_labels"}``: writes an export file under FRACTAL_HOME/exports.

Functions here take an engine and plain values so they can run from the worker, the CLI or a test.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from app.settings import AppSettings
from db import artifacts
from db import jobs as db_jobs
from db import repository as repo
from db.repository import model_versions
from fractal_core.errors import InputError
from fractal_core.fitting import registry
from fractal_core.fitting.config import TrainConfig

if TYPE_CHECKING:  # the library's models load torch: only the worker's job functions import them
    from fractal_core import FractalModel
    from fractal_core.embedding.encoder import EncoderConfig
    from fractal_core.fitting.pipeline import ScoredResponses

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

        ``stages``: the training stages the job will run (``fractal_core.fitting.registry.training_stages``); the
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


def train_config(overrides: dict[str, Any] | None) -> TrainConfig:
    """A ``TrainConfig`` from the library defaults plus the user's overrides; an unknown key or a bad value
    raises ``InputError`` naming it (``config.<field>``)."""
    from fractal_core.fitting.config import TrainConfig

    try:
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **(overrides or {})})
    except InputError as err:
        raise InputError(err.reason, field=f"config.{err.field}" if err.field else "config") from None


@dataclass(frozen=True)
class TrainPayload:
    """A ``train`` job's payload, parsed and checked when the job is queued (and again when it runs, since a
    stored payload may predate a check): a bad value is refused with its field named, before any work."""

    dataset_id: int
    method: str
    overrides: dict[str, Any]
    seed: int
    config: TrainConfig

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> TrainPayload:
        """``{"dataset_id", "method", "config": TrainConfig overrides, "seed"}`` -> a checked payload;
        ``InputError`` naming the field otherwise (``method``, ``seed``, ``config.learning_rate``, ...)."""
        unknown = set(payload) - {"dataset_id", "method", "config", "seed"}
        if unknown:
            raise InputError("unknown payload key", field=sorted(unknown)[0])
        dataset_id = payload.get("dataset_id")
        if isinstance(dataset_id, bool) or not isinstance(dataset_id, int):
            raise InputError(f"expected a dataset id, got {dataset_id!r}", field="dataset_id")
        method = payload.get("method", "fractal")
        if not isinstance(method, str) or method not in registry.METHOD_NAMES:
            raise InputError(
                f"unknown method {method!r}; choose one of {', '.join(registry.METHOD_NAMES)}", field="method"
            )
        seed = payload.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"expected a whole number >= 0, got {seed!r}", field="seed")
        overrides = payload.get("config") or {}
        if not isinstance(overrides, dict):
            raise InputError(f"expected a mapping of training settings, got {overrides!r}", field="config")
        return cls(dataset_id, method, dict(overrides), seed, train_config(overrides))

    def to_dict(self) -> dict[str, Any]:
        """The payload as stored with the job."""
        return {
            "dataset_id": self.dataset_id,
            "method": self.method,
            "config": self.overrides,
            "seed": self.seed,
        }


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN: keep the key (the chart shows a gap) with a null value.
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}


GOLD_QUEUE_SIZE = 200
"""Responses proposed per selection strategy and stored with each model version (the Gold queue page)."""


def _publish(
    engine: Engine,
    settings: AppSettings,
    ctx: JobContext,
    *,
    dataset_id: int,
    model: FractalModel,
    scored: ScoredResponses,
    method: str,
    config: dict[str, Any],
    parent: repo.ModelVersionRow | None,
    metrics: dict[str, Any],
    lo: float,
    same_model: bool = False,
) -> dict[str, Any]:
    """Store what the library computed as a new model version and activate it when the evidence allows.

    The version is created in status ``training``; sentence scores and response figures are written in
    chunks; the version is marked ``ready`` and considered for activation only after everything is stored. A new
    model becomes active only when it is not worse than the active one on the current gold set beyond noise
    (``db.repository.model_versions.activate_if_not_worse``), else it waits for a person; ``same_model`` (the
    active model re-scoring new responses) is activated directly. Any failure marks it ``failed`` and leaves
    the previously active version in place.
    """
    mv = repo.create_model_version(
        engine, dataset_id, method=method, config=config, parent_id=parent.id if parent else None
    )
    queue = {name: [int(i) for i in ids] for name, ids in scored.gold_proposals.items()}
    if queue:
        metrics = {**metrics, "gold_queue": queue, "gold_queue_reasons": scored.gold_reasons}
    try:
        ctx.set(lo, f"storing {len(scored.scores)} sentence scores", force=True)
        repo.store_scores(engine, mv.id, scored.sentence_ids, scored.scores, scored.uncertainty)
        repo.store_response_summaries(engine, mv.id, scored.response_ids, scored.summaries)
        # The model's files go into the store (keyed by store id and version id), not a local directory.
        with tempfile.TemporaryDirectory(prefix="fractal-model-") as tmp:
            model.save(tmp)
            artifact = artifacts.save_model_files(engine, mv.id, Path(tmp))
        ctx.set(lo + (1 - lo) * 0.8, "publishing the new version", force=True)
        row = repo.finish_model_version(
            engine, mv.id, status="ready", metrics=metrics, artifact_path=artifact
        )
        if same_model:
            repo.activate_model_version(engine, mv.id)
            activated, why = True, f"the model of version {parent.version if parent else '?'}, re-scored"
        else:  # a new model replaces the active one only on evidence from the gold labels
            decision = model_versions.activate_if_not_worse(engine, mv.id)
            activated, why = decision.activated, decision.reason
    except BaseException as exc:
        reason = "cancelled" if isinstance(exc, JobCancelled) else f"{type(exc).__name__}: {exc}"
        # The version may already be closed; the job's own error still says what happened.
        with contextlib.suppress(Exception):
            repo.finish_model_version(engine, mv.id, status="failed", error=reason)
        raise
    ctx.log(
        f"model version {row.version} is {'active' if activated else 'waiting'} ({len(scored.scores)} sentence "
        f"scores): {why}"
    )
    return {
        "model_version_id": mv.id,
        "version": row.version,
        "activated": activated,
        "activation_reason": why,
        "n_scores": len(scored.scores),
        "metrics": metrics,
    }


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


def _encoder_config(settings: AppSettings) -> EncoderConfig | None:
    """The encoder of new embed and train jobs (``FRACTAL_ENCODER``, ``FRACTAL_ENCODER_PRECISION``); ``None``:
    the bundled one at its default precision."""
    from fractal_core.embedding.encoder import EncoderConfig

    if settings.encoder is None and settings.precision == "auto":
        return None
    return EncoderConfig(model_path=settings.encoder, precision=settings.precision)  # type: ignore[arg-type]


def run_train(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel
    from fractal_core.fitting.pipeline import train_and_score
    from fractal_core.fitting.train import TrainingCancelled

    parsed = TrainPayload.parse(payload)
    dataset_id, method, config, seed = parsed.dataset_id, parsed.method, parsed.config, parsed.seed
    ctx.set(0.0, "loading responses and gold labels", force=True)
    data = repo.load_training_set(engine, dataset_id)
    if not data.records:
        raise ValueError("the dataset has no responses to train on")
    has_gold = any(r.sentence_labels is not None for r in data.records)
    stages = registry.training_stages(
        method, has_gold=has_gold, aggregation=data.records[0].aggregation, config=config
    )
    ctx.log(f"training {method!r} on {len(data.records)} responses: stages {', '.join(stages) or 'none'}")
    parent = repo.active_model_version(engine, dataset_id)
    previous = None
    if parent is not None and parent.artifact_path:
        with contextlib.suppress(FileNotFoundError):  # a pre-store local model that is gone: no comparison
            previous = FractalModel.load(artifacts.model_dir(engine, parent, settings.models_dir))
    try:
        result = train_and_score(
            data.records,
            sentence_ids=data.sentence_ids,
            response_ids=data.response_ids,
            method=method,
            config=config,
            seed=seed,
            previous=previous,
            file_labels=data.file_labels,
            queue_size=GOLD_QUEUE_SIZE,
            progress=ctx.training_callback(stages, 0.02, 0.8),
            encoder=_encoder_config(settings),
            scratch=scratch_dir(settings),
        )
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    ctx.log(f"{result.n_gold_responses} responses with gold labels ({result.n_gold_sentences} sentences)")
    metrics: dict[str, Any] = {
        "gold_before": _finite(result.previous_gold_metrics),
        "gold_after": _finite(result.gold_metrics),
        # Labels that came with the file (source "imported") are not gold, but they are the best check a user
        # has before correcting anything: reported separately.
        "file_labels_after": _finite(result.file_label_metrics),
        "gold_responses": result.n_gold_responses,
        "gold_sentences": result.n_gold_sentences,
        "responses": len(data.records),
        "resolved_method": result.model.resolved_method_,
        # auto / fractal: the candidate chosen, the criterion and every candidate's figures (Models page).
        **({"method_choice": result.model.selection_} if getattr(result.model, "selection_", None) else {}),
        "compared_with_version": parent.version if parent is not None else None,
        # The F key's rule and what it was chosen by (fractal_core.fitting.first_error), read by Review.
        "first_error_rule": result.model.first_error_rule_.rule,
        "first_error_rule_figures": result.model.first_error_rule_.figures(),
        **_finite(dict(result.model.metrics_ or {})),
    }
    return _publish(
        engine, settings, ctx, dataset_id=dataset_id, model=result.model, scored=result.scored, method=method,
        config={"train": config.to_dict(), "seed": seed}, parent=parent, metrics=metrics, lo=0.8,
    )  # fmt: skip


def run_score(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core import FractalModel
    from fractal_core.fitting.pipeline import score_records

    dataset_id = int(payload["dataset_id"])
    parent = repo.active_model_version(engine, dataset_id)
    if parent is None or not parent.artifact_path:
        raise ValueError("the dataset has no active model to score with; start a training job instead")
    data = repo.load_training_set(engine, dataset_id)
    model = FractalModel.load(artifacts.model_dir(engine, parent, settings.models_dir))
    if settings.ray_address:
        from fractal_core.embedding.encoder import EncoderConfig

        _embed_on_ray(data.records, model.encoder or EncoderConfig(), settings.ray_address, ctx, hi=0.05)
    ctx.set(0.05, f"scoring {len(data.sentence_ids)} sentences", force=True)
    scored = score_records(
        model,
        data.records,
        sentence_ids=data.sentence_ids,
        response_ids=data.response_ids,
        queue_size=GOLD_QUEUE_SIZE,
        progress=ctx.training_callback((), 0.05, 0.6),
        scratch=scratch_dir(settings),
    )
    metrics = {**parent.metrics, "rescored_from_version": parent.version}
    return _publish(
        engine, settings, ctx, dataset_id=dataset_id, model=model, scored=scored, method=parent.method,
        config={**parent.config, "rescored_from_version": parent.version}, parent=parent, metrics=metrics,
        lo=0.6, same_model=True,
    )  # fmt: skip


def run_embed(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from fractal_core.embedding.encoder import get_encoder

    records = repo.load_records(engine, int(payload["dataset_id"]), with_gold=False)
    encoder = get_encoder(_encoder_config(settings))
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
        _embed_on_ray(records, encoder.config, settings.ray_address, ctx, hi=1.0)
        return {"sentences": len(sentences), "encoder": encoder.encoder_id, "ray": settings.ray_address}
    ctx.log(f"embedding {len(sentences)} sentences and {len(records)} contexts with {encoder.encoder_id}")

    def progress(done: int, total: int) -> None:
        ctx.set(0.9 * done / max(total, 1), f"sentences: {done}/{total} unique texts embedded")

    encoder.encode(sentences, progress=progress)
    ctx.set(0.9, "context windows", force=True)
    encoder.encode_windows([r.context for r in records])
    ctx.log("embeddings cached")
    return {"sentences": len(sentences), "encoder": encoder.encoder_id}


def _embed_on_ray(records: list[Any], config: Any, address: str, ctx: JobContext, *, hi: float) -> None:
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


FIRST_TRAINING: dict[str, Any] = {"method": "fractal", "config": {}, "seed": 0}
"""The training queued for a dataset that has no model yet: the recommended method with library defaults."""


def queue_after_import(
    engine: Engine, dataset_id: int, *, bundled_embeddings: bool = False
) -> list[repo.JobRow]:
    """Follow-up work for new responses: embed them now, then re-score with the active model if there is one,
    or train (and score) the dataset's first model if there is none, so a first upload ends in a scored Review
    without anyone starting a job. The training job shares the Train page's key (``train:<dataset>``): a click
    there while it waits returns this job instead of starting a second one.

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
    else:
        queued.append(
            repo.create_job(
                engine,
                "train",
                TrainPayload.parse({"dataset_id": dataset_id, **FIRST_TRAINING}).to_dict(),
                idempotency_key=f"train:{dataset_id}",
            )
        )
    return queued


# ----------------------------------------------------------------------------------------- import / export


def run_import(
    engine: Engine, settings: AppSettings, payload: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    from db.ingest import ingest_file

    ctx.set(0.05, f"reading {Path(payload['path']).name}", force=True)
    keys = ("format", "column_map", "label_map", "segment_mode", "labels_as", "label_kind", "imported_by")
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
