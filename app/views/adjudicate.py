"""Adjudicate (reviewers and admins): overlap responses where annotators disagree, each annotator's labels and
the model's scores given the response label side by side, and the gold label the reviewer sets (recorded as
adjudicated, with who and when). A tie has no default: the reviewer decides it. Labels that contradict the
response label are stored only after the same question Review asks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import streamlit as st

from app import actions, page, render, review, state
from db import repository as repo
from db import team
from db.accounts import PermissionDenied
from db.rows import ResponseDetail
from fractal_core.errors import InputError
from fractal_core.mil.reviewer import label_conditioned

NO_LABEL = "–"

ctx = page.dataset_page("Adjudicate", "reviewer")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset
ss = st.session_state

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
levels = review.label_levels(dataset.label_kind, dataset.max_label)


def given_label_scores(d: ResponseDetail) -> list[float | None]:
    """The model's P(label >= 1) of each sentence given the response label and nothing else (no annotator's
    labels: they are what is being decided), or all None when the response is not (fully) scored."""
    scores = [s.view_score for s in d.sentences]
    if not scores or any(v is None for v in scores):
        return [None] * len(scores)
    view = label_conditioned(
        np.asarray(scores, dtype=np.float64),
        np.full(len(scores), np.nan),
        d.response_label,
        aggregation=d.aggregation,
        n_levels=len(levels),
    )
    return [float(v) for v in view]


def default_choice(votes: list[int], gold_now: int | None) -> str | None:
    """What the picker starts on: the label most annotators chose when it is a strict majority; nothing on a tie
    (the reviewer must choose); the current gold label (or no label) when nobody voted."""
    if not votes:
        return NO_LABEL if gold_now is None else str(gold_now)
    ranked = Counter(votes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return str(ranked[0][0])


given = given_label_scores(detail)
gold_now = review.gold_labels(detail)
st.html(render.render_title("Response", detail.external_id))
st.caption(
    f"Response label {state.fmt_label(detail.response_label)} · aggregation {detail.aggregation} · colours: the model's score "
    "of each sentence given the response label"
)
if detail.context:
    state.show_html(render.render_context(detail.context))
state.show_html(
    render.render_response(detail.text, [(s.start, s.end) for s in detail.sentences], given, None)
)

st.subheader("Gold labels", anchor=False)
st.caption(
    "Each sentence with every annotator's label and the model's score given the response label (the raw score "
    "in brackets). Where the annotators are tied nothing is preselected: choose a label, or – for none."
)
decided: dict[int, int | None] = {}
undecided: list[int] = []
widths = [6, 3, 2, 3]
head = st.columns(widths)
head[0].markdown("**sentence**")
head[1].markdown("**annotators**")
head[2].markdown("**model given label**")
head[3].markdown("**gold**")
for s, model_score, gold in zip(detail.sentences, given, gold_now, strict=True):
    votes = [by_annotator[n][s.id] for n in names if s.id in by_annotator[n]]
    col_t, col_v, col_m, col_c = st.columns(widths)
    with col_t:  # the sentence alone, formulas rendered, coloured by the model's given-label score
        state.show_html(
            render.render_response(
                s.text, [(0, len(s.text))], [model_score], None, prefix=f"adj-s{s.position}", show_index=False
            )
        )
    col_v.markdown(
        f"sentence {s.position + 1}  \n"
        + "  \n".join(
            f"{render.md_escape(n)}: **{by_annotator[n][s.id]}**" if s.id in by_annotator[n] else
            f"{render.md_escape(n)}: –"
            for n in names
        )
    )  # fmt: skip
    col_m.markdown(
        "not scored"
        if model_score is None or s.score is None
        else f"**{model_score:.2f}** ({float(s.score):.2f})"
    )
    picked = col_c.segmented_control(
        f"Gold label of sentence {s.position + 1}",
        [NO_LABEL, *(str(v) for v in levels)],
        default=default_choice(votes, gold),
        key=f"adj-{choice}-{s.id}",
        label_visibility="collapsed",
    )
    if picked is None:
        undecided.append(s.position + 1)
    decided[s.id] = None if picked in (None, NO_LABEL) else int(picked)


def store(labels: dict[int, int | None]) -> None:
    try:
        result = actions.adjudicate(engine, user, choice, labels)
    except (InputError, PermissionDenied) as exc:
        st.error(render.md_escape(str(exc)))
    else:
        ss.pop("adj_pending", None)
        state.flash(f"Adjudicated {detail.external_id}: {len(result.changes)} gold label(s) changed.")
        st.rerun()


snapshot = (choice, tuple(sorted(decided.items())))
if st.button("Set gold labels", key="adj_save", type="primary"):
    if undecided:
        st.error(
            "Choose a label for sentence(s) "
            + ", ".join(str(i) for i in undecided)
            + ": the annotators are tied there. Nothing was stored."
        )
    else:
        warning = review.propose(detail, decided).warning
        if warning is None:
            store(decided)
        else:
            ss["adj_pending"] = (snapshot, warning)
pending = ss.get("adj_pending")
# The question holds only for the labels it was asked about: any change of a picker withdraws it.
if pending is not None and pending[0] == snapshot:
    st.warning(
        "These labels contradict the response label: "
        + render.md_escape(pending[1])
        + ". Store them anyway?",
        icon=":material/warning:",
    )
    yes, no = st.columns(2)
    if yes.button("Store anyway", key="adj_confirm"):
        store(dict(pending[0][1]))
    if no.button("Cancel", key="adj_cancel"):
        ss.pop("adj_pending", None)
        st.rerun()
elif pending is not None:
    ss.pop("adj_pending", None)
