"""Split a response into sentences or reasoning steps with exact character offsets.

Every returned :class:`Span` satisfies ``span.text == text[span.start:span.end]``; spans are stripped of
surrounding whitespace and never alter a character, so the review UI can highlight the user's own text.

How ``mode="sentences"`` works (why each step exists):

1. *Protected regions* are found first with linear-time regexes: fenced code blocks (```` ``` ```` / ``~~~``),
   LaTeX math (``\\( \\)``, ``\\[ \\]``, ``$$ $$``, ``$ $``, ``\\begin{..} \\end{..}``), inline code and URLs.
   pysbd happily splits inside ``\\( x = 1. \\)`` or after the ``?`` of a URL, so no cut is kept inside them.
2. The text is cut at blank lines (paragraphs) and around code fences (a code block is one unit).
3. Each paragraph goes through pysbd (offline, rule based). pysbd is super-linear on long inputs (114k chars of
   prose take ~10 s in one call, ~0.1 s in 10 calls), so long paragraphs are fed in windows of at most
   ``_CHUNK_CHARS`` characters; a window's last (possibly truncated) sentence starts the next window.
4. pysbd treats every newline as a sentence end. Hard-wrapped prose (a line not ending in punctuation followed
   by a line starting in lower case) is joined for pysbd by replacing that newline with a space of the same
   length, so offsets stay valid; list items, numbered lines and headings always start a new span.

``mode="steps"`` is for reasoning traces: when the text has step markers at line starts (``Step 3:``, ``3.``,
``3)``, bullets, headings) every marker line starts a step and continuation lines stay with it; otherwise
blank lines separate steps when present, else every newline does. Code fences and display math are never cut.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import pysbd

from fractal_core.data.records import Span

# Bump the suffix whenever the rules below change: the db stores it next to every sentence so that
# re-segmentation can be detected.
SEGMENTER_VERSION: str = f"pysbd-{pysbd.__version__}+v1"

SegmentMode = Literal["sentences", "steps"]

_CHUNK_CHARS = 3000

_CODE_FENCE_RE = re.compile(
    r"^[ \t]*(?P<fence>```|~~~)[^\n]*\n(?:.*?^[ \t]*(?P=fence)[ \t]*$|.*\Z)", re.MULTILINE | re.DOTALL
)
# Math bodies are bounded ({1,5000}) so an unterminated delimiter cannot make the scan quadratic.
_MATH_RES = (
    re.compile(r"\$\$.{1,5000}?\$\$", re.DOTALL),
    re.compile(r"\\\[.{1,5000}?\\\]", re.DOTALL),
    re.compile(r"\\\(.{1,5000}?\\\)", re.DOTALL),
    re.compile(r"\\begin\{([A-Za-z]+\*?)\}.{0,5000}?\\end\{\1\}", re.DOTALL),
    # Pandoc's rule for inline $...$: no space just inside the dollars and no digit right after the closing
    # one, so "costs $3 and $4" is not math.
    re.compile(r"(?<![\\$])\$(?=\S)[^$\n]{1,500}?(?<=[^\s\\])\$(?!\d)"),
)
_INLINE_CODE_RE = re.compile(r"`[^`\n]{1,2000}`")
_URL_RE = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'`]+")
_BLANK_LINE_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A line that starts a new unit in both modes: bullets, numbered items, headings, "Step 3:".
_MARKER_LINE_RE = re.compile(
    r"^[ \t]*(?:(?:step|STEP|Step)[ \t]*\d+[ \t]*[:.)]|\d{1,3}[.)](?=\s)|[-*\u2022+](?=\s)|#{1,6}(?=\s))",
    re.MULTILINE,
)
_SENTENCE_END_CHARS = frozenset(".!?:;")


@lru_cache(maxsize=1)
def _pysbd_segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def segment(text: str, *, mode: SegmentMode = "sentences") -> list[Span]:
    """Split ``text`` into spans (sentences or reasoning steps), in order, with exact offsets.

    Args:
        text: the response as the user gave it; never modified.
        mode: ``"sentences"`` (pysbd plus the guards in the module docstring) or ``"steps"``.

    Returns:
        Non-overlapping spans in text order, each stripped of surrounding whitespace and non-empty;
        ``[]`` for empty or whitespace-only input.
    """
    if mode not in ("sentences", "steps"):
        raise ValueError(f"unknown segment mode {mode!r}; expected 'sentences' or 'steps'")
    if not text or text.isspace():
        return []
    fences = [(m.start(), m.end()) for m in _CODE_FENCE_RE.finditer(text)]
    if mode == "sentences":
        cuts = _sentence_cuts(text, fences)
        protected = fences + _protected_regions(text, inline=True)
    else:
        cuts = _step_cuts(text, fences)
        protected = fences + _protected_regions(text, inline=False)
    if fences:
        # A delimiter inside a code block (e.g. "\\[" in a regex) must not protect text after the block.
        starts = [a for a, _ in fences]
        protected = protected[: len(fences)] + [
            (a, b) for a, b in protected[len(fences) :] if not _inside(a, fences, starts)
        ]
    cuts = _drop_cuts_inside(sorted(set(cuts)), protected)
    return _spans_between(text, cuts)


def spans_from_sentences(sentences: Sequence[str], *, sep: str = " ") -> tuple[str, list[Span]]:
    """Join pre-split sentences (kept exactly as given) and return the text and their spans in it.

    Returns:
        ``(sep.join(sentences), spans)`` with ``spans[i].text == sentences[i]``.
    """
    spans: list[Span] = []
    pos = 0
    for i, sentence in enumerate(sentences):
        if i:
            pos += len(sep)
        spans.append(Span(pos, pos + len(sentence), sentence))
        pos += len(sentence)
    return sep.join(sentences), spans


# --- internals -------------------------------------------------------------------------------------------


def _protected_regions(text: str, *, inline: bool) -> list[tuple[int, int]]:
    """(start, end) ranges where no cut may fall. Display math always; inline math/code/URLs if ``inline``."""
    regions: list[tuple[int, int]] = []
    math_res = _MATH_RES if inline else _MATH_RES[:2] + _MATH_RES[3:4]
    for pattern in math_res:
        regions.extend((m.start(), m.end()) for m in pattern.finditer(text))
    if inline:
        regions.extend((m.start(), m.end()) for m in _INLINE_CODE_RE.finditer(text))
        for m in _URL_RE.finditer(text):
            # Trailing punctuation usually ends the sentence, not the URL.
            end = m.start() + len(m.group().rstrip(".,;:!?)]}"))
            regions.append((m.start(), end))
    return regions


def _inside(pos: int, regions: list[tuple[int, int]], starts: list[int]) -> bool:
    """Whether ``pos`` lies in one of the sorted, disjoint ``regions`` (``starts`` = their starts)."""
    i = bisect.bisect_right(starts, pos) - 1
    return i >= 0 and regions[i][0] <= pos < regions[i][1]


def _drop_cuts_inside(cuts: list[int], regions: list[tuple[int, int]]) -> list[int]:
    """Remove every cut strictly inside a protected region (O((cuts + regions) log cuts))."""
    if not regions or not cuts:
        return cuts
    dead = [False] * len(cuts)
    for start, end in regions:
        i = bisect.bisect_right(cuts, start)
        while i < len(cuts) and cuts[i] < end:
            dead[i] = True
            i += 1
    return [c for c, d in zip(cuts, dead, strict=True) if not d]


def _spans_between(text: str, cuts: list[int]) -> list[Span]:
    bounds = [0, *cuts, len(text)]
    spans: list[Span] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        piece = text[a:b]
        stripped = piece.strip()
        if not stripped:
            continue
        start = a + (len(piece) - len(piece.lstrip()))
        spans.append(Span(start, start + len(stripped), stripped))
    return spans


def _blocks_outside(text: str, fences: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges of ``text`` between code fences."""
    blocks, pos = [], 0
    for start, end in fences:
        if start > pos:
            blocks.append((pos, start))
        pos = end
    if pos < len(text):
        blocks.append((pos, len(text)))
    return blocks


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    paragraphs, pos = [], start
    for m in _BLANK_LINE_RE.finditer(text, start, end):
        paragraphs.append((pos, m.start()))
        pos = m.end()
    paragraphs.append((pos, end))
    return [(a, b) for a, b in paragraphs if b > a]


