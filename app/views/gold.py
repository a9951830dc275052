"""Gold queue: which responses to correct next, and how much of the gold budget is spent."""

from __future__ import annotations

import streamlit as st

from app import state
from db import repository as repo

STRATEGIES = {
    "uncertainty": "Most uncertain sentences (the model is least sure)",
    "disagreement": "Inconsistent: sentence scores contradict the response label",
}

ss = st.session_state
engine = state.engine()
dataset = state.current_dataset()
st.header("Gold queue")
state.show_flashes()
if dataset is None:
    st.info("No data yet. Upload responses on the Data page.")
    st.stop()

budget = repo.gold_budget(engine, dataset.id)
target_n = int(round(budget.target_fraction * budget.total_responses))
st.subheader("Budget", anchor=False)
c1, c2, c3 = st.columns(3)
c1.metric("Gold responses", f"{budget.gold_responses} / {budget.total_responses}")
c2.metric(
    "Spent", f"{budget.fraction:.1%}", help="responses with at least one gold or reviewed sentence label"
)
c3.metric("Target", f"{budget.target_fraction:.0%} = {target_n} responses")
st.progress(
    min(budget.fraction / budget.target_fraction, 1.0) if budget.target_fraction else 0.0,
    text=f"{budget.gold_responses} of the {target_n} gold responses the target asks for",
)
with st.expander("Change the target"):
    new_target = st.number_input(
        "Target share of responses with gold labels (%)",
        1,
        100,
        int(round(budget.target_fraction * 100)),
        key="gold_t",
    )
    if st.button("Save target", key="gold_target_save"):
        repo.set_gold_target(engine, dataset.id, new_target / 100)
        state.flash(f"Gold target set to {new_target}%.")
        st.rerun()

st.subheader("Proposed next", anchor=False)
strategy = st.radio("Strategy", list(STRATEGIES), format_func=STRATEGIES.__getitem__, key="gold_strategy")
remaining = max(target_n - budget.gold_responses, 0)
k = st.slider("How many", 5, 100, min(max(remaining, 10), 100), key="gold_k")
proposals = repo.list_responses(
    engine, dataset.id, sort=strategy, descending=True, label_status="unlabelled", page=0, page_size=k
)
if proposals.model_version_id is None:
    st.info(
        "No model has scored this dataset yet: proposals follow upload order until a training job finishes."
    )
if not proposals.rows:
    st.success("Every response already has gold labels.")
    st.stop()
st.caption(f"{proposals.total} responses have no gold label yet; showing the top {len(proposals.rows)}.")
for r in proposals.rows:
    with st.container(border=True):
        a, b = st.columns([6, 1])
        a.text(
            f"{r.external_id} · label {r.response_label:g} · score {state.fmt_score(r.score)} · "
            f"uncertainty {state.fmt_score(r.uncertainty)} · disagreement {state.fmt_score(r.disagreement)}"
        )
        a.text(r.preview[:160] + ("…" if len(r.preview) > 160 else ""))
        if b.button("Review", key=f"gold_open_{r.id}"):
            ss["review_response_id"] = r.id
            ss["review_focus"] = 0
            st.switch_page("views/review.py")
