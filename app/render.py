"""Safe HTML for a response whose sentences are highlighted by score.

Every piece of user text goes through ``markupsafe.escape``; the only markup we emit is a fixed set of tags
and CSS classes defined in :data:`CSS`. Scores choose one of :data:`N_BINS` colour classes and uncertainty one
of three outline classes, so no user-controlled value ever reaches a ``style`` attribute. Markdown and LaTeX
inside responses are shown as text (escaped), with one exception: LaTeX between ``$...$``, ``$$...$$``,
``\\(...\\)``, ``\\[...\\]`` (and bare ``\\begin{align}``-style environments) is converted to MathML on the
server by ``latex2mathml`` and then rebuilt from an allow-list of MathML elements and attributes
(:func:`latex_to_mathml`); anything outside the list (``\\href``, ``\\style``, ``\\class``, raw tags inside
``\\text{}``), an unknown command or a conversion error shows the escaped source instead.

Each sentence is a bidi isolate whose text takes its own direction (``dir="auto"``), so right-to-left sentences
neither reorder their neighbours nor move the sentence numbers.

This module is pure (no Streamlit import) so it can be unit-tested and benchmarked on its own.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from markupsafe import escape

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


def _build_css() -> str:
    rules = [
        ".fs-response{white-space:pre-wrap;line-height:1.9;font-size:1rem;padding:.6rem .8rem;"
        "border:1px solid #ddd;border-radius:.4rem;background:#fff;color:#111;overflow-wrap:anywhere}",
        ".fs-context{white-space:pre-wrap;font-size:.9rem;color:#333;background:#f3f5f8;padding:.5rem .8rem;"
        "border-left:3px solid #8aa;border-radius:.3rem;max-height:14rem;overflow:auto;overflow-wrap:anywhere}",
        ".fs-sent{border-radius:.25rem;padding:.05rem .1rem;outline-offset:1px;unicode-bidi:isolate}",
        ".fs-txt{unicode-bidi:isolate}",
        ".fs-math math{font-size:1.05em}",
        ".fs-math-block{display:inline-block;margin:.15rem .3rem;vertical-align:middle}",
        ".fs-sent:focus{outline:3px solid #1a5fb4}",
        ".fs-u0{outline:none}",
        ".fs-u1{outline:1px dashed #555}",
        ".fs-u2{outline:2px dashed #000}",
        ".fs-focus{outline:3px solid #1a5fb4 !important;box-shadow:0 0 0 3px #cfe0fb}",
        ".fs-none{background:#fff;border-bottom:1px dotted #999}",
        ".fs-idx{font-size:.65rem;vertical-align:super;color:#555;margin-right:.1rem;user-select:none}",
        ".fs-gold{font-size:.7rem;font-weight:700;margin-left:.15rem;padding:0 .2rem;border-radius:.2rem;"
        "user-select:none}",
        ".fs-gold-1{background:#b0183a;color:#fff}",
        ".fs-gold-0{background:#2a7b3d;color:#fff}",
        ".fs-title{font-size:1.35rem;font-weight:600;margin:.2rem 0 .4rem 0}",
        ".fs-legend{display:flex;align-items:center;gap:.3rem;font-size:.8rem;color:#333;flex-wrap:wrap}",
        ".fs-legend .fs-sw{display:inline-block;width:1.4rem;height:1rem;border:1px solid #ccc}",
        ".fs-legend .fs-key{display:inline-block;padding:0 .3rem;margin-left:.6rem}",
    ]
    for i, colour in enumerate(_BIN_COLOURS):
        text = "#fff" if i in _DARK_BINS else "#111"
        rules.append(f".fs-s{i}{{background:{colour};color:{text}}}")
    return "<style>" + "".join(rules) + "</style>"


CSS: str = _build_css()
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
    """Outline level 0 (confident), 1 (unsure) or 2 (very unsure: score within 0.15 of 0.5)."""
    u = uncertainty(score)
    if u is None:
        return 0
    if u >= 0.7:
        return 2
    if u >= 0.4:
        return 1
    return 0


def _check_prefix(prefix: str) -> str:
    # The prefix goes into id attributes; it comes from our code, but refuse anything odd rather than escape.
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"id prefix must match {_PREFIX_RE.pattern}, got {prefix!r}")
    return prefix


def sentence_id(prefix: str, index: int) -> str:
    """DOM id of sentence ``index`` in a fragment rendered with ``prefix``."""
    return f"{_check_prefix(prefix)}-{int(index)}"


# ------------------------------------------------------------------------------------------------ math

MATH_MAX_CHARS = 4000
"""Longer LaTeX is shown as source (conversion time grows with length; no real formula is this long)."""

_MATH_RE = re.compile(
    r"""
      \$\$(?P<dd>.+?)\$\$                                    # $$ display $$
    | \\\[(?P<br>.+?)\\\]                                    # \[ display \]
    | \\\((?P<pa>.+?)\\\)                                    # \( inline \)
    | \\begin\{(?P<env>equation|align|alignat|gather|multline|eqnarray)(?P<star>\*?)\}
        (?P<body>.+?)\\end\{(?P=env)(?P=star)\}              # bare display environments
    | (?<![\\$])\$(?P<d>[^\s$](?:[^$]*?[^\s\\$])?)\$(?!\d)   # $inline$: no space inside the dollars and no
                                                             # digit after (so "$5 and $10" stays text)
    """,
    re.DOTALL | re.VERBOSE,
)

MATHML_ELEMENTS = frozenset(
    {
        "math", "mrow", "mi", "mn", "mo", "ms", "mspace", "mtext", "msub", "msup", "msubsup", "mfrac",
        "msqrt", "mroot", "mstyle", "merror", "mpadded", "mphantom", "menclose", "munder", "mover",
        "munderover", "mtable", "mtr", "mtd", "mlabeledtr", "mmultiscripts", "mprescripts", "none",
    }
)  # fmt: skip
"""MathML elements kept by the sanitiser: presentation markup only (no ``maction``, ``mglyph``, ``semantics``
or ``annotation-xml``, which can carry links, images or foreign markup)."""

MATHML_ATTRIBUTES = frozenset(
    {
        "display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "form", "largeop",
        "movablelimits", "accent", "accentunder", "linethickness", "displaystyle", "scriptlevel",
        "columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines", "rowlines", "frame",
        "notation", "width", "height", "depth", "minsize", "maxsize", "symmetric", "linebreak", "voffset",
    }
)  # fmt: skip
"""Attributes kept on those elements: layout only. No ``href``, ``src``, ``style``, ``class``, ``id``, event
handlers or colours; the only namespace is MathML's own."""