def _sentence_cuts(text: str, fences: list[tuple[int, int]]) -> list[int]:
    cuts: list[int] = []
    for start, end in fences:
        cuts += [start, end]
    for block_start, block_end in _blocks_outside(text, fences):
        for para_start, para_end in _paragraphs(text, block_start, block_end):
            cuts.append(para_start)
            cuts += _pysbd_cuts_windowed(text, para_start, para_end)
    return [c for c in cuts if 0 < c < len(text)]


def _pysbd_cuts_windowed(text: str, start: int, end: int) -> list[int]:
    """pysbd cuts in [start, end), fed in windows of at most ~_CHUNK_CHARS (pysbd is super-linear).

    Each window keeps every cut pysbd finds except that its last sentence (possibly truncated by the window)
    is segmented again at the start of the next window; a window with no cut at all is cut at whitespace.
    """
    cuts: list[int] = []
    while end - start > _CHUNK_CHARS:
        limit = start + _CHUNK_CHARS
        window_cuts = _pysbd_cuts(text, start, limit)
        if window_cuts:
            cuts += window_cuts
            start = window_cuts[-1]
        else:
            space = text.rfind(" ", start + 1, limit)
            start = space + 1 if space > start else limit
            cuts.append(start)
    return cuts + _pysbd_cuts(text, start, end)


