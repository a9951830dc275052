"""The Review page's response view and keys as one bidirectional component (``st.components.v2``).

The browser draws the response, moves the cursor, sets labels and recolours at once (the reviewer view is
mirrored in ``review_math.mjs``); label changes go to the server in the background as numbered events, and the
server's answer (which events are stored, a question, a conflict, the response as stored) comes back as the
component's data. Everything the browser inserts as HTML is rendered here by :mod:`app.render` (escaped text,
allow-listed MathML); every other value reaches the page as text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st
from markupsafe import escape

from app import render, review
from db.rows import ResponseDetail
from fractal_core.mil import reviewer

HERE = Path(__file__).resolve().parent
KEY = "review_view"
"""The component's widget key: its events are read from ``st.session_state[KEY]``."""

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("J / K or ↓ / ↑", "next / previous sentence"),
    ("F", "jump to the most likely first problem (given the response label)"),
    ("1 / 0", "label the sentence problem / fine, then next (2-9: higher levels of ordinal datasets)"),
    ("X", "clear the sentence's label"),
    ("A", "rest are fine: every unlabelled sentence 0"),
    ("N", "accept the model's labels for the rest (given the response label), next response"),
    ("S / P", "skip to the next / previous response"),
    ("C", "the same response judged on the next criterion (datasets of a group of criteria)"),
    ("U", "undo your last change in this response"),
    ("R", "show / hide the raw model score"),
    ("Y / Esc", "answer an open question (store anyway / cancel)"),
    ("?", "show / hide this help"),
)


def frame_html(shortcuts: tuple[tuple[str, str], ...], body: str) -> str:
    """The component's HTML around its ``body`` (Review's one response, the Pairs page's two sides): the status
    bar, the key help listing ``shortcuts``, the legend, the question dialog and the list of events."""
    keys = "".join(f"<li><kbd>{escape(k)}</kbd> {escape(v)}</li>" for k, v in shortcuts)
    return (
        '<div class="fs-rv">'
        '<div class="fs-bar"><span class="fs-status" role="status"></span>'
        '<span class="fs-criterion" hidden></span>'
        '<button class="fs-help-btn" type="button" title="Keyboard help (?)">? keys</button></div>'
        f'<div class="fs-help" hidden><ul>{keys}</ul></div>'
        f"{render.render_legend(positive_name='problem')}"
        '<div class="fs-modal" role="alertdialog" hidden></div>'
        f"{body}"
        '<div class="fs-list"></div>'
        "</div>\n"  # inline HTML, not a file path (see _CSS)
    )


# A newline marks a string as inline content: Streamlit reads a one-line string with "/" or "[" as a file path.
_CSS = (
    render.CSS_RULES + "\n:host{color:var(--st-text-color,inherit);font-family:var(--st-font,sans-serif)}"
    ".fs-rv{display:flex;flex-direction:column;gap:.5rem}"
    ".fs-bar{display:flex;justify-content:space-between;align-items:center;font-size:.85rem}"
    ".fs-status[data-state=pending]{color:var(--st-orange-text-color,#b35c00)}"
    ".fs-status[data-state=refused]{color:var(--st-red-text-color,#b0183a)}"
    ".fs-help-btn{font:inherit;color:inherit;background:transparent;border:1px solid rgba(128,128,128,.5);"
    "border-radius:.3rem;padding:0 .5rem;cursor:pointer}"
    ".fs-help{font-size:.85rem;border:1px solid rgba(128,128,128,.45);border-radius:.3rem;padding:.2rem .6rem}"
    ".fs-help ul{margin:.2rem 0;padding-left:1rem}"
    "kbd{font-family:var(--st-code-font,monospace);border:1px solid rgba(128,128,128,.6);border-radius:.2rem;"
    "padding:0 .25rem}"
    ".fs-modal{border:2px solid var(--st-red-color,#b0183a);border-radius:.4rem;padding:.5rem .8rem;"
    "background:var(--st-red-background-color,rgba(176,24,58,.1))}"
    ".fs-modal-title{font-weight:600}"
    ".fs-pending{text-decoration:underline dotted}"
    ".fs-gold-pending{opacity:.55;outline:1px dashed currentColor}"
    ".fs-list{display:flex;flex-direction:column;gap:.25rem;font-size:.9rem}"
    ".fs-row{border-left:3px solid transparent;padding:.15rem .5rem;cursor:pointer}"
    ".fs-row-focus{border-left-color:#1a5fb4;background:rgba(26,95,180,.08)}"
    ".fs-row-head{font-size:.78rem;opacity:.8}"
    ".fs-row[data-state=pending] .fs-row-head{color:var(--st-orange-text-color,#b35c00);opacity:1}"
    ".fs-row-text{white-space:pre-wrap;overflow-wrap:anywhere}"
)


