"""The Pairs page's view and keys: the two responses of a preference pair side by side in Review's component,
one cursor, the same keys and the same way to the server (``review_keys.mjs`` with the pair layout of
``pair_keys.mjs``; events are stored by ``app.review_events``).

Each sentence is coloured by P(problem | the preference, the labels stored) (``app.pair_colours``), computed on
the server: the colours change once a label is stored and the panel redraws. Everything inserted as HTML is
rendered by :mod:`app.render` (escaped text, allow-listed MathML); titles and messages reach the page as text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import streamlit as st

from app import review
from app.components import response_view
from db.rows import ResponseDetail

KEY = "pairs_view"
"""The component's widget key: its events are read with ``response_view.event(name, key=KEY)``."""
SIDES = ("Chosen", "Rejected")

_REVIEW_KEYS = dict(response_view.SHORTCUTS)  # the keys that do here what they do in Review: one description
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("H / L or ← / →", "cursor to the chosen (left) / rejected (right) response"),
    ("J / K or ↓ / ↑", _REVIEW_KEYS["J / K or ↓ / ↑"]),
    ("F", "jump to the likeliest problem on this side (highest colour among unlabelled sentences)"),
    ("1 / 0", _REVIEW_KEYS["1 / 0"]),
    ("X", _REVIEW_KEYS["X"]),
    ("A", "rest are fine: every unlabelled sentence of this side 0"),
    ("S / P", "next / previous pair"),
    *((k, _REVIEW_KEYS[k]) for k in ("U", "R", "Y / Esc", "?")),
)
_SIDES_HTML = '<div class="fs-pair">{}</div>'.format(
    "".join(
        f'<div class="fs-side fs-side-{k}"><div class="fs-side-title"></div><div class="fs-side-body"></div></div>'
        for k in range(len(SIDES))
    )
)


_CSS = (
    response_view._CSS + ".fs-pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}"
    ".fs-side{border:2px solid transparent;border-radius:.4rem;padding:.3rem .5rem;min-width:0}"
    ".fs-side-active{border-color:#1a5fb4}"
    ".fs-side-title{font-weight:600;font-size:.9rem;margin-bottom:.3rem;overflow-wrap:anywhere}"
)
_ENTRY = "\nexport default (component) => mount(component, PairView);\n"
_component = st.components.v2.component(
    "fractal_pair",
    html=response_view.frame_html(SHORTCUTS, _SIDES_HTML),
    css=_CSS,
    js=response_view._js() + "\n" + (response_view.HERE / "pair_keys.mjs").read_text() + _ENTRY,
)


def most_explaining(colours: Sequence[float | None], detail: ResponseDetail) -> int | None:
    """Where F jumps on one side: the unlabelled sentence with the highest colour (None when unscored or
    every sentence is labelled)."""
    values = np.array(colours, dtype=np.float64)  # (N,) None -> NaN
    values[~np.isnan(review.entered_labels(detail))] = np.nan
    return None if bool(np.isnan(values).all()) else int(np.nanargmax(values))


def payload(
    sides: tuple[ResponseDetail, ResponseDetail],
    colours: tuple[Sequence[float | None], Sequence[float | None]],
    *,
    titles: tuple[str, str],
    nav: review.ReviewNav,
    levels: list[int],
    batch: int,
    refused: str | None = None,
) -> dict[str, Any]:
    """The component's data: Review's (``response_view.payload``: the last event stored, the question or
    conflict waiting, the constants the browser draws with) and the pair, chosen then rejected, each sentence
    with its colour given the preference and the labels stored."""
    data = response_view.payload(None, nav=nav, levels=levels, first_error=None, batch=batch, refused=refused)
    shown = []
    for k, (detail, colour, title) in enumerate(zip(sides, colours, titles, strict=True)):
        side = response_view.response_data(
            detail, levels=levels, first_error=most_explaining(colour, detail), prefix=f"fs-side{k}"
        )
        side["title"] = title  # user text: the browser sets it as text
        for sentence, c in zip(side["sentences"], colour, strict=True):
            sentence["colour"] = c
        shown.append(side)
    data["pair"] = {"sides": shown}
    return data


def show(data: dict[str, Any], *, on_batch: Callable[[], None], on_nav: Callable[[], None]) -> Any:
    """Mount the component (one per page) with ``data``; ``on_batch`` / ``on_nav`` run before the rerun that a
    batch of label events or a move to another pair causes (read them with ``response_view.event``)."""
    return _component(key=KEY, data=data, on_batch_change=on_batch, on_nav_change=on_nav)