def _pysbd_cuts(text: str, start: int, end: int) -> list[int]:
    """Cut positions (absolute offsets where a sentence starts) that pysbd finds in text[start:end]."""
    chunk = _join_wrapped_lines(text[start:end])
    cuts: list[int] = []
    pos = 0
    for sentence in _pysbd_segmenter().segment(chunk):
        core = sentence.strip()
        if not core:
            continue
        found = chunk.find(core, pos)
        if found < 0:
            # pysbd is configured not to alter text; if a future version does, keep the chunk whole
            # rather than emit offsets we cannot verify.
            return []
        cuts.append(start + found)
        pos = found + len(core)
    return cuts[1:]


def _join_wrapped_lines(chunk: str) -> str:
    """Replace newlines inside wrapped prose by spaces (same length) so pysbd does not cut there."""
    if "\n" not in chunk:
        return chunk
    lines = chunk.split("\n")
    out = [lines[0]]
    for prev, line in zip(lines[:-1], lines[1:], strict=True):
        tail = prev.rstrip()
        head = line.lstrip()
        wrapped = (
            tail
            and head
            and tail[-1] not in _SENTENCE_END_CHARS
            and head[0].islower()
            and not _MARKER_LINE_RE.match(line)
        )
        out.append((" " if wrapped else "\n") + line)
    return "".join(out)


def _step_cuts(text: str, fences: list[tuple[int, int]]) -> list[int]:
    cuts: list[int] = []
    for start, end in fences:
        cuts += [start, end]
    blocks = _blocks_outside(text, fences)
    has_markers = any(_MARKER_LINE_RE.search(text, a, b) for a, b in blocks)
    has_blank = any(_BLANK_LINE_RE.search(text, a, b) for a, b in blocks)
    for block_start, block_end in blocks:
        for para_start, para_end in _paragraphs(text, block_start, block_end):
            cuts.append(para_start)
            if has_markers:
                cuts += [m.start() for m in _MARKER_LINE_RE.finditer(text, para_start, para_end)]
            elif not has_blank:
                pos = text.find("\n", para_start, para_end)
                while pos >= 0:
                    cuts.append(pos + 1)
                    pos = text.find("\n", pos + 1, para_end)
    return [c for c in cuts if 0 < c < len(text)]
