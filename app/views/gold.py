"""Gold queue: which responses to correct next, and how much of the gold budget is spent."""

from __future__ import annotations

from typing import cast

import streamlit as st

from app import actions, page, render, review, scores_view, state
from db import repository as repo
from db.accounts import has_role
from db.repository import SortKey
from fractal_core.fitting import registry

# Comments, not docstrings: Streamlit's magic writes a bare string in a page script onto the page.
# The library's strategies that the worker ranks for each model version (``fractal_core.fitting.registry``).
STRATEGIES = {s: registry.strategy(s).label for s in registry.QUEUE_STRATEGIES}
# Store orderings used before a model version with a ranking exists.
FALLBACK = {
    "uncertainty": "Most uncertain responses (store order)",
    "disagreement": "Model disagrees with the response label (store order)",
}

ctx = page.dataset_page("Gold queue", "annotator")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset
ss = st.session_state

budget = repo.gold_budget(engine, dataset.id)
# At least one response once there is a target and data: "10% = 0 responses" would read as "done".
target_n = max(int(round(budget.target_fraction * budget.total_responses)), int(budget.total_responses > 0))
st.subheader("Budget", anchor=False)
c1, c2, c3 = st.columns(3)
c1.metric("Gold responses", f"{budget.gold_responses} / {budget.total_responses}")
c2.metric(
    "Spent",
    f"{budget.fraction:.1%}",
    help="responses with at least one gold sentence label (set by a person, adjudicated, or imported as gold)",
)
c3.metric("Target", f"{budget.target_fraction:.0%} = {render.plural(target_n, 'response')}")
if budget.gold_responses >= target_n:
    meter = (
        f"Target reached: {render.plural(budget.gold_responses, 'response')} with gold labels "
        f"(the target asks for {target_n})"
    )
else:
    meter = (
        f"{render.plural(budget.gold_responses, 'response')} with gold labels of the {target_n} the target "
        f"asks for ({target_n - budget.gold_responses} to go)"
    )
st.progress(min(budget.gold_responses / target_n, 1.0) if target_n else 0.0, text=meter)
if has_role(user, "admin"):
    with st.expander("Change the target"):
        new_target = st.number_input(
            "Target share of responses with gold labels (%)",
            1,
            100,
            int(round(budget.target_fraction * 100)),
            key="gold_t",
        )
        if st.button("Save target", key="gold_target_save"):
            actions.set_gold_target(engine, user, dataset.id, new_target / 100)
            state.flash(f"Gold target set to {new_target}%.")
            st.rerun()


max_label = dataset.max_label


def likely_problem_hint(detail) -> str:
    # The preview points at the sentence the reviewer view (scores given the response label) ranks first.
    found = scores_view.likely_problem(detail, max_label)
    if found is None:
        return ""
    i, p = found
    if p == 0.0:
        return "No sentence can be a problem given the response label"
    text = detail.sentences[i].text
    return f"Most likely problem given the label: sentence {i + 1} ({p:.2f}): " + (
        text[:120] + ("…" if len(text) > 120 else "")
    )


st.subheader("Proposed next", anchor=False)
active = repo.active_model_version(engine, dataset.id)
ranked: dict[str, list[int]] = (active.metrics.get("gold_queue") or {}) if active is not None else {}
options = [k for k in STRATEGIES if k in ranked] or list(FALLBACK)
labels = {**STRATEGIES, **FALLBACK}
strategy = st.radio("Strategy", options, format_func=labels.__getitem__, key="gold_strategy")
remaining = max(target_n - budget.gold_responses, 0)
k = st.slider("How many", 5, 100, min(max(remaining, 10), 100), key="gold_k")

if strategy in ranked and active is not None:
    st.caption(
        f"Ranked by the library's `{strategy}` strategy when model version {active.version} was trained."
    )
    rows = []
    # Versions trained before reasons were stored have none (shorter list): strict=False pads nothing.
    stored_reasons = (active.metrics.get("gold_queue_reasons") or {}).get(strategy, [])
    reasons = dict(zip(ranked[strategy], stored_reasons, strict=False))
    for rid in ranked[strategy]:
        detail = repo.get_response(engine, rid)
        if detail.dataset_id != dataset.id or review.gold_labels(detail) != [None] * len(detail.sentences):
            continue  # labelled since the ranking was made
        rows.append(
            (
                rid,
                detail.external_id,
                detail.response_label,
                detail.score,
                detail.uncertainty,
                detail.disagreement,
                detail.text[:200],
                reasons.get(rid, ""),
                likely_problem_hint(detail),
            )
        )
        if len(rows) == k:
            break
else:
    if active is None:
        st.info(
            "No model has scored this dataset yet: proposals follow upload order until a training job finishes."
        )
    listing = repo.list_responses(
        engine,
        dataset.id,
        sort=cast("SortKey", strategy),
        descending=True,
        label_status="unlabelled",
        page=0,
        page_size=k,
    )
    why = f"store order: {FALLBACK[strategy].split(' (')[0].lower()}" if strategy in FALLBACK else ""
    rows = [
        (
            r.id,
            r.external_id,
            r.response_label,
            r.score,
            r.uncertainty,
            r.disagreement,
            r.preview,
            why,
            likely_problem_hint(repo.get_response(engine, r.id)) if r.score is not None else "",
        )
        for r in listing.rows
    ]
if not rows:
    st.success("No unlabelled response left to propose.")
    st.stop()
for rid, external_id, label, score, uncertainty, disagreement, preview, reason, hint in rows:
    with st.container(border=True):
        a, b = st.columns([6, 1])
        if reason:
            a.text(f"Why: {reason}")
        # st.text: ids and text are user data and must not be read as Markdown.
        a.text(
            f"{external_id} · label {state.fmt_label(label)} · score {state.fmt_score(score)} · "
            f"uncertainty {state.fmt_score(uncertainty)} · disagreement {state.fmt_score(disagreement)}"
        )
        a.text(preview[:160] + ("…" if len(preview) > 160 else ""))
        if hint:
            a.text(hint)
        if b.button("Review", key=f"gold_open_{rid}"):
            # The Review page follows this queue (S / N / P) until the user goes back to its list.
            nav = ss.setdefault(review.NAV_KEY, review.ReviewNav())
            nav.follow_queue("Gold queue", [r[0] for r in rows], rid)
            st.switch_page("views/review.py")
