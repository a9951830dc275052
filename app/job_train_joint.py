"""The joint ``train`` job (payload ``"joint": true``): every criterion of a dataset's group in one model.

The library fits one :class:`~fractal_core.fitting.criteria_model.CriteriaModel` (shared trunk, one head per
criterion) on every criterion's dataset (``fractal_core.fitting.criteria_pipeline``), then each criterion's part
of it (the trunk and its own head) is published as an ordinary model version of that criterion's dataset. Why
one stored model per criterion rather than one shared file: a version's files are keyed by its own id
(``db.artifacts``), so every reader of a version (re-scoring after an upload, exports, Review, ``fractal
serve-scores``, the start-up purge of failed versions) works on it unchanged; the trunk is a small MLP, so the
copies cost little. Each version records the joint fit it came from (job id, criteria, every criterion's
held-out figures) in ``config["joint"]`` and ``metrics["joint_fit"]``.

All or nothing: every version is first staged (status ``training``, unseen by readers); only when all are stored
are they marked ready and activated on evidence, each against its own dataset's active version. A cancel, taken
until the last version is stored, fails every staged version, so a cancelled job leaves no version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from app.job_context import JobCancelled, JobContext
from app.job_embed import encoder_config, scratch_dir
from app.job_one_pass import previous_frozen_model
from app.job_payloads import TrainPayload
from app.job_publish import (
    GOLD_QUEUE_SIZE,
    evidence_metrics,
    fail_version,
    finite,
    open_version,
    stage_version,
)
from app.settings import AppSettings
from db import repository as repo

STAGE_SHARE = (0.02, 0.8)
"""The share of the job's progress bar the embedding and the fit take; storing the versions takes the rest."""


def run_train_joint(
    engine: Engine, settings: AppSettings, parsed: TrainPayload, ctx: JobContext
) -> dict[str, Any]:
    """Fit every criterion of ``parsed.dataset_id``'s group jointly, publish one version per criterion's dataset
    and activate each on evidence. Returns the versions by criterion (and, at the top level, the version of the
    dataset the job was started from, as every train job does)."""
    from fractal_core.fitting.criteria_pipeline import CriterionData, joint_stages, train_and_score_criteria
    from fractal_core.fitting.train import TrainingCancelled

    siblings = repo.criteria_siblings(engine, parsed.dataset_id)
    if not siblings:
        raise ValueError("this dataset does not belong to a group of criteria; train it on its own")
    ctx.set(0.0, "loading every criterion's responses and gold labels", force=True)
    datasets = {str(d.criterion): d for d in siblings}
    sets = {name: repo.load_training_set(engine, d.id) for name, d in datasets.items()}
    empty = [name for name, data in sets.items() if not data.records]
    if empty:
        raise ValueError(f"criterion {empty[0]!r} has no responses to train on")
    parents = {name: repo.active_model_version(engine, d.id) for name, d in datasets.items()}
    data = {
        name: CriterionData(
            s.records,
            s.sentence_ids,
            s.response_ids,
            previous=previous_frozen_model(engine, settings, parents[name]),
            file_labels=s.file_labels,
        )  # fmt: skip
        for name, s in sets.items()
    }
    aggregations = [s.records[0].aggregation for s in sets.values()]
    stages = joint_stages(parsed.method, aggregations, parsed.config)
    names = list(datasets)
    ctx.log(
        f"training {parsed.method!r} jointly on {len(names)} criteria ({', '.join(names)}) of "
        f"{len(sets[names[0]].records)} responses: one model, stages {', '.join(stages)}"
    )
    try:
        joint = train_and_score_criteria(
            data, method=parsed.method, config=parsed.config, seed=parsed.seed, queue_size=GOLD_QUEUE_SIZE,
            progress=ctx.training_callback(stages, *STAGE_SHARE), encoder=encoder_config(settings),
            scratch=scratch_dir(settings),
        )  # fmt: skip
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    provenance = {"job_id": ctx.job_id, "criteria": names, "datasets": {n: d.id for n, d in datasets.items()}}
    fit_record = {
        **provenance,
        "method": parsed.method,
        "valid_metrics": {n: finite(dict(joint.model.metrics_.get(n, {}))) for n in names},
    }
    staged = []
    lo, hi = STAGE_SHARE[1], 0.97
    try:
        for i, name in enumerate(names):
            result = joint.results[name]
            model = result.model
            ctx.log(f"criterion {name}: {result.n_gold_responses} responses with gold labels")
            metrics: dict[str, Any] = {
                **evidence_metrics(result, len(sets[name].records), parents[name]),
                "resolved_method": model.resolved_method_,
                "first_error_rule": model.first_error_rule_.rule,
                "first_error_rule_figures": model.first_error_rule_.figures(),
                "step_calibration": model.step_calibration_.to_dict(),
                "joint_fit": fit_record,
                **finite(dict(model.metrics_ or {})),
            }
            staged.append(
                stage_version(
                    engine,
                    ctx,
                    dataset_id=datasets[name].id,
                    save=model.save,
                    scored=result.scored,
                    method=f"joint:{parsed.method}",
                    config={"train": parsed.config.to_dict(), "seed": parsed.seed, "joint": provenance},
                    parent=parents[name],
                    metrics=metrics,
                    lo=lo + (hi - lo) * i / len(names),
                )  # fmt: skip
            )
        ctx.set(hi, f"publishing {len(names)} new versions", force=True)  # the last point a cancel is taken
    except BaseException as exc:
        for mv, _, _ in staged:
            fail_version(engine, mv.id, exc)
        raise
    opened: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        try:
            done = open_version(
                engine, ctx, staged[i], parent=parents[name], n_scores=len(joint.results[name].scored.scores)
            )
        except BaseException as exc:
            for mv, _, _ in staged[i + 1 :]:
                fail_version(engine, mv.id, exc)
            raise
        opened[name] = {"dataset_id": datasets[name].id, **{k: v for k, v in done.items() if k != "metrics"}}
    own = next(v for v in opened.values() if v["dataset_id"] == parsed.dataset_id)
    return {**own, "joint": True, "versions": opened}


__all__ = ["run_train_joint"]
