"""Pairs: the two responses of a preference pair side by side, each sentence coloured by how much it explains
the preference given the labels already entered, labelled with Review's keys without leaving the page (one
cursor; H / L move it between the two sides)."""

from __future__ import annotations

import streamlit as st

from app import page, review, review_events, state
from app.components import pair_view, response_view
from app.pair_colours import pair_colours
from db import repository as repo
from db.pairs_read import load_pairs

# The session key of the page's review.ReviewNav (the events stored and the question waiting). A comment, not a
# docstring: Streamlit's magic would write a bare string onto the page.
NAV_KEY = "pairs_nav"
INDEX_KEY = "pairs_index"

ctx = page.dataset_page("Pairs", "annotator")
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset
ss = st.session_state
nav: review.ReviewNav = ss.setdefault(NAV_KEY, review.ReviewNav())

pairs = load_pairs(engine, dataset.id)
if not pairs:
    st.info("This dataset has no preference pairs. Upload a pairs file on the Data page.")
    st.stop()
if nav.moving:  # S / P from the browser: the pair number moves before its widget is drawn
    ss[INDEX_KEY] = max(1, min(int(ss.get(INDEX_KEY, 1)) + nav.moving, len(pairs)))
    nav.moving = 0
st.caption(
    "Colours: each sentence's probability of being wrong given that the rejected response lost and the labels "
    "already entered on the pair (the model's scores, conditioned on both); they change as labels are stored. "
    "Keys: H / L (← / →) chosen / rejected side, J / K move, 1 / 0 label, X clear, A rest fine, U undo, "
    "S / P next / previous pair, ? all keys."
)
index = int(
    st.number_input("Pair", min_value=1, max_value=len(pairs), value=1, step=1, key=INDEX_KEY, help="1-based")
)
pair = pairs[index - 1]
if nav.response_id != pair.chosen_id:  # another pair: what waited on the last one is gone
    nav.response_id, nav.focus = pair.chosen_id, 0
    nav.clear_prompts()
chosen = repo.get_response(engine, pair.chosen_id)
st.text(
    f"pair {index} of {len(pairs)} · {pair.external_id} · strength {pair.strength:g} · "
    f"preference {pair.source} by {pair.annotator}"
)  # ids and names are user data: plain text
st.text(f"prompt: {chosen.context}")
levels = review.label_levels(dataset.label_kind, dataset.max_label)


def on_batch() -> None:
    """Label events from the browser: stored in order (Review's path) before the panel redraws."""
    raw = response_view.event("batch", key=pair_view.KEY)
    said = review_events.store_batch(raw, nav, engine=engine, user=user, levels=len(levels))
    nav.advance = False  # N is not offered here; a pair moves with S / P only
    if said:
        state.flash(said, "info")


def on_nav() -> None:
    """S / P from the browser: the next / previous pair."""
    raw = response_view.event("nav", key=pair_view.KEY)
    if isinstance(raw, dict) and raw.get("delta") in (1, -1):
        seq = raw.get("seq", 0)
        nav.batch = max(nav.batch, seq if isinstance(seq, int) and not isinstance(seq, bool) else 0)
        nav.moving = int(raw["delta"])


@st.fragment
def pair_panel() -> None:
    """The pair as this user's labels go, coloured given the preference and those labels; the component alone
    reruns for a batch of labels (new colours), a move to another pair reruns the page."""
    if nav.moving:
        st.rerun(scope="app")
    sides = (
        review_events.labelling_view(engine, user, pair.chosen_id),
        review_events.labelling_view(engine, user, pair.rejected_id),
    )
    colours = pair_colours(*sides, pair.strength)
    data = pair_view.payload(
        sides,
        colours,
        titles=(f"Chosen · {sides[0].external_id}", f"Rejected · {sides[1].external_id}"),
        nav=nav,
        levels=levels,
        batch=nav.batch,
        refused=nav.refused,
    )
    pair_view.show(data, on_batch=on_batch, on_nav=on_nav)
    if all(c is None for c in colours[0]):
        st.caption("Not scored yet: train a model on this dataset.")


pair_panel()
with st.expander("Open in Review"):
    st.caption("Review shows one response at a time with its history, comments and split fixes.")
    for side, response_id in (("chosen", pair.chosen_id), ("rejected", pair.rejected_id)):
        if st.button(f"The {side} response in Review", key=f"pairs_open_{side}"):
            review_nav = ss.setdefault(review.NAV_KEY, review.ReviewNav())
            review_nav.follow_queue(
                f"Pair {pair.external_id}", [pair.chosen_id, pair.rejected_id], response_id
            )
            st.switch_page("views/review.py")
