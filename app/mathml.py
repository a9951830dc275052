"""Formulas in user text, shown as MathML that cannot carry anything but presentation markup.

LaTeX between ``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``, bare ``\\begin{align}``-style environments and
bare ``\\boxed{...}`` (final answers in math datasets) is converted to MathML on the server by ``latex2mathml`` and
then rebuilt from an allow-list of MathML elements and attributes (:func:`latex_to_mathml`); anything outside the
list (``\\href``, ``\\style``, ``\\class``, raw tags inside ``\\text{}``), an unknown command or a conversion error
gives ``None``, and the caller shows the escaped source instead. Pure (no Streamlit).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from markupsafe import escape

MATH_MAX_CHARS = 4000
"""Longer LaTeX is shown as source (conversion time grows with length; no real formula is this long)."""

_MATH_RE = re.compile(
    r"""
      \$\$(?P<dd>.+?)\$\$                                    # $$ display $$
    | \\\[(?P<br>.+?)\\\]                                    # \[ display \]
    | \\\((?P<pa>.+?)\\\)                                    # \( inline \)
    | \\begin\{(?P<env>equation|align|alignat|gather|multline|eqnarray)(?P<star>\*?)\}
        (?P<body>.+?)\\end\{(?P=env)(?P=star)\}              # bare display environments
    | (?P<boxed>\\boxed\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})    # bare \boxed{...} (2 nested brace levels)
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
        elif m.group("boxed") is not None:
            latex, display = m.group("boxed"), False
        elif m.group("d") is not None:
            latex, display = m.group("d"), False
        elif m.group("pa") is not None:
            latex, display = m.group("pa"), False
        else:
            latex, display = m.group("dd") if m.group("dd") is not None else m.group("br"), True
        out.append(MathSegment(m.start(), m.end(), latex, display))
    return out
