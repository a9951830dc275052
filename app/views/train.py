"""Train: start a FRACTAL training job for the dataset and follow it live (progress, log, cancel)."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from app import actions, page, render, state
from app.job_payloads import ONE_PASS_METHODS, RESPONSE_LABEL_CHOICES, SCORERS
from db import repository as repo
from db.pairs_read import count_pairs
from db.repository import model_versions
from fractal_core.errors import InputError
from fractal_core.fitting import registry

PRESETS = {
    "default": ("Library defaults (best quality)", {}),
    "quick": ("Quick look (few epochs, a few seconds)", {"max_epochs": 5, "patience": 2}),
}
NO_WORKER_AFTER_S = 15
CRITERIA_MODES = {
    "each": "One model per criterion: one training job per criterion's dataset (any method)",
    "joint": "Jointly: one model, shared encoder, one head per criterion (one job)",
}
JOINT_LIMITS = (
    "A joint fit trains one model for every criterion of the group and publishes a model version in each "
    "criterion's dataset, activated on evidence per criterion. It does not offer: methods other than "
    f"{', '.join(registry.CRITERIA_METHODS)} (no fractal/auto choice, no gold-label method: gold labels only "
    "stop training early), the token-level scorer, calibration (no Platt calibration, no step calibration: the "
    "given-label view reads the raw scores), or a first-error (F key) rule chosen on held-out gold (each "
    "method's default rule is used). For any of those, train one model per criterion."
)


@st.cache_data(show_spinner="Counting the dataset's tokens and windows...", max_entries=16)
def one_pass_cost_line(store: str, dataset_id: int, n_responses: int, method: str, train_layers: int) -> str:
    """What a one-pass job on the dataset will cost, said before it starts (cached per store, dataset size and
    newest model version: a finished one-pass job brings its own measured rate)."""
    from app import job_one_pass

    assert engine is not None
    settings = state.settings()
    records = repo.load_training_set(engine, dataset_id).records
    config = job_one_pass.one_pass_config(settings.encoder, method, train_layers)
    cost = job_one_pass.estimate(engine, records, config, [dataset_id])
    runs = f"{cost.candidates} trainings (top 1 and 2 layers) x " if cost.candidates > 1 else ""
    return (
        f"Estimated cost: about {max(cost.seconds / 60, 0.1):.1f} min. {cost.responses} responses make "
        f"{cost.windows} windows ({cost.tokens:,} tokens); {runs}every window once through the frozen layers "
        f"plus up to {cost.epochs} epochs, at {cost.rate.cache_s:.2f} s + {cost.rate.epoch_s:.2f} s per window "
        f"({render.md_escape(cost.rate.source)}). An estimate: the machine's load and early stopping change it."
    )


def _store_key() -> str:
    """The store and its newest model version of the dataset: what the cost line's cache entry depends on."""
    assert engine is not None and dataset is not None
    versions = repo.list_model_versions(engine, dataset.id)
    return f"{engine.url.render_as_string(hide_password=True)}|{versions[0].id if versions else 0}"


ctx = page.dataset_page("Train", "admin", fresh=True)
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset

budget = repo.gold_budget(engine, dataset.id)
st.caption(
    f"Dataset {dataset.name}: {dataset.n_responses} responses, {budget.gold_responses} with gold labels. "
    "With gold labels the recommended method uses them through the hybrid prior."
)
siblings = repo.criteria_siblings(engine, dataset.id) if dataset.criteria_group is not None else []
every = joint = False
if siblings:
    every = st.checkbox(
        f"Every criterion of the group {dataset.criteria_group}",
        key="train_every_criterion",
        help="Train every criterion's dataset of the group, with these settings.",
    )
    if every:
        joint = (
            st.radio(
                "How", list(CRITERIA_MODES), format_func=CRITERIA_MODES.__getitem__, key="train_criteria_mode"
            )
            == "joint"
        )
if joint:
    scorer = "frozen"  # the joint fit trains the frozen scorer only (refused on the server otherwise)
    st.info(JOINT_LIMITS, icon=":material/info:")  # fixed text, no user input
else:
    scorer = st.radio(
        "Scorer", list(SCORERS), format_func=SCORERS.__getitem__, key="train_scorer", horizontal=False
    )  # the frozen scorer first: the default
c1, c2, c3 = st.columns([2, 2, 1])
methods = registry.method_descriptions()  # torch-free: listing methods does not load the library
if scorer == "one_pass":
    methods = {m: methods[m] for m in ONE_PASS_METHODS}
