"""Fixing a bad split by hand: merge two neighbouring sentences, or split one at a character offset.

Pure span arithmetic (no numpy, no store): every function takes a response's ``text`` and its current spans
(``Span(start, end, text)`` with ``text == response_text[start:end]``, ordered, not overlapping) and returns a
:class:`SpanEdit`, the run of spans it replaces and the spans that replace it. The store
(``db.repository.segment_edits``) applies it to its sentence rows; positions are 0-based here (people count
sentences from 1, the callers translate).

- **merge** at position ``i`` replaces spans ``i`` and ``i + 1`` with one span from the start of the first to
  the end of the second (the characters between them, usually a space, become part of it). Needs a next
  sentence.
- **split** of position ``i`` at ``offset`` (characters from the sentence's start, ``0 < offset < len``)
  replaces span ``i`` with ``[start, start + offset)`` and ``[start + offset, end)``, each stripped of the
  whitespace at the cut (spans never start or end with whitespace, like the segmenter's). Both parts must hold
  more than whitespace.
- **undo** (:func:`revert_edit`) puts back the spans an edit replaced, when the response still has the spans
  that edit made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fractal_core.data.records import Span
from fractal_core.errors import InputError

EDIT_KINDS: tuple[str, ...] = ("merge", "split", "undo")


@dataclass(frozen=True, slots=True)
class SpanEdit:
    """Spans ``removed`` (at ``position`` onwards) replaced by ``added``; ``offset`` for a split."""

    kind: str
    position: int
    removed: tuple[Span, ...]
    added: tuple[Span, ...]
    offset: int | None = None

    def apply(self, spans: Sequence[Span]) -> list[Span]:
        """The response's spans after the edit."""
        end = self.position + len(self.removed)
        if tuple(spans[self.position : end]) != self.removed:
            raise InputError("the sentences changed since this edit was made", field="sentence")
        return [*spans[: self.position], *self.added, *spans[end:]]


def check_spans(text: str, spans: Sequence[Span]) -> None:
    """Refuse spans that are not ordered, non-empty, non-overlapping slices of ``text`` (InputError)."""
    if not spans:
        raise InputError("a response needs at least one sentence", field="sentences")
    previous_end = 0
    for i, s in enumerate(spans):
        if not 0 <= s.start < s.end <= len(text) or text[s.start : s.end] != s.text:
            raise InputError(f"sentence {i + 1} is not the text at [{s.start}, {s.end})", field="sentences")
        if s.start < previous_end:
            raise InputError(f"sentence {i + 1} overlaps the one before it", field="sentences")
        previous_end = s.end


def _sentence(spans: Sequence[Span], position: int) -> Span:
    if not 0 <= position < len(spans):
        raise InputError(
            f"sentence {position + 1} does not exist (the response has {len(spans)})", field="sentence"
        )
    return spans[position]


def _stripped(text: str, start: int, end: int) -> Span | None:
    """``text[start:end]`` without surrounding whitespace, as a span; None when nothing else is left."""
    part = text[start:end]
    lead = len(part) - len(part.lstrip())
    trail = len(part) - len(part.rstrip())
    if lead == len(part):
        return None
    return Span(start + lead, end - trail, text[start + lead : end - trail])


def merge_edit(text: str, spans: Sequence[Span], position: int) -> SpanEdit:
    """Merge sentence ``position`` with the next one."""
    first = _sentence(spans, position)
    if position + 1 >= len(spans):
        raise InputError(
            f"sentence {position + 1} is the last one: there is no next sentence to merge with",
            field="sentence",
        )
    second = spans[position + 1]
    merged = Span(first.start, second.end, text[first.start : second.end])
    return SpanEdit("merge", position, (first, second), (merged,))


def split_parts(sentence: str, offset: int) -> tuple[str, str]:
    """The two parts a split of ``sentence`` at ``offset`` gives (stripped), or InputError saying why not."""
    if not 0 < offset < len(sentence):
        raise InputError(
            f"the split offset must lie strictly inside the sentence (1..{len(sentence) - 1}), got {offset}",
            field="at",
        )
    left, right = sentence[:offset].strip(), sentence[offset:].strip()
    if not left or not right:
        raise InputError(f"a split at {offset} leaves a part with nothing but whitespace", field="at")
    return left, right


def split_edit(text: str, spans: Sequence[Span], position: int, offset: int) -> SpanEdit:
    """Split sentence ``position`` at ``offset`` characters from its start."""
    s = _sentence(spans, position)
    split_parts(s.text, offset)
    left = _stripped(text, s.start, s.start + offset)
    right = _stripped(text, s.start + offset, s.end)
    assert left is not None and right is not None  # split_parts refused blank parts
    return SpanEdit("split", position, (s,), (left, right), offset)


def revert_edit(spans: Sequence[Span], edit: SpanEdit) -> SpanEdit:
    """The undo of ``edit``: its new spans replaced by the ones it removed. InputError when the response no
    longer has the spans ``edit`` made (a later edit changed them)."""
    end = edit.position + len(edit.added)
    if tuple(spans[edit.position : end]) != edit.added:
        raise InputError(
            "the sentences changed since that edit; undo the later edits first", field="sentence"
        )
    return SpanEdit("undo", edit.position, edit.added, edit.removed, edit.offset)
