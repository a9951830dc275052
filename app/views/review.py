"""Review: browse responses sorted/filtered by the model's scores, read one with its sentences coloured by the
reviewer view, and label them at keyboard speed in one browser component (labels are stored in the background,
in order; a sentence shows "saved" once the store has it)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import actions, page, render, review, review_events, safe_markdown, split_panel, state
from app import review_criteria as by_criterion
from app.components import response_view
from db import repository as repo
from db import team
from db.accounts import PermissionDenied, has_role
from db.models import NOTE_FLAGS
from db.rows import ResponseDetail
from fractal_core.errors import InputError

PAGE_SIZE = 20
REFRESH_S = 3.0  # how often an open Review page checks whether a training job activated a new model version
SORTS = {
    "uncertainty": "Most uncertain first",
    "disagreement": "Disagrees with response label",
    "score": "Highest score first",
    "id": "Upload order",
}
STATUSES = {
    None: "Any",
    "unlabelled": "No gold labels",
    "partial": "Partly labelled",
    "complete": "Fully labelled",
    "any_gold": "Has gold labels",
}

ctx = page.dataset_page(
    "Review",
    "annotator",
    empty="No data yet. Upload responses on the Data page, or start with `fractal serve` to load the demo.",
    data_link=True,
)
user, engine, dataset = ctx.user, ctx.engine, ctx.dataset
nav: review.ReviewNav = st.session_state.setdefault(review.NAV_KEY, review.ReviewNav())

# ------------------------------------------------------------------------------------------- filters
with st.expander("Sort and filter", expanded=False):
    c1, c2, c3 = st.columns(3)
    sort = c1.selectbox("Sort", list(SORTS), format_func=SORTS.__getitem__, key="review_sort")
    status = c2.selectbox(
        "Label status", list(STATUSES), format_func=lambda s: STATUSES[s], key="review_status"
    )
    annotator_filter = c3.text_input("Labelled by (annotator)", key="review_annotator").strip() or None
    c4, c5 = st.columns(2)
    lo, hi = c4.slider("Response score", 0.0, 1.0, (0.0, 1.0), step=0.05, key="review_score")
    disagreement_only = c5.checkbox(
        "Only where the model disagrees with the response label", key="review_disagree"
    )

in_queue = bool(team.queue(engine, dataset.id, user.name, limit=1))
my_queue = st.toggle(
    "Only my queue", value=in_queue, key="review_my_queue", help="Responses assigned to you and not done yet"
)
filters: dict[str, Any] = dict(
    queued_for=user.name if my_queue else None,
    sort=sort,
    descending=sort != "id",
    label_status=status,
    annotator=annotator_filter,
    min_score=lo if lo > 0 else None,
    max_score=hi if hi < 1 else None,
    disagreement_only=disagreement_only,
)
nav.set_filters(filters)
bad_link = nav.read_link(st.query_params.get("response", ""), st.query_params.get("i", ""))
if bad_link:
    # URL text is user text: escaped, so it cannot become a link or formatting in the message.
    st.warning(render.md_escape(bad_link))


def list_page() -> repo.ResponsePage:
    return repo.list_responses(
        engine, dataset.id, page=nav.index // PAGE_SIZE, page_size=PAGE_SIZE, **filters
    )


listing = list_page()
if listing.total == 0:
    st.info("No response matches these filters.")
    st.stop()
if nav.link_response is not None:
    # A link to a response: show where it really is in this list (not the position the link may carry).
    on_page = [r.id for r in listing.rows]
    offset = nav.index % PAGE_SIZE
    if nav.index >= listing.total or offset >= len(on_page) or on_page[offset] != nav.link_response:
        nav.locate(review.find_position(engine, dataset.id, nav.link_response, filters))
        nav.link_index = None
out_of_range = nav.clamp(listing.total)
if out_of_range:
    st.warning(out_of_range, icon=":material/info:")
if listing.page != nav.index // PAGE_SIZE:
    listing = list_page()

# A move the browser asked for (S / P, or N once its labels are stored).
if nav.advance:
    after = list_page()
    offset = nav.index % PAGE_SIZE
    still = offset < len(after.rows) and after.rows[offset].id == nav.response_id
    end = nav.after_save(after.total, still_listed=still)
    if end:
        state.flash(end, "info")
elif nav.moving:
    end = nav.step(nav.moving, listing.total)
    if end:
        state.flash(end, "info")
if listing.page != nav.index // PAGE_SIZE:
    listing = list_page()
nav.check_queue()
ids_on_page = [r.id for r in listing.rows]
current_id = nav.open_position(ids_on_page, PAGE_SIZE)
st.query_params["response"] = str(current_id)
st.query_params["i"] = str(nav.index)

# ------------------------------------------------------------------------------------------- response list
left, right = st.columns([5, 6], gap="medium")


@st.fragment(run_every=REFRESH_S)
def watch_training() -> None:
    """Polls the active model version (one indexed read) and the dataset's live jobs: when a job activates a new
    version the whole page reruns with its scores; meanwhile the job's progress is shown, and it disappears
    once the job is over."""
    if repo.active_model_version_id(engine, dataset.id) != listing.model_version_id:
        st.rerun(scope="app")
    training = [
        j
        for j in repo.list_jobs(engine, states=["queued", "running"], limit=20)
        if j.kind in ("train", "score") and j.payload.get("dataset_id") == dataset.id
    ]
    if training:
        # Say so, rather than let the user wonder why scores do not change yet.
        j = training[0]
        st.caption(
            f"Job {j.id} ({j.kind}) is {j.state} ({j.progress:.0%}); its scores appear when it finishes."
        )


with left:
    scored_by = "not scored yet" if listing.model_version_id is None else "scores from the active model"
    watch_training()
    st.caption(f"{render.plural(listing.total, 'response')} · {scored_by}")
    if listing.model_version_id is None:
        # Not scored yet must not be a dead end: the Train page shows the job that will score these responses
        # (queued after every upload) and starts one if there is none.
        if has_role(user, "admin"):
            st.page_link(
                "views/train.py",
                label="Scores come from a training job: follow it (or start one) on the Train page",
                icon=":material/model_training:",
            )
        else:
            st.caption("Scores appear once an admin's training job for this dataset has finished.")
    # Long ids usually share a prefix (a source name): show the part that tells them apart, so the id column
    # fits beside the others without horizontal scrolling.
    shared = render.shared_id_prefix([r.external_id for r in listing.rows])
    if shared:
        st.caption(render.md_escape(f"ids below start with {shared}"))
    shown_ids = [r.external_id[len(shared) :] for r in listing.rows]
    table = [
        {
            "id": shown_id,
            "label": r.response_label,
            "score": r.score,
            "uncert.": r.uncertainty,
            "gold": f"{r.n_gold}/{r.n_sentences}",
        }
        for r, shown_id in zip(listing.rows, shown_ids, strict=True)
    ]
    event = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"review_table_{listing.page}",
        column_config={
            "id": st.column_config.TextColumn(width=render.text_width_px(shown_ids)),
            "label": st.column_config.NumberColumn(width=48),
            "score": st.column_config.ProgressColumn(
                "score", min_value=0.0, max_value=1.0, format="%.2f", width=72
            ),
            "uncert.": st.column_config.NumberColumn(format="%.2f", width=56),
            "gold": st.column_config.TextColumn(width=48, help="sentences with a gold label / sentences"),
        },
    )
    rows_selected = event.selection.rows if event is not None else []
    # A row click opens that response once; the selection stays highlighted while the keys move on, so only a
    # new selection (or the same row picked again after deselecting it) navigates.
    if not rows_selected:
        st.session_state.pop("_last_pick", None)
    elif st.session_state.get("_last_pick") != rows_selected:
        st.session_state["_last_pick"] = rows_selected
        if ids_on_page[rows_selected[0]] != current_id:
            nav.go_to(listing.page * PAGE_SIZE + rows_selected[0], listing.total)
            st.rerun()
    n_pages = (listing.total + PAGE_SIZE - 1) // PAGE_SIZE
    p1, p2, p3 = st.columns([1, 2, 1])
    if p1.button("◀", key="page_prev", disabled=listing.page == 0, help="Previous page"):
        nav.go_to((listing.page - 1) * PAGE_SIZE, listing.total)
        st.rerun()
    p2.caption(f"page {listing.page + 1} of {n_pages}")
    if p3.button("▶", key="page_next", disabled=listing.page >= n_pages - 1, help="Next page"):
        nav.go_to((listing.page + 1) * PAGE_SIZE, listing.total)
        st.rerun()
    st.caption(
        "Keys work anywhere on the page outside text fields; press ? beside the response for the list."
    )

# ------------------------------------------------------------------------------------------- one response
levels = review.label_levels(dataset.label_kind, dataset.max_label)
rule = review.first_error_rule(repo.active_model_version(engine, dataset.id))


def view(response_id: int) -> ResponseDetail:
    """A response as this user's labels go: the shared view, or their own labels on an overlap response."""
    return review_events.labelling_view(engine, user, response_id)