_ATTR_VALUE_RE = re.compile(r"^[A-Za-z0-9 .%+\-]{0,64}$")
_MATHML_NS = "http://www.w3.org/1998/Math/MathML"


class _Unsafe(Exception):
    """The converter's output holds something outside the allow-list: show the source instead."""


class _MathMLSanitiser(HTMLParser):
    """Rebuilds MathML from the allow-list; raises :class:`_Unsafe` on anything else.

    Text is decoded by the parser and escaped again on output, so character references cannot smuggle markup;
    the rebuilt tree is balanced by construction (an end tag that does not close the open element is refused).
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)
        self.handle_endtag(tag)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in MATHML_ELEMENTS or (tag == "math") != (not self.stack):
            raise _Unsafe(tag)
        kept = []
        for name, value in attrs:
            if name == "xmlns" and tag == "math" and value == _MATHML_NS:
                continue  # re-added below
            if name not in MATHML_ATTRIBUTES or value is None or not _ATTR_VALUE_RE.match(value):
                raise _Unsafe(name)
            kept.append(f' {name}="{escape(value)}"')
        ns = f' xmlns="{_MATHML_NS}"' if tag == "math" else ""
        self.out.append(f"<{tag}{ns}{''.join(kept)}>")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise _Unsafe(f"/{tag}")
        self.stack.pop()
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.stack:
            if data.strip():
                raise _Unsafe("text outside <math>")
            return
        if "\\" in data:
            raise _Unsafe("unknown command")  # latex2mathml passes unknown macros through as text
        self.out.append(str(escape(data)))

    def handle_comment(self, data: str) -> None:
        raise _Unsafe("comment")

    def handle_decl(self, decl: str) -> None:
        raise _Unsafe("declaration")

    def handle_pi(self, data: str) -> None:
        raise _Unsafe("processing instruction")

    def unknown_decl(self, data: str) -> None:
        raise _Unsafe("declaration")


def sanitise_mathml(mathml: str) -> str | None:
    """``mathml`` rebuilt from :data:`MATHML_ELEMENTS` / :data:`MATHML_ATTRIBUTES`; ``None`` when it holds
    anything else (the caller then shows the LaTeX source as text)."""
    parser = _MathMLSanitiser()
    try:
        parser.feed(mathml)
        parser.close()
    except _Unsafe:
        return None
    if parser.stack or not parser.out:
        return None
    return "".join(parser.out)


_ARRAY_SPEC_RE = re.compile(r"(\\begin\{array\}\{)((?:[^{}]|\{[^{}]*\})*)(\})")
_CLINE_RE = re.compile(r"\\cline\{[^{}]*\}")


def _normalise_latex(latex: str) -> str:
    """Rewrite the two array idioms common in math datasets that the converter does not know: ``@{...}``
    inter-column material in an array's column spec (dropped) and ``\\cline{i-j}`` (drawn as ``\\hline``)."""
    latex = _ARRAY_SPEC_RE.sub(lambda m: m[1] + re.sub(r"@\{[^{}]*\}", "", m[2]) + m[3], latex)
    return _CLINE_RE.sub(r"\\hline", latex)


@functools.lru_cache(maxsize=8192)
def latex_to_mathml(latex: str, *, display: bool = False) -> str | None:
    """Safe MathML for a LaTeX formula (without its delimiters), or ``None`` when it cannot be shown as math
    (conversion error, an unknown command, anything outside the allow-list, longer than
    :data:`MATH_MAX_CHARS`). Cached: the Review page re-renders the same response on every keypress."""
    if not latex.strip() or len(latex) > MATH_MAX_CHARS:
        return None
    from latex2mathml.converter import convert

    try:
        # Display formulas keep their display style but flow inline, so the sentence highlight stays one box.
        mathml = convert(("\\displaystyle " if display else "") + _normalise_latex(latex), display="inline")
    except Exception:  # the converter raises many types on malformed input; every one means "show the source"
        return None
    return sanitise_mathml(mathml)


@dataclass(frozen=True, slots=True)
class MathSegment:
    """A formula found in a text: ``text[start:end]`` is the delimited source, ``latex`` the formula inside."""

    start: int
    end: int
    latex: str
    display: bool


def find_math(text: str) -> list[MathSegment]:
    """Delimited formulas in ``text``, left to right, non-overlapping (escaped ``\\$`` is not a delimiter)."""
    out = []
    for m in _MATH_RE.finditer(text):
        if m.group("env") is not None:
            env = m.group("env") + m.group("star")
            latex, display = f"\\begin{{{env}}}{m.group('body')}\\end{{{env}}}", True
        elif m.group("d") is not None:
            latex, display = m.group("d"), False
        elif m.group("pa") is not None:
            latex, display = m.group("pa"), False
        else:
            latex, display = m.group("dd") if m.group("dd") is not None else m.group("br"), True
        out.append(MathSegment(m.start(), m.end(), latex, display))
    return out


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