if joint:
    methods = {m: methods[m] for m in registry.CRITERIA_METHODS}
method = c1.selectbox("Method", list(methods), format_func=lambda m: f"{m}: {methods[m]}", key="train_method")
train_layers = 0
if scorer == "one_pass":
    train_layers = c2.selectbox(
        "Top layers trained",
        [0, 1, 2],
        format_func=lambda k: "chosen on held-out responses (1 or 2)" if k == 0 else str(k),
        key="train_layers",
    )
    preset = "default"
else:
    preset = c2.selectbox("Settings", list(PRESETS), format_func=lambda p: PRESETS[p][0], key="train_preset")
seed = c3.number_input("Seed", 0, 10_000, 0, key="train_seed")
response_labels = None
if scorer == "frozen" and count_pairs(engine, dataset.id):  # a dataset of preference pairs
    response_labels = st.radio(
        "Preference pairs and the responses' own labels",
        list(RESPONSE_LABEL_CHOICES),
        format_func=RESPONSE_LABEL_CHOICES.__getitem__,
        key="train_response_labels",
        help="Responses without a label of their own train from their pairs only, whichever is chosen.",
    )
refusal = registry.training_refusal(method, has_gold=budget.gold_responses > 0)
if refusal:
    st.warning(render.md_escape(refusal), icon=":material/block:")
if scorer == "one_pass" and not refusal:
    try:
        st.info(
            one_pass_cost_line(_store_key(), dataset.id, dataset.n_responses, method, int(train_layers)),
            icon=":material/timer:",
        )
    except (OSError, ValueError) as err:  # no encoder files here, or a dataset it cannot read
        st.warning("Cannot estimate the cost of the one-pass scorer: " + render.md_escape(str(err)))
if joint and st.button(
    "Start training", key="train_start_joint", type="primary", icon=":material/play_arrow:"
):
    try:  # the server checks the role, the group and the method again (a crafted request is refused there)
        joint_job = actions.start_joint_training(
            engine, user, dataset.id, method, PRESETS[preset][1], int(seed)
        )
    except InputError as err:
        st.error(render.md_escape(f"Not started: {err.field}: {err.reason}"))
    else:
        st.session_state["train_job_id"] = joint_job.id
        state.flash(
            render.md_escape(
                f"Joint training job {joint_job.id} is {joint_job.state}: one model for {len(siblings)} "
                "criteria."
            ),
            "info",
        )
        st.rerun()
if (
    every
    and not joint
    and st.button("Start training", key="train_start_every", type="primary", icon=":material/play_arrow:")
):
    started = actions.start_training_every_criterion(
        engine, user, dataset.id, method, PRESETS[preset][1], int(seed), scorer=scorer,
        train_layers=int(train_layers),
    )  # fmt: skip
    for criterion, job in started:
        if isinstance(job, str):
            state.flash(render.md_escape(f"Criterion {criterion}: not trained: {job}"), "warning")
        else:
            state.flash(
                render.md_escape(f"Criterion {criterion}: training job {job.id} is {job.state}."), "info"
            )
    st.rerun()
if not every and st.button(
    "Start training", key="train_start", type="primary", icon=":material/play_arrow:", disabled=bool(refusal)
):
    # One live training job per dataset: a second click returns the job already queued or running.
    job = actions.start_training(
        engine, user, dataset.id, method, PRESETS[preset][1], int(seed), scorer=scorer,
        train_layers=int(train_layers), response_labels=response_labels,
    )  # fmt: skip
    st.session_state["train_job_id"] = job.id
    state.flash(f"Training job {job.id} is {job.state}.", "info")
    st.rerun()


def _dataset_jobs(limit: int = 20) -> list[repo.JobRow]:
    """This dataset's jobs, and the joint training jobs of its group started from another criterion's page."""
    assert dataset is not None
    group = {d.id for d in siblings}
    return [
        j
        for j in repo.list_jobs(engine, limit=200)
        if j.payload.get("dataset_id") in (dataset.id, None)
        or (j.payload.get("joint") and j.payload.get("dataset_id") in group)
    ][:limit]


def _status_line(job: repo.JobRow) -> str:
    """The progress bar's text: the worker's last message while the job is live; once it is over, how it
    ended and when (the last progress message, e.g. an epoch count, would be stale)."""
    if job.state in ("queued", "running"):
        return job.message or job.state
    when = job.finished_at.strftime("%H:%M:%S") if job.finished_at is not None else ""
    took = (
        f" after {(job.finished_at - job.started_at).total_seconds():.0f} s"
        if job.finished_at is not None and job.started_at is not None
        else ""
    )
    return f"{job.state} at {when}{took}" if when else job.state


