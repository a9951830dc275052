"""Safe HTML for a response whose sentences are highlighted by score.

Every piece of user text goes through ``markupsafe.escape``; the only markup we emit is a fixed set of tags
and CSS classes defined in :data:`CSS`. Scores choose one of :data:`N_BINS` colour classes and uncertainty one
of three outline classes, so no user-controlled value ever reaches a ``style`` attribute. Markdown and LaTeX
inside responses are shown as text (escaped), with one exception: formulas, which :mod:`app.mathml` finds,
converts to MathML and rebuilds from an allow-list (anything else shows the escaped source).

Each sentence is a bidi isolate whose text takes its own direction (``dir="auto"``), so right-to-left sentences
neither reorder their neighbours nor move the sentence numbers.

This module is pure (no Streamlit import) so it can be unit-tested and benchmarked on its own.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections.abc import Sequence

from markupsafe import escape

from app.mathml import MathSegment, find_math, latex_to_mathml
from fractal_core.mil import semantics

N_BINS = 10
"""Number of colour classes the score range [0, 1] is cut into."""

# Sequential scale from neutral (score 0: the sentence looks fine) to red (score 1: looks wrong). Fixed
# literals: the stylesheet never contains anything derived from input.
_BIN_COLOURS: tuple[str, ...] = (
    "#f7f7f7",
    "#fdf1dc",
    "#fde3b8",
    "#fdd093",
    "#fcb774",
    "#f99b5f",
    "#f17c54",
    "#e35a4c",
    "#cc3a43",
    "#b0183a",
)
# Light text on the darkest bins keeps contrast readable.
_DARK_BINS = frozenset({7, 8, 9})

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


UNCERTAIN_AT = (0.4, 0.7)
"""Uncertainty (``1 - |2p - 1|``) at which a sentence gets the thin (level 1) and the thick (level 2) dashed
outline; the browser component reads these too."""

# The page may be light or dark: boxes take the text colour of the page and a translucent tint instead of a fixed
# white, and only the score bins (which set both background and text) carry fixed colours.
_RULES: tuple[str, ...] = (
    ".fs-response{white-space:pre-wrap;line-height:1.9;font-size:1rem;padding:.6rem .8rem;"
    "border:1px solid rgba(128,128,128,.45);border-radius:.4rem;background:transparent;color:inherit;"
    "overflow-wrap:anywhere}",
    ".fs-context{white-space:pre-wrap;font-size:.9rem;color:inherit;background:rgba(128,128,128,.12);"
    "padding:.5rem .8rem;border-left:3px solid #8aa;border-radius:.3rem;max-height:14rem;overflow:auto;"
    "overflow-wrap:anywhere}",
    ".fs-sent{border-radius:.25rem;padding:.05rem .1rem;outline-offset:1px;unicode-bidi:isolate}",
    ".fs-txt{unicode-bidi:isolate}",
    ".fs-math math{font-size:1.05em}",
    # A long display formula scrolls inside its own box instead of being cut at the response's edge.
    ".fs-math-block{display:inline-block;max-width:100%;overflow-x:auto;overflow-y:hidden;"
    "margin:.15rem .3rem;vertical-align:middle}",
    # Chromium's MathML draws no box for menclose: \\boxed{} would show its content only.
    ".fs-math menclose{border:1px solid currentColor;padding:0 .2em}",
    ".fs-sent:focus{outline:3px solid #1a5fb4}",
    ".fs-u0{outline:none}",
    ".fs-u1{outline:1px dashed #555}",
    ".fs-u2{outline:2px dashed #000}",
    ".fs-focus{outline:3px solid #1a5fb4 !important;box-shadow:0 0 0 3px #cfe0fb}",
    ".fs-none{background:transparent;border-bottom:1px dotted #999}",
    ".fs-idx{font-size:.65rem;vertical-align:super;opacity:.7;margin-right:.1rem;user-select:none}",
    ".fs-gold{font-size:.7rem;font-weight:700;margin-left:.15rem;padding:0 .2rem;border-radius:.2rem;"
    "user-select:none}",
    ".fs-gold-1{background:#b0183a;color:#fff}",
    ".fs-gold-0{background:#2a7b3d;color:#fff}",
    ".fs-title{font-size:1.35rem;font-weight:600;margin:.2rem 0 .4rem 0}",
    ".fs-legend{display:flex;align-items:center;gap:.3rem;font-size:.8rem;color:inherit;flex-wrap:wrap}",
    ".fs-legend .fs-sw{display:inline-block;width:1.4rem;height:1rem;border:1px solid rgba(128,128,128,.6)}",
    ".fs-legend .fs-key{display:inline-block;padding:0 .3rem;margin-left:.6rem}",
)


def _css_rules() -> str:
    rules = list(_RULES)
    for i, colour in enumerate(_BIN_COLOURS):
        text = "#fff" if i in _DARK_BINS else "#111"
        rules.append(f".fs-s{i}{{background:{colour};color:{text}}}")
    return "".join(rules)


CSS_RULES: str = _css_rules()
"""The rules every fragment relies on, without the ``<style>`` wrapper (the Review component carries them into
its own shadow root)."""

CSS: str = "<style>" + CSS_RULES + "</style>"
"""The stylesheet every fragment relies on; emit it once per page (``st.html(CSS)``)."""


def score_bin(score: float | None) -> int | None:
    """Colour bin in ``0..N_BINS-1`` for a score in [0, 1]; ``None`` for a missing or non-finite score."""
    if score is None:
        return None
    s = float(score)
    if not math.isfinite(s):
        return None
    s = min(max(s, 0.0), 1.0)
    return min(int(s * N_BINS), N_BINS - 1)


def uncertainty(score: float | None) -> float | None:
    """``fractal_core.mil.semantics.uncertainty`` of a score (1 at 0.5, 0 at 0 or 1); ``None`` when it is missing."""
    if score_bin(score) is None or score is None:
        return None
    return semantics.uncertainty(min(max(float(score), 0.0), 1.0))


def uncertainty_level(score: float | None) -> int:
    """Outline level 0 (confident), 1 (unsure) or 2 (very unsure: score within 0.15 of 0.5): :data:`UNCERTAIN_AT`."""
    u = uncertainty(score)
    if u is None:
        return 0
    return int(u >= UNCERTAIN_AT[0]) + int(u >= UNCERTAIN_AT[1])


def _check_prefix(prefix: str) -> str:
    # The prefix goes into id attributes; it comes from our code, but refuse anything odd rather than escape.
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"id prefix must match {_PREFIX_RE.pattern}, got {prefix!r}")
    return prefix


def sentence_id(prefix: str, index: int) -> str:
    """DOM id of sentence ``index`` in a fragment rendered with ``prefix``."""
    return f"{_check_prefix(prefix)}-{int(index)}"


def _render_text(text: str, start: int, end: int, math: Sequence[MathSegment], starts: Sequence[int]) -> str:
    """Escaped ``text[start:end]`` with every formula that lies wholly inside it rendered as MathML.

    A formula that crosses ``start`` or ``end`` (a sentence boundary) stays source text, so highlight spans
    and sentence offsets never change with rendering.
    """
    parts: list[str] = []
    pos = start
    for k in range(bisect.bisect_left(starts, start), len(math)):
        seg = math[k]
        if seg.start >= end:
            break
        if seg.end > end:
            continue
        mathml = latex_to_mathml(seg.latex, display=seg.display)
        if mathml is None:
            continue
        parts.append(str(escape(text[pos : seg.start])))
        kind = "fs-math fs-math-block" if seg.display else "fs-math"
        # The title keeps the source one hover away (and is what a copy of the formula means).
        parts.append(f'<span class="{kind}" title="{escape(text[seg.start : seg.end])}">{mathml}</span>')
        pos = seg.end
    parts.append(str(escape(text[pos:end])))
    return "".join(parts)


def render_rich_text(text: str) -> str:
    """Escaped ``text`` with its formulas rendered (no wrapper element)."""
    math = find_math(text)
    return _render_text(text, 0, len(text), math, [m.start for m in math])


# ------------------------------------------------------------------------------------------------ responses


def render_response(
    text: str,
    spans: Sequence[tuple[int, int]],
    scores: Sequence[float | None] | None = None,
    labels: Sequence[int | None] | None = None,
    *,
    focus: int | None = None,
    prefix: str = "fs-sent",
    show_index: bool = True,
) -> str:
    """HTML for one response with each sentence highlighted.

    Args:
        text: the response as the user gave it (any characters; escaped here, formulas rendered as MathML).
        spans: ``(start, end)`` character offsets of each sentence in ``text``, sorted, non-overlapping.
        scores: one score in [0, 1] per sentence (``None`` = not scored yet); length ``len(spans)``.
        labels: one gold label per sentence (0, 1 or ``None``); length ``len(spans)``.
        focus: index of the sentence the keyboard cursor is on (thick outline).
        prefix: id prefix, ``[a-z][a-z0-9-]*``; sentence ``i`` gets id ``f"{prefix}-{i}"``.
        show_index: show a small 1-based sentence number before each sentence.

    Returns:
        A ``<div class="fs-response">`` string; text between sentences is kept verbatim (escaped).
    """
    _check_prefix(prefix)
    n = len(spans)
    if scores is not None and len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} sentences")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} sentences")
    math = find_math(text)
    starts = [m.start for m in math]
    parts: list[str] = ['<div class="fs-response" dir="auto">']
    pos = 0
    for i, (start, end) in enumerate(spans):
        start, end = int(start), int(end)
        if not (pos <= start <= end <= len(text)):
            raise ValueError(f"span {i} ({start}, {end}) out of order or outside the text")
        parts.append(_render_text(text, pos, start, math, starts))
        score = None if scores is None else scores[i]
        b = score_bin(score)
        classes = ["fs-sent", "fs-none" if b is None else f"fs-s{b}", f"fs-u{uncertainty_level(score)}"]
        if focus is not None and i == focus:
            classes.append("fs-focus")
        title = "not scored" if b is None or score is None else f"score {float(score):.2f}"
        parts.append(f'<span id="{prefix}-{i}" class="{" ".join(classes)}" tabindex="0" title="{title}">')
        if show_index:
            parts.append(f'<span class="fs-idx">{i + 1}</span>')
        # The sentence's own text is an isolate with its own direction: the number stays at its start.
        parts.append(f'<span class="fs-txt" dir="auto">{_render_text(text, start, end, math, starts)}</span>')
        label = None if labels is None else labels[i]
        if label is not None:
            lab = 1 if int(label) else 0
            parts.append(f'<span class="fs-gold fs-gold-{lab}">{"✗" if lab else "✓"}</span>')
        parts.append("</span>")
        pos = end
    parts.append(_render_text(text, pos, len(text), math, starts))
    parts.append("</div>")
    return "".join(parts)


def render_context(context: str) -> str:
    """HTML box for the question / source document shown above a response (escaped, formulas rendered,
    scrollable)."""
    return f'<div class="fs-context" dir="auto">{render_rich_text(context)}</div>'


def markdown_block(html: str) -> str:
    """A ``<div>`` fragment from this module packed for ``st.markdown(..., unsafe_allow_html=True)``.

    Why not ``st.html``: it sanitises with DOMPurify's HTML-only profile, which drops MathML. Markdown passes an
    HTML block through untouched as long as it is one block: newlines become character references (a blank
    line would end the block and let Markdown parse the rest as text), and so do colons (Streamlit rewrites
    ``:material/`` in the source before parsing). The fragment is already escaped and allow-listed here, so
    nothing in it is live beyond our own markup.
    """
    if not html.startswith("<div"):
        raise ValueError("only a <div> fragment from app.render can be passed as Markdown")
    return html.replace("\r", "&#13;").replace("\n", "&#10;").replace(":", "&#58;")


def render_legend(*, positive_name: str = "problem") -> str:
    """Colour legend for the score bins plus the outline and gold-label keys.

    ``positive_name`` is what a score of 1 means (for example "error" or "hallucination"); it is escaped.
    """
    swatches = "".join(
        f'<span class="fs-sw fs-s{i}" title="{i / N_BINS:.1f}-{(i + 1) / N_BINS:.1f}"></span>'
        for i in range(N_BINS)
    )
    name = escape(positive_name)
    return (
        '<div class="fs-legend">'
        f"<span>score 0 (fine)</span>{swatches}<span>1 ({name})</span>"
        '<span class="fs-key fs-sent fs-u2">dashed = uncertain</span>'
        '<span class="fs-key fs-sent fs-none">dotted = not scored</span>'
        '<span class="fs-key"><span class="fs-gold fs-gold-1">✗</span> gold 1</span>'
        '<span class="fs-key"><span class="fs-gold fs-gold-0">✓</span> gold 0</span>'
        "</div>"
    )


def render_title(label: str, value: str) -> str:
    """A heading ``label value`` where ``value`` is user text (escaped, shown in monospace)."""
    return f'<div class="fs-title">{escape(label)} <code>{escape(value)}</code></div>'


_ID_SEPARATORS = "/:_-."


def shared_id_prefix(ids: Sequence[str]) -> str:
    """The prefix every id in ``ids`` (two or more) shares, up to and including its last separator
    (``/ : _ - .``), so a list can show the part that tells the ids apart; ``""`` when there is none."""
    if len(ids) < 2:
        return ""
    common = os.path.commonprefix(list(ids))
    cut = max(common.rfind(c) for c in _ID_SEPARATORS) + 1
    return common[:cut] if cut > 0 and all(len(i) > cut for i in ids) else ""


def text_width_px(
    texts: Sequence[str], *, per_char: int = 7, padding: int = 16, lo: int = 60, hi: int = 200
) -> int:
    """A column width (pixels) that shows the longest of ``texts`` in the table font, within ``[lo, hi]``."""
    longest = max((len(t) for t in texts), default=0)
    return max(lo, min(hi, longest * per_char + padding))


def plural(n: int, noun: str, plural_noun: str | None = None) -> str:
    """``"1 response"``, ``"2 responses"``."""
    return f"{n} {noun if n == 1 else (plural_noun or noun + 's')}"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md_escape(value: object) -> str:
    """Backslash-escape Markdown (and Streamlit's LaTeX ``$``) so user text inside ``st.markdown``-rendered
    strings (errors, captions) shows literally: no links, images, emphasis or math."""
    return _MD_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")
