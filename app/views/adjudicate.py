"""Adjudicate (reviewers and admins): overlap responses where annotators disagree, their labels side by side,
and the gold label the reviewer sets (recorded as adjudicated, with who and when)."""

from __future__ import annotations

import streamlit as st

from app import actions, page, render, review, state
from db import repository as repo
from db import team
from db.accounts import PermissionDenied
from fractal_core.errors import InputError

ctx = page.dataset_page("Adjudicate", "reviewer")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset

show_done = st.toggle("Include adjudicated responses", key="adj_done")
found = team.disagreements(engine, dataset.id, include_adjudicated=show_done)
if not found:
    st.info("Nothing to adjudicate: no overlap response has labels from two or more annotators yet.")
    st.stop()
choice = st.selectbox(
    "Response",
    [d.response_id for d in found],
    format_func=lambda rid: next(
        f"{d.external_id} · {d.n_disagreeing} disagreeing sentence(s) · {', '.join(d.annotators)}"
        + (" · adjudicated" if d.adjudicated else "")
        for d in found
        if d.response_id == rid
    ),
    key="adj_pick",
)
detail = repo.get_response(engine, choice)
by_annotator = team.annotations_by_annotator(engine, choice)
names = sorted(by_annotator)
st.html(render.render_title("Response", detail.external_id))
st.caption(f"Response label {detail.response_label:g} · aggregation {detail.aggregation}")
levels = review.label_levels(dataset.label_kind, dataset.max_label)
table = []
for s in detail.sentences:
    votes = [by_annotator[n].get(s.id) for n in names]
    row: dict[str, object] = {"#": s.position + 1, "sentence": s.text[:200]}
    row.update({n: v for n, v in zip(names, votes, strict=True)})
    row["gold now"] = s.label if s.label_source in review.GOLD_SOURCES else None
    row["agree"] = len({v for v in votes if v is not None}) <= 1
    table.append(row)
# A dataframe shows sentences and names as text, never markup.
st.dataframe(table, hide_index=True, key="adj_table")

st.subheader("Gold labels", anchor=False)
decided: dict[int, int | None] = {}
for s in detail.sentences:
    votes = [by_annotator[n][s.id] for n in names if s.id in by_annotator[n]]
    majority = max(set(votes), key=votes.count) if votes else None
    options = ["–", *(str(v) for v in levels)]
    default = "–" if majority is None else str(majority)
    col_t, col_c = st.columns([5, 2])
    col_t.text(f"{s.position + 1}. {s.text[:300]}")
    picked = col_c.segmented_control(
        f"Gold label of sentence {s.position + 1}",
        options,
        default=default,
        key=f"adj-{choice}-{s.id}",
        label_visibility="collapsed",
    )
    decided[s.id] = None if picked in (None, "–") else int(picked)
if st.button("Set gold labels", key="adj_save", type="primary"):
    try:
        result = actions.adjudicate(engine, user, choice, decided)
    except (InputError, PermissionDenied) as exc:
        st.error(str(exc))
    else:
        state.flash(f"Adjudicated {detail.external_id}: {len(result.changes)} gold label(s) changed.")
        st.rerun()
