"""Models: every trained version with its gold-set metrics, activation and rollback, and diagnostic charts."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import analysis, page, render, state
from app.views.models_choice import show_method_choice
from app.views.models_compare import cached_auc, show_comparison
from app.views.models_versions import metric, show_activate_and_rollback, show_versions, show_waiting
from db import repository as repo
from db.repository import model_versions

METRICS = ("instance_auc_roc", "instance_auprc", "instance_accuracy")

ctx = page.dataset_page("Models", "admin")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset

versions = repo.list_model_versions(engine, dataset.id)
if not versions:
    st.info("No model version yet. Start a training job on the Train page.")
    st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

show_versions(versions)

ready = [mv for mv in versions if mv.status == "ready"]
active = next((mv for mv in versions if mv.is_active), None)

# ------------------------------------------------------------------------------------------- waiting
show_waiting(engine, user, ready)

# Every ready version's scores on today's gold sentences (one read for the comparison and the chart).
gold_now = model_versions.current_gold_scores(engine, dataset.id, [mv.id for mv in ready])

# ------------------------------------------------------------------------------------------- compare
show_comparison(ready, gold_now)

# ------------------------------------------------------------------------------------------- method choice
show_method_choice(versions)
show_activate_and_rollback(engine, user, dataset.id, ready, active)

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
        (mv.metrics.get("gold_responses"), metric(mv, "gold_after", "instance_auc_roc"), mv.version)
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
        est = cached_auc(scores, labels, responses)
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
