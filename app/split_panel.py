"""Review's "Fix the split" panel: merge a sentence with the next one, split one at a character offset, undo the
last split change (``app.actions`` checks the role and writes through ``db.repository.segment_edits``).

Every edit carries the sentences this page showed; when someone changed the split since, the store refuses it
and the panel says so. Sentence text is shown with ``st.text`` / ``st.code`` (never markup). While a changed
split has no scores yet, the response is shown uncoloured (``app.review.unscored_if_stale``).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from sqlalchemy import Engine

from app import actions, render, state
from db import repository as repo
from db.accounts import PermissionDenied
from db.rows import ResponseDetail, SegmentEditResult, SegmentEditRow, UserRow
from fractal_core.data.segment_edit import split_parts
from fractal_core.errors import InputError

SEEN_KEY = "_split_seen"
"""The spans the panel showed in the previous run: a click is checked against what the person saw then."""
STALE_NOTE = "Split changed: scores are stale until the next scoring, so the response is shown uncoloured."


def _spans(detail: ResponseDetail) -> list[tuple[int, int]]:
    return [(s.start, s.end) for s in detail.sentences]


def _done(result: SegmentEditResult | None, what: str) -> None:
    if result is None:
        state.flash("Nothing to undo: this response has no split change left to undo.", "info")
        return
    extra = []
    if result.ended_labels:
        extra.append(f"{result.ended_labels} label(s) on the replaced sentences ended (kept in the history)")
    if result.restored_labels:
        extra.append(f"{result.restored_labels} label(s) restored")
    state.flash(" · ".join([what, *extra, "scores are stale until the next scoring"]) + ".", "success")


def show(engine: Engine, user: UserRow, detail: ResponseDetail) -> None:
    """The panel under the response (call it after the response is drawn)."""
    if detail.scores_stale:
        st.info(STALE_NOTE, icon=":material/info:")
    shown = _spans(detail)
    seen_id, seen = st.session_state.get(SEEN_KEY, (None, None))
    expected = seen if seen_id == detail.id and seen is not None else shown
    st.session_state[SEEN_KEY] = (detail.id, shown)
    with st.expander("Fix the split"):
        n = len(detail.sentences)
        pick = f"split_pick_{detail.id}"
        _keep_in_range(pick, 1, n, 1)  # a change may have left fewer sentences than the number kept
        number = int(st.number_input("Sentence", min_value=1, max_value=n, step=1, key=pick))
        sentence = detail.sentences[number - 1]
        st.code(sentence.text, language=None, wrap_lines=True)
        c1, c2 = st.columns(2)
        if c1.button("Merge with next", key="split_merge", disabled=number >= n):
            _act(
                lambda: actions.merge_sentences(engine, user, detail.id, number - 1, expected=expected),
                f"Merged sentences {number} and {number + 1}",
            )
        if c2.button("Undo last split change", key="split_undo"):
            _act(
                lambda: actions.undo_split(engine, user, detail.id, expected=expected),
                "Undid the last split change",
            )
        _split_controls(engine, user, detail, number, expected)
        _history(engine, detail.id)


def _split_controls(
    engine: Engine, user: UserRow, detail: ResponseDetail, number: int, expected: list[tuple[int, int]]
) -> None:
    """The offset, the preview of the two parts (plain text) and the split button."""
    sentence = detail.sentences[number - 1]
    if len(sentence.text) < 2:
        st.caption("This sentence is too short to split.")
        return
    at_key = f"split_at_{detail.id}_{number}"
    _keep_in_range(at_key, 1, len(sentence.text) - 1, len(sentence.text) // 2)
    offset = int(
        st.number_input(
            "Split at (characters from the sentence's start)",
            min_value=1,
            max_value=len(sentence.text) - 1,
            step=1,
            key=at_key,
        )
    )
    try:
        left, right = split_parts(sentence.text, offset)
    except InputError as exc:
        st.caption(f"No split here: {render.md_escape(exc.reason)}")
        return
    st.caption("The two parts:")
    st.text(left)
    st.text(right)
    if st.button(f"Split at {offset}", key="split_split"):
        _act(
            lambda: actions.split_sentence(engine, user, detail.id, number - 1, offset, expected=expected),
            f"Split sentence {number} at {offset}",
        )


def _history(engine: Engine, response_id: int) -> None:
    """The response's split changes, newest first, as plain text (names are user text)."""
    changes = repo.segment_history(engine, response_id)
    if not changes:
        return
    by_id = {c.id: c for c in changes}
    st.caption("Split changes (newest first)")
    for c in reversed(changes):
        st.text(f"{c.at:%Y-%m-%d %H:%M} {c.editor}: {describe(c, by_id)}")


def describe(c: SegmentEditRow, by_id: dict[int, SegmentEditRow]) -> str:
    """One split change in words (sentences counted from 1); ``by_id``: the response's changes, for undos."""

    def action(e: SegmentEditRow) -> str:
        if e.kind == "merge":
            return f"merged sentences {e.position + 1} and {e.position + 2}"
        return f"split sentence {e.position + 1} at {e.offset}"

    undone = by_id.get(c.undoes_id) if c.undoes_id is not None else None
    what = action(c) if c.kind != "undo" else f"undid: {action(undone)}" if undone else "undid a change"
    if c.ended_labels:
        what += f" ({c.ended_labels} label(s) ended)"
    return what + (" · undone" if c.undone else "")


def _keep_in_range(key: str, lo: int, hi: int, default: int) -> None:
    """A number input's kept value (or ``default`` the first time) brought into ``[lo, hi]``: the widget is
    created without a value of its own, its state is the one place the number lives."""
    value = st.session_state.get(key)
    if value is None or not lo <= value <= hi:
        st.session_state[key] = min(max(int(default if value is None else value), lo), hi)


def _act(edit: Callable[[], SegmentEditResult | None], what: str) -> None:
    try:
        result = edit()
    except PermissionDenied as exc:
        st.error(f"Not changed: {render.md_escape(exc)}")
        return
    except InputError as exc:  # a stale view, or an edit the library refuses
        st.error(f"Not changed: {render.md_escape(exc.reason)}")
        return
    _done(result, what)
    st.rerun()