detail: ResponseDetail | None
try:
    detail = view(current_id)
except Exception:  # a stale id from the URL (deleted, or another store)
    detail = None
if detail is None or detail.dataset_id != dataset.id:
    if nav.missing(listing.total):
        state.flash(
            render.md_escape(
                f"The link's response {current_id} is not in the dataset {dataset.name} (deleted, or from "
                "another store): showing the first response instead."
            ),
            "warning",
        )
    st.rerun()
assert detail is not None
nav.shown()
layer = actions.label_layer(engine, user, detail.id)


def on_batch() -> None:
    """Label events from the browser: stored in order before the panel redraws with the answer."""
    said = review_events.store_batch(
        response_view.event("batch"), nav, engine=engine, user=user, levels=len(levels)
    )
    if said:
        state.flash(said, "info")


criteria = by_criterion.siblings(engine, dataset.id)
external_id = detail.external_id


def on_nav() -> None:
    """S / P from the browser: the whole page moves to another response; C: to the same response judged on the
    next criterion of the group."""
    raw = response_view.event("nav")
    if isinstance(raw, dict) and raw.get("criterion") == 1 and criteria:
        nav.batch = max(nav.batch, int(raw.get("seq", 0)))
        by_criterion.switch(engine, criteria, by_criterion.next_criterion(criteria, dataset.id), external_id)
    elif isinstance(raw, dict) and raw.get("delta") in (1, -1):
        nav.batch = max(nav.batch, int(raw.get("seq", 0)))
        nav.moving = int(raw["delta"])