def _js() -> str:
    # One module: the reviewer-view mirror (its named export is what the parity test imports under node) and
    # the component that uses it.
    return (HERE / "review_math.mjs").read_text() + "\n" + (HERE / "review_keys.mjs").read_text()


_ENTRY = "\nexport default (component) => mount(component, ReviewView);\n"


_component = st.components.v2.component(
    "fractal_review", html=frame_html(SHORTCUTS, '<div class="fs-body"></div>'), css=_CSS, js=_js() + _ENTRY
)


def payload(
    detail: ResponseDetail | None,
    *,
    nav: review.ReviewNav,
    levels: list[int],
    first_error: int | None,
    batch: int,
    refused: str | None = None,
    criteria: list[str] | None = None,
    criterion: str | None = None,
) -> dict[str, Any]:
    """The component's data: the response as stored (its HTML from :mod:`app.render`), the last event stored,
    the question or conflict the open response waits on, and the constants the browser draws with (and, on a
    dataset of a group of criteria, the group's criteria)."""
    response = None if detail is None else response_data(detail, levels=levels, first_error=first_error)
    question = conflict = None
    if nav.question is not None:
        question = {"event_id": nav.question.event_id, "warning": nav.question.warning}
    if nav.conflict is not None:
        conflict = {
            "event_id": nav.conflict.event_id,
            "items": [
                {"sentence_id": c.sentence_id, "version": c.version, "text": conflict_line(c)}
                for c in nav.conflict.conflicts
            ],
        }
    return {
        "response": response,
        "focus": nav.focus,
        "acked": nav.acked,
        "batch": batch,
        "question": question,
        "conflict": conflict,
        "refused": refused,
        "levels": levels,
        "bins": render.N_BINS,
        "uncertain": list(render.UNCERTAIN_AT),
        # A dataset of a group of criteria: the group's criteria (C moves to the next one) and this one's.
        "criteria": criteria or [],
        "criterion": criterion,
    }


def response_data(
    detail: ResponseDetail, *, levels: list[int], first_error: int | None, prefix: str = "fs-sent"
) -> dict[str, Any]:
    """One response as the browser draws and labels it: its HTML from :mod:`app.render` (sentence ``i`` has
    the id ``{prefix}-{i}``), and per sentence its scores, the label the user's view shows and its version."""
    labels = review.gold_labels(detail)
    return {
        "id": detail.id,
        "label": detail.response_label,
        "aggregation": detail.aggregation,
        # the view is P(level >= 1); the colours show P(problem) in the dataset's direction
        "problem_is_positive": reviewer.problem_is_positive(detail.aggregation),
        "fine_level": review.fine_level(detail.aggregation, levels),
        "html": render.render_response(
            detail.text, [(s.start, s.end) for s in detail.sentences], prefix=prefix
        ),
        "first_error": first_error,
        "sentences": [
            {
                "id": s.id,
                "score": s.score,
                "basis": s.view_score,  # what the view given the label is computed from
                "label": label,
                "source": s.label_source if label is not None else None,
                "annotator": s.annotator if label is not None else None,
                "version": s.label_version,
                "html": render.render_rich_text(s.text),
            }
            for s, label in zip(detail.sentences, labels, strict=True)
        ],
    }


def conflict_line(c: Any) -> str:
    """One line of a stale-save conflict: who set what (shown as text)."""
    theirs = "cleared it" if c.label is None else f"set {c.label} ({c.source})"
    return f"Sentence {c.position + 1}: {c.annotator or 'someone'} {theirs}"


def show(data: dict[str, Any], *, on_batch: Callable[[], None], on_nav: Callable[[], None]) -> Any:
    """Mount the component (one per page) with ``data``; ``on_batch`` / ``on_nav`` run before the rerun that
    a batch of label events or a move to another response causes (read them with :func:`event`)."""
    return _component(key=KEY, data=data, on_batch_change=on_batch, on_nav_change=on_nav)


def event(name: str, *, key: str = KEY) -> Any:
    """The value the browser sent with event ``name`` (``batch`` or ``nav``) in this run to the component
    mounted with ``key``, else None."""
    value = st.session_state.get(key)
    if value is None:
        return None
    try:
        return value[name]
    except (KeyError, TypeError):
        return None
