"""Agreement (reviewers and admins): how well annotators agree on the overlap responses, per dataset, per
annotator pair and per label, and each annotator's progress and throughput."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from app import actions, page
from db import team
from db.rows import ProgressRow

ctx = page.dataset_page("Agreement", "reviewer")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset


def fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


report = actions.agreement(engine, user, dataset.id)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Krippendorff's α", fmt(report.alpha), help="1 = perfect agreement, 0 = chance level")
c2.metric("Sentences labelled by 2+", report.n_sentences)
c3.metric("Overlap responses", report.n_responses)
c4.metric("Annotator labels", report.n_labels)
if not report.pairs:
    st.info(
        "No overlap labels yet. An admin sets 'k annotators for a sample of p%' and assigns work on the Team "
        "page; agreement appears once two people have labelled the same sentences."
    )
else:
    names = sorted({p.annotator_a for p in report.pairs} | {p.annotator_b for p in report.pairs})
    index = {n: i for i, n in enumerate(names)}
    kappa = [[float("nan")] * len(names) for _ in names]
    for p in report.pairs:
        kappa[index[p.annotator_a]][index[p.annotator_b]] = p.kappa
        kappa[index[p.annotator_b]][index[p.annotator_a]] = p.kappa
    left, right = st.columns(2)
    heat = go.Figure(
        go.Heatmap(z=kappa, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu", colorbar={"title": "κ"})
    )
    heat.update_layout(title="Cohen's κ per annotator pair", height=360)
    left.plotly_chart(heat, width="stretch")
    labels = [str(k) for k in report.per_label]
    bars = go.Figure(go.Bar(x=labels, y=[0 if math.isnan(v) else v for v in report.per_label.values()]))
    bars.update_layout(
        title="Agreement per label",
        xaxis_title="label",
        yaxis_title="matched share",
        yaxis_range=[0, 1],
        height=360,
    )
    right.plotly_chart(bars, width="stretch")
    st.dataframe(
        [
            {
                "annotator A": p.annotator_a,
                "annotator B": p.annotator_b,
                "sentences": p.n_sentences,
                "Cohen's κ": fmt(p.kappa),
                "same label": f"{p.percent:.0%}",
            }
            for p in report.pairs
        ],
        hide_index=True,
        key="agreement_pairs",
    )

# A per-hour rate needs this many label changes (a rate from three labels is noise) over at least this many
# minutes between an annotator's first and last change (three labels in a minute are not 180 an hour).
MIN_LABELS_FOR_RATE = 20
MIN_MINUTES_FOR_RATE = 15.0


def per_hour(row: ProgressRow) -> str:
    """The annotator's rate over their active span, or ``too few`` below the minimum sample and time (the
    span is what the store's rate was computed over: changes / rate)."""
    if row.labels_total < MIN_LABELS_FOR_RATE or row.labels_per_hour <= 0:
        return "too few"
    minutes = 60.0 * row.labels_total / row.labels_per_hour
    return f"{row.labels_per_hour:.0f}" if minutes >= MIN_MINUTES_FOR_RATE else "too few"


st.subheader("Progress and throughput", anchor=False)
st.caption(
    f"Label changes people made in the tool (not labels imported with a file, not the model's labels someone "
    f"accepted). The rate per hour shows once an annotator has made {MIN_LABELS_FOR_RATE} changes over at least "
    f"{MIN_MINUTES_FOR_RATE:g} minutes."
)
rows = team.progress(engine, dataset.id)
if rows:
    st.dataframe(
        [
            {
                "annotator": r.annotator,
                "assigned": r.assigned,
                "done": r.done,
                "label changes": r.labels_total,
                "last hour": r.labels_last_hour,
                "per hour": per_hour(r),
            }
            for r in rows
        ],
        hide_index=True,
        key="agreement_progress",
    )
else:
    st.caption("Nobody has been assigned work or labelled in this dataset yet.")