@st.fragment
def response_panel() -> None:
    """The component alone reruns for a batch of labels; a move to another response reruns the page."""
    if nav.advance or nav.moving or st.session_state.get(review.NAV_KEY) is not nav:  # moved, or switched
        st.rerun(scope="app")
    shown = view(current_id)
    data = response_view.payload(
        shown,
        nav=nav,
        levels=levels,
        first_error=review.first_error(shown, rule=rule, levels=len(levels)),
        batch=nav.batch,
        refused=nav.refused,
        criteria=[str(d.criterion) for d in criteria],
        criterion=dataset.criterion,
    )
    response_view.show(data, on_batch=on_batch, on_nav=on_nav)
    if shown.consistency_warning:
        st.warning(
            f"Labels contradict the response label: {shown.consistency_warning}", icon=":material/warning:"
        )


with right:
    st.html(render.render_title("Response", detail.external_id))
    if layer == "own":
        st.caption(
            "Overlap response: your labels are kept apart from the other annotators' until a reviewer "
            "adjudicates."
        )
    elif layer == "refused":
        st.caption("This response is in other annotators' queues; you can read it but not label it.")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Response label",
        state.fmt_label(detail.response_label),
        help=f"aggregation: {detail.aggregation}"
        + (
            "; this response came in a preference pair without a label of its own"
            if detail.response_label is None
            else ""
        ),
    )
    m2.metric("Model score", state.fmt_score(detail.score))
    m3.metric("Disagreement", state.fmt_score(detail.disagreement))
    position, followed = nav.position(listing.total)
    m4.metric("Position", position, help=followed)
    if followed is not None:
        q1, q2 = st.columns([4, 1])
        q1.caption(f"Following the {followed}: S, N and P move along it, not the list.")
        if q2.button("Back to the list", key="review_leave_queue"):
            nav.go_to(nav.index, listing.total)
            st.rerun()
    if criteria:
        by_criterion.selector(engine, criteria, dataset, detail.external_id)
    if detail.context:
        st.caption("Context")
        state.show_html(render.render_context(detail.context))
    response_panel()
    split_panel.show(engine, user, detail)

# ------------------------------------------------------------------------------------------- team work
with right:
    settings_now = team.team_settings(engine, dataset.id)
    if settings_now.guidelines.strip():
        with st.expander("Guidelines"):
            # Written by an admin, still untrusted: Markdown with raw HTML off and checked links.
            st.html(safe_markdown.render_markdown(settings_now.guidelines))
    with st.expander("Comments and flags"):
        for note in team.notes(engine, detail.id):
            flag = f" [{note.flag}]" if note.flag else ""
            # st.text: comments and names are user text, never markup.
            st.text(f"{note.author}{flag} · {note.created_at:%Y-%m-%d %H:%M}: {note.text}")
        with st.form(f"note_{detail.id}", clear_on_submit=True):
            comment = st.text_area("Comment", key="note_text", max_chars=team.MAX_NOTE_CHARS)
            flag_choice = st.selectbox(
                "Flag", [None, *NOTE_FLAGS], format_func=lambda f: f or "none", key="note_flag"
            )
            if st.form_submit_button("Add", key="note_add"):
                try:
                    actions.add_note(engine, user, detail.id, comment, flag_choice)
                except (InputError, PermissionDenied) as exc:
                    state.flash(f"Not added: {exc}", "error")
                else:
                    state.flash("Comment added.")
                st.rerun()
    with st.expander("Label history"):
        history = sorted(
            [*repo.label_history(engine, response_id=detail.id), *team.annotation_history(engine, detail.id)],
            key=lambda h: h.at,
        )
        sentence_no = {s.id: s.position + 1 for s in detail.sentences}
        if history:
            st.dataframe(
                [
                    {
                        "when": h.at.strftime("%Y-%m-%d %H:%M:%S"),
                        "who": h.annotator,
                        "sentence": str(sentence_no.get(h.sentence_id, "replaced by a split fix")),
                        "old": h.old_label,
                        "new": h.new_label,
                        "kind": h.source,
                    }
                    for h in history
                ],
                hide_index=True,
                key="history_table",
            )
        else:
            st.caption("No label changes yet.")
