"""Review: browse responses sorted/filtered by the model's scores, read one with its sentences highlighted,
and correct sentence labels with the keyboard. Every change is stored at once."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import actions, auth, render, review, safe_markdown, state
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
SHORTCUTS = (
    ("J / K", "next / previous sentence"),
    ("F", "jump to the most likely first problem (given the response label)"),
    ("1 / 0", "label sentence problem / fine (then next)"),
    ("X", "clear the sentence's label"),
    ("N", "save: accept model labels for the rest, next response"),
    ("S / P", "skip to next / previous response"),
    ("U", "undo the last change in this response"),
)

user = auth.require("annotator")
ss = st.session_state
engine = state.engine()
dataset = state.current_dataset()

st.header("Review")
state.show_flashes()
if dataset is None:
    st.info("No data yet. Upload responses on the Data page, or start with `fractal serve` to load the demo.")
    st.page_link("views/data.py", label="Go to Data", icon=":material/upload_file:")
    st.stop()

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
if ss.get("review_filters") != filters:
    # New filters: start at the top of the new list.
    ss["review_filters"] = filters
    if "review_filters_seen" in ss:
        ss["review_index"] = 0
        ss.pop("review_response_id", None)
        ss.pop("review_queue", None)
    ss["review_filters_seen"] = True

index = int(ss.get("review_index", 0))
link_index: int | None = None  # a position asked for by the URL, checked against the list below
if "_review_restored" not in ss:
    # First run of a session (a browser reload or a shared link): come back to the response in the URL.
    ss["_review_restored"] = True
    wanted = st.query_params.get("response", "")
    if wanted.isdigit():
        ss["review_response_id"] = int(wanted)
        ss["_review_from_link"] = int(wanted)
        position = st.query_params.get("i", "0")
        index = link_index = int(position) if position.isdigit() else 0
    elif wanted:
        # URL text is user text: escaped, so it cannot become a link or formatting in the message.
        st.warning(render.md_escape(f"The link names response {wanted!r}, which is not a response number."))

listing = repo.list_responses(engine, dataset.id, page=index // PAGE_SIZE, page_size=PAGE_SIZE, **filters)
if listing.total == 0:
    st.info("No response matches these filters.")
    st.stop()
if index >= listing.total:
    if link_index is not None:
        st.warning(
            f"The link asks for position {link_index + 1}, but this list has "
            f"{render.plural(listing.total, 'response')}: the position shown is the last one.",
            icon=":material/info:",
        )
    index = listing.total - 1
    listing = repo.list_responses(engine, dataset.id, page=index // PAGE_SIZE, page_size=PAGE_SIZE, **filters)
ids_on_page = [r.id for r in listing.rows]
# The response stays open until the user moves on, even if a change drops it out of the filtered list.
current_id = ss.get("review_response_id")
if current_id is None:
    current_id = ids_on_page[index % PAGE_SIZE] if index % PAGE_SIZE < len(ids_on_page) else ids_on_page[0]
ss["review_response_id"] = current_id
ss["review_index"] = index
st.query_params["response"] = str(current_id)
st.query_params["i"] = str(index)


def go_to(new_index: int) -> None:
    """Open the response at ``new_index`` of the list (and stop following a queue)."""
    ss["review_index"] = max(0, min(new_index, listing.total - 1))
    ss.pop("review_response_id", None)
    ss.pop("review_queue", None)
    ss["review_focus"] = 0


# A response opened from another page's queue (the Gold queue): S / N / P follow that queue, not the list.
queue: dict[str, Any] | None = ss.get("review_queue")
if queue is not None and current_id not in queue["ids"]:
    ss.pop("review_queue")
    queue = None


def step(delta: int) -> None:
    """Next (+1) or previous (-1) response: along the queue being followed, else along the list."""
    if queue is None:
        go_to(index + delta)
        return
    pos = queue["ids"].index(current_id) + delta
    if 0 <= pos < len(queue["ids"]):
        ss["review_response_id"] = queue["ids"][pos]
        ss["review_focus"] = 0
    else:
        state.flash(
            f"That was the {'last' if delta > 0 else 'first'} response of the {queue['name']}.", "info"
        )


# ------------------------------------------------------------------------------------------- response list
left, right = st.columns([5, 6], gap="medium")


@st.fragment(run_every=REFRESH_S)
def watch_training() -> None:
    """Polls the active model version (one indexed read) and the dataset's live jobs: when a job activates a new
    version the whole page reruns with its scores; meanwhile the job's progress is shown, and it disappears
    once the job is over."""
    assert dataset is not None
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
        ss.pop("_last_pick", None)
    elif ss.get("_last_pick") != rows_selected:
        ss["_last_pick"] = rows_selected
        if ids_on_page[rows_selected[0]] != current_id:
            go_to(listing.page * PAGE_SIZE + rows_selected[0])
            st.rerun()
    n_pages = (listing.total + PAGE_SIZE - 1) // PAGE_SIZE
    p1, p2, p3 = st.columns([1, 2, 1])
    if p1.button("◀", key="page_prev", disabled=listing.page == 0, help="Previous page"):
        go_to((listing.page - 1) * PAGE_SIZE)
        st.rerun()
    p2.caption(f"page {listing.page + 1} of {n_pages}")
    if p3.button("▶", key="page_next", disabled=listing.page >= n_pages - 1, help="Next page"):
        go_to((listing.page + 1) * PAGE_SIZE)
        st.rerun()
    with st.container(border=True):
        st.markdown("**Keyboard**")
        st.markdown("\n".join(f"- `{k}` {v}" for k, v in SHORTCUTS))

# ------------------------------------------------------------------------------------------- one response
detail: ResponseDetail | None
try:
    detail = repo.get_response(engine, current_id)
except Exception:  # a stale id from the URL (deleted, or another store)
    detail = None
if detail is None or detail.dataset_id != dataset.id:
    if ss.pop("_review_from_link", None) == current_id:
        state.flash(
            render.md_escape(
                f"The link's response {current_id} is not in the dataset {dataset.name} (deleted, or from "
                "another store): showing the first response instead."
            ),
            "warning",
        )
    go_to(0)
    st.rerun()
assert detail is not None
layer = actions.label_layer(engine, user, detail.id)
if layer == "own":
    detail = review.own_view(detail, team.own_labels(engine, detail.id, user.name), user.name)
n = len(detail.sentences)
# The label versions shown by the previous run: what the user saw when they pressed a key.
seen = ss.get("review_seen")
ss["review_seen"] = {"response": current_id, "versions": {s.id: s.label_version for s in detail.sentences}}
focus = min(max(int(ss.get("review_focus", 0)), 0), max(n - 1, 0))


def apply(proposal: review.Proposal, *, then_next: bool = False) -> None:
    """Store at once when consistent; otherwise park it and ask (the warning shows before anything is stored)."""
    seen_here = seen["versions"] if seen and seen["response"] == current_id else None
    proposal = review.as_seen(proposal, seen_here)
    if proposal.warning:
        ss["pending"] = {"proposal": proposal, "then_next": then_next}
        # Reset the per-sentence controls so they show stored labels while the question is open.
        ss["lab_nonce"] = ss.get("lab_nonce", 0) + 1
        return
    if not save(proposal, then_next=then_next):
        return
    if then_next:
        advance()


def save(proposal: review.Proposal, *, then_next: bool = False, note: str = "") -> bool:
    """Store, unless someone changed these labels since this view was read: then park the proposal and show
    their labels (nothing stored) so the user can keep theirs or replace them knowingly."""
    try:
        result = actions.save_labels(engine, user, proposal, finished=then_next)
    except PermissionDenied as exc:
        state.flash(f"Not saved: {exc}.", "error")
        return False
    except repo.StaleLabelError as exc:
        ss["conflict"] = {"proposal": proposal, "conflicts": exc.conflicts, "then_next": then_next}
        ss["lab_nonce"] = ss.get("lab_nonce", 0) + 1
        return False
    if result.changes:
        state.flash(f"Saved {len(result.changes)} label(s){note}.", "warning" if note else "success")
    return True


def advance() -> None:
    assert dataset is not None
    after = repo.list_responses(engine, dataset.id, page=index // PAGE_SIZE, page_size=PAGE_SIZE, **filters)
    still = index % PAGE_SIZE < len(after.rows) and after.rows[index % PAGE_SIZE].id == current_id
    if queue is not None:
        step(1)
        return
    go_to(review.next_position(index, after.total, still_listed=still))


def set_focused(label: int | None) -> None:
    assert detail is not None
    if n == 0:
        return
    apply(review.propose(detail, {detail.sentences[focus].id: label}))
    if "pending" not in ss and "conflict" not in ss and label is not None:
        ss["review_focus"] = min(focus + 1, n - 1)


with right:
    pending = ss.get("pending")
    if pending and pending["proposal"].response_id != current_id:
        ss.pop("pending")
        pending = None
    st.html(render.render_title("Response", detail.external_id))
    if layer == "own":
        st.caption(
            "Overlap response: your labels are kept apart from the other annotators' until a reviewer "
            "adjudicates."
        )
    elif layer == "refused":
        st.caption("This response is in other annotators' queues; you can read it but not label it.")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Response label", f"{detail.response_label:g}", help=f"aggregation: {detail.aggregation}")
    m2.metric("Model score", state.fmt_score(detail.score))
    m3.metric("Disagreement", state.fmt_score(detail.disagreement))
    if queue is not None:
        m4.metric(
            "Position", f"{queue['ids'].index(current_id) + 1} / {len(queue['ids'])}", help=queue["name"]
        )
        q1, q2 = st.columns([4, 1])
        q1.caption(
            f"Following the {queue['name']}: Skip, Save & next and Previous move along it, not the list."
        )
        if q2.button("Back to the list", key="review_leave_queue"):
            go_to(index)
            st.rerun()
    else:
        m4.metric("Position", f"{index + 1} / {listing.total}")
    if detail.context:
        st.caption("Context")
        state.show_html(render.render_context(detail.context))
    st.html(render.render_legend(positive_name="problem"))
    scores = [s.score for s in detail.sentences]
    state.show_html(
        render.render_response(
            detail.text,
            [(s.start, s.end) for s in detail.sentences],
            scores,
            review.gold_labels(detail),
            focus=focus if n else None,
        )
    )
    if detail.consistency_warning:
        st.warning(
            f"Labels contradict the response label: {detail.consistency_warning}", icon=":material/warning:"
        )

    if pending:
        st.error(
            f"This change contradicts the response label: {pending['proposal'].warning}. Store it anyway?",
            icon=":material/report:",
        )
        y, c = st.columns(2)
        if y.button("Store anyway", key="pending_yes", type="primary", shortcut="Y"):
            ss.pop("pending")
            if save(pending["proposal"], note=" despite the warning") and pending["then_next"]:
                advance()
            st.rerun()
        if c.button("Cancel", key="pending_no", shortcut="Esc"):
            ss.pop("pending")
            st.rerun()

    conflict = ss.get("conflict")
    if conflict and conflict["proposal"].response_id != current_id:
        ss.pop("conflict")
        conflict = None
    if conflict:
        st.error(
            "Not saved: someone changed these labels after you opened this response.", icon=":material/group:"
        )
        for c in conflict["conflicts"]:
            mine = conflict["proposal"].labels[c.sentence_id]
            theirs = "cleared it" if c.label is None else f"set {c.label} ({c.source})"
            # st.text: annotator names are user text and never rendered as markup.
            st.text(
                f"Sentence {c.position + 1}: {c.annotator or 'someone'} {theirs}; "
                f"yours: {'clear' if mine is None else mine}"
            )
        keep, overwrite = st.columns(2)
        if keep.button("Keep theirs", key="conflict_keep"):
            ss.pop("conflict")
            state.flash("Kept their labels.", "info")
            st.rerun()
        if overwrite.button("Replace with mine", key="conflict_replace", type="primary"):
            ss.pop("conflict")
            retry = review.replace_theirs(conflict["proposal"], conflict["conflicts"])
            if save(retry, note=" over the other person's") and conflict["then_next"]:
                advance()
            st.rerun()

    # Keyboard bar: native Streamlit button shortcuts (they work wherever focus is not in a text field).
    with st.container(horizontal=True):
        if st.button(
            "Prev", key="k_prev", shortcut="K", icon=":material/arrow_upward:", help="Previous sentence"
        ):
            ss["review_focus"] = max(focus - 1, 0)
            st.rerun()
        if st.button(
            "Next", key="k_next", shortcut="J", icon=":material/arrow_downward:", help="Next sentence"
        ):
            ss["review_focus"] = min(focus + 1, max(n - 1, 0))
            st.rerun()
        first_error = review.likely_first_error(detail)
        if st.button(
            "First problem",
            key="k_first",
            shortcut="F",
            icon=":material/flag:",
            disabled=first_error is None,
            help="Jump to the sentence most likely to be the first problem, given the response label"
            + ("" if first_error is None else f" (sentence {first_error[0] + 1}, p = {first_error[1]:.2f})"),
        ):
            assert first_error is not None
            ss["review_focus"] = first_error[0]
            st.rerun()
        if st.button("Problem", key="k_one", shortcut="1", help="Label the selected sentence 1 (problem)"):
            set_focused(1)
            st.rerun()
        if st.button("Fine", key="k_zero", shortcut="0", help="Label the selected sentence 0 (fine)"):
            set_focused(0)
            st.rerun()
        if st.button("Clear", key="k_clear", shortcut="X", help="Remove the selected sentence's label"):
            set_focused(None)
            st.rerun()
        if st.button("Undo", key="k_undo", shortcut="U", help="Undo your last change in this response"):
            undone = actions.undo(engine, user, current_id)
            state.flash(
                "Nothing to undo." if undone is None else f"Undid {len(undone.reverted)} change(s).", "info"
            )
            st.rerun()
    levels = review.label_levels(dataset.label_kind, dataset.max_label)
    if len(levels) > 2:
        # Ordinal datasets: one key per level above 1 (1 and 0 are the buttons above).
        with st.container(horizontal=True):
            for level in levels[2:10]:
                if st.button(f"Level {level}", key=f"k_level_{level}", shortcut=str(level)):
                    set_focused(level)
                    st.rerun()
    with st.container(horizontal=True):
        if st.button(
            "Save & next",
            key="k_save",
            shortcut="N",
            type="primary",
            help="Accept the model's labels for the rest",
        ):
            apply(review.propose_accept_rest(detail), then_next=True)
            st.rerun()
        if st.button("Skip", key="k_skip", shortcut="S", help="Next response without saving"):
            step(1)
            st.rerun()
        if st.button("Previous response", key="k_back", shortcut="P", help="Back to the previous response"):
            step(-1)
            st.rerun()

    # Per-sentence label controls (the mouse path; the keyboard acts on the outlined sentence).
    st.caption(f"Sentence {focus + 1} of {n} is selected (blue outline).")
    options = ["–", *(str(v) for v in levels)]
    for i, s in enumerate(detail.sentences):
        gold = s.label if s.label_source in review.GOLD_SOURCES else None
        col_t, col_c = st.columns([5, 2])
        marker = "▶ " if i == focus else ""
        source = "" if s.label is None else f" · {s.label_source} label {s.label} by {s.annotator}"
        # st.text never interprets markup: annotator names and sentences are user text.
        col_t.text(f"{marker}{i + 1}. score {state.fmt_score(s.score)}{source}")
        col_t.text(s.text[:300] + ("…" if len(s.text) > 300 else ""))
        key = f"lab-{s.id}-{gold}-{ss.get('lab_nonce', 0)}"
        choice = col_c.segmented_control(
            f"Label of sentence {i + 1}",
            options,
            default="–" if gold is None else str(gold),
            key=key,
            label_visibility="collapsed",
        )
        new = None if choice in (None, "–") else int(choice)
        if new != gold:
            ss["review_focus"] = i
            apply(review.propose(detail, {s.id: new}))
            st.rerun()

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
                        "sentence": sentence_no.get(h.sentence_id),
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
