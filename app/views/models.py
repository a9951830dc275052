"""Models: every trained version with its gold-set metrics, activation and rollback, and diagnostic charts."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import actions, analysis, page, render, state
from db import repository as repo
from db.repository import model_versions
from fractal_core.evaluation import versions as compare
from fractal_core.evaluation.metrics import auc_interval

METRICS = ("instance_auc_roc", "instance_auprc", "instance_accuracy")

ctx = page.dataset_page("Models", "admin")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset

versions = repo.list_model_versions(engine, dataset.id)
if not versions:
    st.info("No model version yet. Start a training job on the Train page.")
    st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()


def _metric(mv: repo.ModelVersionRow, which: str, key: str) -> float | None:
    value = (mv.metrics.get(which) or {}).get(key)
    return None if value is None else float(value)


def _auc_with_interval(mv: repo.ModelVersionRow, which: str) -> str:
    """``0.812 [0.70, 0.92]`` (95% Hanley-McNeil interval) or ``–``; a gold AUC from a handful of sentences
    is noise, and the width of the interval says how much."""
    auc = _metric(mv, which, "instance_auc_roc")
    if auc is None:
        return "–"
    n = _metric(mv, which, "instance_count")
    positives = _metric(mv, which, "instance_positives")
    if n is None or positives is None:
        return f"{auc:.3f} (interval not recorded)"
    lo, hi = auc_interval(auc, int(positives), int(n - positives))
    return f"{auc:.3f} [{lo:.2f}, {hi:.2f}]"


def _sample(mv: repo.ModelVersionRow, which: str) -> str:
    """``n (positives / negatives)`` of the sentences a gold metric was computed on."""
    n = _metric(mv, which, "instance_count")
    positives = _metric(mv, which, "instance_positives")
    if n is None:
        return "–"
    if positives is None:
        return f"{int(n)}"
    return f"{int(n)} ({int(positives)} / {int(n - positives)})"


def _state(mv: repo.ModelVersionRow) -> str:
    """active / waiting / ready / training / failed: a held-back version says it waits."""
    if mv.is_active:
        return "● active"
    if model_versions.waiting_reason(mv) is not None:
        return "waiting"
    return mv.status


st.subheader("Versions", anchor=False)
st.caption(
    "Gold metrics compare the previously active version (before) with this one (after) on the gold sentences "
    "that existed when it was trained. Those gold labels were also used for training (hybrid prior). "
    "AUCs come with their 95% interval (Hanley-McNeil) and the number of sentences they are computed on "
    "(problem / fine): with few gold sentences the interval is wide. "
    "'AUC on file labels' uses the sentence labels that came with the uploaded file (not used for training)."
)
st.dataframe(
    [
        {
            "version": mv.version,
            "state": _state(mv),
            "method": mv.method,
            "gold n (problem / fine)": _sample(mv, "gold_after"),
            "AUC before [95% CI]": _auc_with_interval(mv, "gold_before"),
            "AUC after [95% CI]": _auc_with_interval(mv, "gold_after"),
            "AUPRC after": _metric(mv, "gold_after", "instance_auprc"),
            "accuracy after": _metric(mv, "gold_after", "instance_accuracy"),
            "file labels n": _sample(mv, "file_labels_after"),
            "AUC on file labels [95% CI]": _auc_with_interval(mv, "file_labels_after"),
            "scores": mv.n_scores,
            "created": mv.created_at.strftime("%Y-%m-%d %H:%M"),
            "error": mv.error or "",
        }
        for mv in versions
    ],
    hide_index=True,
    column_config={
        k: st.column_config.NumberColumn(format="%.3f") for k in ("AUPRC after", "accuracy after")
    },
)

ready = [mv for mv in versions if mv.status == "ready"]
active = next((mv for mv in versions if mv.is_active), None)

# ------------------------------------------------------------------------------------------- waiting
for mv in ready:
    reason = model_versions.waiting_reason(mv)
    if reason is None:
        continue
    with st.container(border=True):
        st.markdown(
            f"**Version {mv.version} is waiting.** A new version becomes active only when it is not worse than "
            "the active one on the current gold set beyond noise. "
            + render.md_escape(reason[0].upper() + reason[1:])
            + "."
        )
        # The role is checked again on the server (actions.activate_model), whatever this button shows.
        if st.button(
            f"Activate version {mv.version}", key=f"models_activate_waiting_{mv.id}", type="primary"
        ):
            row = actions.activate_model(engine, user, mv.id)
            state.flash(f"Version {row.version} is now active.")
            st.rerun()


# The bootstraps are cached on their inputs: a rerun of the page (any widget) with the same gold labels and
# scores does not draw them again; a new gold label changes the inputs and so the figures.
@st.cache_data(show_spinner=False, max_entries=64)
def _compare(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, responses: np.ndarray
) -> compare.VersionComparison:
    return compare.compare_versions(a, b, labels, responses, seed=0)


@st.cache_data(show_spinner=False, max_entries=256)
def _auc(scores: np.ndarray, labels: np.ndarray, responses: np.ndarray) -> compare.Estimate:
    return compare.auc_estimate(scores, labels, responses, seed=0)


# Every ready version's scores on today's gold sentences (one read for the comparison and the chart).
gold_now = model_versions.current_gold_scores(engine, dataset.id, [mv.id for mv in ready])


def _fmt(e: compare.Estimate, signed: bool = False) -> str:
    if not np.isfinite(e.value):
        return "–"
    value = f"{e.value:+.3f}" if signed else f"{e.value:.3f}"
    if not np.isfinite(e.low):
        return value
    return f"{value} [{e.low:+.3f}, {e.high:+.3f}]" if signed else f"{value} [{e.low:.2f}, {e.high:.2f}]"


# ------------------------------------------------------------------------------------------- compare
if len(ready) >= 2:
    st.subheader("Compare two versions on the current gold set", anchor=False)
    ids = [mv.id for mv in ready]
    label_of = {mv.id: f"v{mv.version}" + (" (active)" if mv.is_active else "") for mv in ready}
    ca, cb = st.columns(2)
    a_id = ca.selectbox(
        "Version A",
        ids,
        index=next((i for i, mv in enumerate(ready) if mv.is_active), 1),
        format_func=lambda i: label_of[i],
        key="models_cmp_a",
    )
    b_id = cb.selectbox(
        "Version B",
        ids,
        index=next(i for i, v in enumerate(ids) if v != a_id),
        format_func=lambda i: label_of[i],
        key="models_cmp_b",
    )
    if a_id == b_id:
        st.caption("Pick two different versions.")
    else:
        result = _compare(*gold_now.scored_by(a_id, b_id))
        name_a, name_b = label_of[a_id], label_of[b_id]
        st.dataframe(
            [
                {
                    "on the gold set": what,
                    name_a: _fmt(t[0]),
                    name_b: _fmt(t[1]),
                    "difference B - A [95% CI]": _fmt(t[2], signed=True),
                }
                for what, t in (
                    ("AUC-ROC (higher is better)", result.auc),
                    ("Brier score (lower is better)", result.brier),
                    ("accuracy at 0.5 (higher is better)", result.accuracy),
                )
            ],
            hide_index=True,
            key="models_cmp_table",
        )
        verdict = (
            f"{name_b} is not worse than {name_a} beyond noise"
            if result.not_worse
            else f"{name_b} is not shown to be as good as {name_a}"
        )
        st.caption(
            render.md_escape(
                f"{verdict}: {result.reason}. Both versions on the same {result.n_sentences} gold sentences "
                f"({result.n_positives} problem) of {result.n_responses} responses, labelled now (including "
                f"labels added after either was trained). Intervals: {result.resamples} bootstrap draws of whole "
                f"responses, the same draws for both versions (paired). Gold labels also train the hybrid prior, "
                "so a version trained on more of them is measured partly on what it saw."
            )
        )

# ------------------------------------------------------------------------------------------- method choice
chosen_by = [mv for mv in versions if mv.metrics.get("method_choice")]
if chosen_by:
    st.subheader("Method choice", anchor=False)
    choice_id = st.selectbox(
        "Version",
        [mv.id for mv in chosen_by],
        index=next((i for i, mv in enumerate(chosen_by) if mv.is_active), 0),
        format_func=lambda i: f"v{next(m.version for m in chosen_by if m.id == i)}",
        key="models_choice_version",
    )
    picked = next(mv for mv in chosen_by if mv.id == choice_id)
    choice = picked.metrics["method_choice"]
    by_gold = str(choice.get("criterion", "")).startswith("gold")
    st.caption(
        f"`{picked.method}` fitted every candidate below on the same embeddings and kept "
        f"**{choice.get('chosen')}**, judged by "
        + (
            "the AUC given the response label of gold sentences in held-out gold responses (hybrid was "
            "trained on one half of the gold responses and scored on the other)."
            if by_gold
            else "the exact likelihood of the held-out responses' labels under each candidate's calibrated scores "
            "(higher is better; no gold labels needed). Candidates whose gap to the best is within the band "
            "(a multiple of the paired standard error of that gap) are tied within noise; the simplest of them "
            "is kept."
        )
        + f" Criterion: {choice.get('criterion')}; "
        + (f"rule: {choice['rule']}; " if choice.get("rule") else "")
        + f"{choice.get('seconds', 0):.0f} s in all."
    )
    st.dataframe(
        [
            {
                "candidate": c.get("name"),
                "chosen": "●" if c.get("chosen") else "",
                "score": c.get("score"),
                "held-out bag log-likelihood": c.get("bag_log_likelihood"),
                "gap to best": c.get("gap_to_best"),
                "paired SE": c.get("paired_se"),
                "within band": {True: "yes", False: "no"}.get(c.get("within_band"), ""),
                "gold AUC given label": c.get("gold_auc_given_y"),
                "gold AUC": c.get("gold_auc"),
                "fit seconds": c.get("seconds"),
            }
            for c in choice.get("candidates", [])
        ],
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.4f")
            for k in (
                "score",
                "held-out bag log-likelihood",
                "gap to best",
                "paired SE",
                "gold AUC given label",
                "gold AUC",
            )
        },
    )
c1, c2 = st.columns(2)
with c1:
    if ready:
        pick = st.selectbox(
            "Version",
            [mv.id for mv in ready],
            format_func=lambda i: f"v{next(m.version for m in ready if m.id == i)}",
            key="models_pick",
        )
        if st.button("Activate", key="models_activate", disabled=active is not None and pick == active.id):
            row = actions.activate_model(engine, user, pick)
            state.flash(f"Version {row.version} is now active.")
            st.rerun()
with c2:
    if (
        active is not None
        and active.replaced_id is not None
        and st.button("Roll back", key="models_rollback")
    ):
        back = actions.rollback_model(engine, user, dataset.id)
        state.flash(f"Rolled back to version {back.version if back else '?'}.")
        st.rerun()

# ------------------------------------------------------------------------------------------- charts
st.subheader("Charts", anchor=False)
chart_version = st.selectbox(
    "Version for the score charts",
    [mv.id for mv in ready] or [versions[0].id],
    index=next((i for i, mv in enumerate(ready) if mv.is_active), 0),
    format_func=lambda i: f"v{next(m.version for m in versions if m.id == i)}",
    key="models_chart_version",
)
use = st.radio("Labels", ["gold and imported", "gold only"], horizontal=True, key="models_labels")
data = repo.labelled_scores(engine, dataset.id, chart_version)
keep = data.gold if use == "gold only" else np.ones_like(data.gold, dtype=bool)
scores, positive = data.scores[keep], data.labels[keep] >= 1
left, right = st.columns(2)
with left:
    if len(scores) == 0:
        st.info("No labelled sentence has a score from this version yet.")
    else:
        fig = go.Figure()
        for flag, name in ((False, "label 0 (fine)"), (True, "label 1 (problem)")):
            fig.add_histogram(
                x=scores[positive == flag], name=name, xbins={"start": 0, "end": 1, "size": 0.05}, opacity=0.7
            )
        fig.update_layout(
            barmode="overlay",
            title="Sentence scores by label",
            xaxis_title="score",
            yaxis_title="sentences",
            height=340,
        )
        st.plotly_chart(fig, width="stretch")
with right:
    if len(scores):
        table = analysis.reliability(scores, positive)
        ece = analysis.expected_calibration_error(table)
        fig = go.Figure()
        fig.add_scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dash", "color": "grey"}
        )
        fig.add_scatter(
            x=table["mean_score"],
            y=table["positive_rate"],
            mode="lines+markers",
            name="model",
            text=[f"{int(c)} sentences" for c in table["count"]],
        )
        fig.update_layout(
            title=f"Reliability (ECE {ece:.3f})",
            xaxis_title="mean score in bin",
            yaxis_title="share labelled 1",
            height=340,
        )
        st.plotly_chart(fig, width="stretch")

curve = sorted(
    (
        (mv.metrics.get("gold_responses"), _metric(mv, "gold_after", "instance_auc_roc"), mv.version)
        for mv in ready
    ),
    key=lambda t: (t[0] or 0, t[2]),
)
curve = [c for c in curve if c[0] is not None and c[1] is not None]
left, right = st.columns(2)
with left:
    if len(curve) >= 2:
        fig = go.Figure()
        fig.add_scatter(
            x=[c[0] for c in curve],
            y=[c[1] for c in curve],
            mode="lines+markers",
            text=[f"v{c[2]}" for c in curve],
        )
        fig.update_layout(
            title="Gold budget curve",
            xaxis_title="gold responses at training time",
            yaxis_title="gold AUC-ROC",
            height=340,
        )
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption("The gold-budget curve appears once two versions were trained with gold labels.")
with right:
    # Every ready version measured now, on today's gold sentences: numbers recorded at training time used
    # different gold sets and cannot be compared across versions.
    points = []
    for mv in ready:  # one bootstrap per version (a handful of versions)
        scores, labels, responses = gold_now.scored_by(mv.id)
        est = _auc(scores, labels, responses)
        if np.isfinite(est.value):
            points.append((mv, est, len(scores)))
    if points:
        points.sort(key=lambda p: p[0].version)
        fig = go.Figure()
        fig.add_scatter(
            x=[f"v{p[0].version}" for p in points],
            y=[p[1].value for p in points],
            mode="markers",
            marker={
                "size": [14 if p[0].is_active else 9 for p in points],
                "symbol": ["star" if p[0].is_active else "circle" for p in points],
            },
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [(p[1].high - p[1].value) if np.isfinite(p[1].high) else 0 for p in points],
                "arrayminus": [(p[1].value - p[1].low) if np.isfinite(p[1].low) else 0 for p in points],
            },
            text=[f"{p[2]} gold sentences" + (" · active" if p[0].is_active else "") for p in points],
            name="AUC-ROC",
        )
        fig.update_layout(
            title="Every version on the current gold set (AUC-ROC, 95% interval)",
            yaxis_range=[0, 1.02],
            yaxis_title="AUC-ROC",
            height=340,
        )
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption(
            "The versions chart appears once the gold set has problem and fine sentences scored by a version."
        )

if active is not None:
    with st.expander(f"Active version v{active.version}: all recorded metrics"):
        st.json(active.metrics)
st.caption(
    render.md_escape(
        f"Models are kept in the store; this machine caches copies under {state.settings().models_dir}"
    )
)
