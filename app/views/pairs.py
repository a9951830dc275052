"""Pairs: the two responses of a preference pair side by side, each sentence coloured by how much it explains
the preference; Review labels them with the keyboard, following the pair."""

from __future__ import annotations

import streamlit as st

from app import page, render, review, state
from app.pair_colours import pair_colours
from db import repository as repo
from db.pairs_read import load_pairs

ctx = page.dataset_page("Pairs", "annotator")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset
ss = st.session_state

pairs = load_pairs(engine, dataset.id)
if not pairs:
    st.info("This dataset has no preference pairs. Upload a pairs file on the Data page.")
    st.stop()
st.caption(
    "Colours: each sentence's probability of being wrong given that the rejected response lost (the model's "
    "scores, conditioned on the preference). Labels already set are shown on their sentences. Label with the "
    "keyboard in Review (J/K to move, 0/1 to label), which follows the pair."
)
index = int(
    st.number_input(
        "Pair", min_value=1, max_value=len(pairs), value=1, step=1, key="pairs_index", help="1-based"
    )
)
pair = pairs[index - 1]
chosen, rejected = repo.get_response(engine, pair.chosen_id), repo.get_response(engine, pair.rejected_id)
st.text(
    f"pair {pair.external_id} · strength {pair.strength:g} · preference {pair.source} by {pair.annotator}"
)  # ids and names are user data: plain text
st.text(f"prompt: {chosen.context}")
colours = pair_colours(chosen, rejected, pair.strength)
left, right = st.columns(2)
for col, detail, side, colour in (
    (left, chosen, "chosen", colours[0]),
    (right, rejected, "rejected", colours[1]),
):
    with col:
        st.html(render.render_title(side.capitalize(), detail.external_id))
        labels = [s.label for s in detail.sentences]
        state.show_html(
            render.render_response(
                detail.text,
                [(s.start, s.end) for s in detail.sentences],
                colour,
                labels,
                prefix=f"fs-pair-{side}",
            )
        )
        if all(c is None for c in colour):
            st.caption("Not scored yet: train a model on this dataset.")
        if st.button(f"Label the {side} response in Review", key=f"pairs_open_{side}"):
            nav = ss.setdefault(review.NAV_KEY, review.ReviewNav())
            nav.follow_queue(f"Pair {pair.external_id}", [chosen.id, rejected.id], detail.id)
            st.switch_page("views/review.py")
