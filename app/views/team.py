"""Team (admins): overlap ("k annotators for a sample of p%"), assigning the dataset's responses to annotators'
queues, and the dataset's guidelines."""

from __future__ import annotations

import streamlit as st

from app import actions, page, safe_markdown, state
from db import team
from db.accounts import PermissionDenied
from fractal_core.errors import InputError

ctx = page.dataset_page("Team", "admin")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset

current = team.team_settings(engine, dataset.id)
st.subheader("Overlap and assignment", anchor=False)
c1, c2 = st.columns(2)
k = c1.number_input("Annotators per overlap response (k)", 1, 10, current.overlap_k, key="team_k")
pct = c2.number_input(
    "Overlap sample (% of responses)", 0, 100, int(round(current.overlap_fraction * 100)), key="team_p"
)
people = [u.name for u in actions.list_users(engine, user) if not u.disabled and u.role == "annotator"]
chosen = st.multiselect("Annotators", people, default=people, key="team_people")
if st.button("Save overlap and assign unassigned responses", key="team_assign", type="primary"):
    try:
        actions.set_overlap(engine, user, dataset.id, int(k), pct / 100)
        summary = actions.assign(engine, user, dataset.id, chosen)
    except (InputError, PermissionDenied) as exc:
        st.error(str(exc))
    else:
        state.flash(
            f"Assigned {summary.n_responses} responses ({summary.n_overlap} to {int(k)} annotators each): "
            + ", ".join(f"{n} {c}" for n, c in summary.per_annotator.items())
        )
        st.rerun()

st.subheader("Guidelines", anchor=False)
text = st.text_area(
    "Markdown shown to annotators on the Review page",
    current.guidelines,
    height=200,
    key="team_guidelines",
    max_chars=team.MAX_GUIDELINES_CHARS,
)
if st.button("Save guidelines", key="team_guidelines_save"):
    try:
        actions.set_guidelines(engine, user, dataset.id, text)
    except (InputError, PermissionDenied) as exc:
        st.error(str(exc))
    else:
        state.flash("Guidelines saved.")
        st.rerun()
if text.strip():
    st.caption("Preview")
    st.html(safe_markdown.render_markdown(text))