def _finished_version(job: repo.JobRow) -> None:
    """What became of the version a finished job made, read now (it may have been activated, rolled back or
    replaced since the job ended): active, waiting for a person (with the one-click activate), or superseded."""
    assert dataset is not None
    # A joint job made a version in every criterion's dataset: this page shows this dataset's.
    own = next(
        (v for v in (job.result.get("versions") or {}).values() if v.get("dataset_id") == dataset.id),
        job.result,
    )
    mv = repo.get_model_version(engine, int(own.get("model_version_id") or 0))
    if mv is None:
        st.success(f"Done: {job.kind} job finished.")
        return
    if mv.is_active:
        st.success(f"Done: model version {mv.version} is active. Its scores are on the Review page.")
        return
    reason = model_versions.waiting_reason(mv)
    active = repo.active_model_version(engine, dataset.id)
    now = "No version is active." if active is None else f"Version {active.version} is active."
    if reason is None:
        st.info(f"Done: model version {mv.version} was trained. {now}")
        return
    st.warning(
        f"Done: model version {mv.version} is waiting. {now} "
        + render.md_escape(reason[0].upper() + reason[1:])
        + ". Compare the two on the Models page.",
        icon=":material/hourglass_top:",
    )
    # One click; the role is checked again on the server by actions.activate_model.
    if st.button(f"Activate version {mv.version}", key=f"train_activate_{mv.id}"):
        actions.activate_model(engine, user, mv.id)
        state.flash(f"Version {mv.version} is now active.")
        st.rerun()


@st.fragment(run_every=1.0)
def live_jobs() -> None:
    """Polls the job table once a second; the worker does the work in its own process."""
    jobs = _dataset_jobs()
    if not jobs:
        st.caption("No jobs yet.")
        return
    live = [j for j in jobs if j.state in ("queued", "running")]
    now = datetime.now(UTC)
    if (
        live
        and not any(j.state == "running" for j in live)
        and (now - live[-1].created_at).total_seconds() > NO_WORKER_AFTER_S
    ):
        st.warning(
            "Jobs are waiting but no worker is running. Start one with `fractal worker` (`make run` does)."
        )
    # The running job is the interesting one (an embed job may run before the queued training).
    shown = next((j for j in jobs if j.state == "running"), jobs[0])
    st.subheader(f"Job {shown.id}: {shown.kind} · {shown.state}", anchor=False)
    st.progress(shown.progress, text=render.md_escape(_status_line(shown)))
    if shown.state == "running" or shown.state == "queued":
        if st.button("Cancel", key=f"cancel_{shown.id}", icon=":material/stop:"):
            actions.cancel_job(engine, user, shown.id)
            st.rerun(scope="fragment")
    elif shown.state == "succeeded" and shown.kind in ("train", "score"):
        _finished_version(shown)
    elif shown.state == "succeeded":
        st.success(f"Done: {shown.kind} job finished.")
    elif shown.state == "failed":
        st.error("Failed: " + render.md_escape(shown.error or "unknown error"))
    if shown.state in ("failed", "cancelled") and shown.kind in ("train", "score"):
        assert dataset is not None
        active = repo.active_model_version(engine, dataset.id)
        st.info(
            ("Cancelled. " if shown.state == "cancelled" else "")
            + (
                "No model is active for this dataset yet."
                if active is None
                else f"The active model (version {active.version}) is unchanged."
            )
        )
    elif shown.state == "cancelled":
        st.info("Cancelled.")
    if shown.state in ("failed", "cancelled") and st.button(
        "Retry", key=f"retry_{shown.id}", icon=":material/refresh:", help="Queue the same job again"
    ):
        # Same kind, payload and idempotency key: a retry racing a new click still makes one live job.
        again = repo.create_job(engine, shown.kind, shown.payload, idempotency_key=shown.idempotency_key)
        state.flash(f"Job {again.id} queued again ({shown.kind}).", "info")
        st.rerun()
    if shown.log:
        st.code(shown.log[-4000:], language=None)
    others = [j for j in jobs if j.id != shown.id]
    if others:
        st.caption("Other jobs")
        st.dataframe(
            [
                {
                    "job": j.id,
                    "kind": j.kind,
                    "state": j.state,
                    "progress": j.progress,
                    "created": j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    "error": j.error or "",
                }
                for j in others
            ],
            hide_index=True,
            column_config={"progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0)},
        )


live_jobs()
st.page_link("views/review.py", label="Go to Review", icon=":material/rate_review:")
