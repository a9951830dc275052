"""Merging and splitting sentences by hand: offsets stay slices of the text, bad edits are refused."""

from __future__ import annotations

import pytest

from fractal_core.data.records import Span
from fractal_core.data.segment_edit import (
    check_spans,
    merge_edit,
    revert_edit,
    split_edit,
    split_parts,
)
from fractal_core.errors import InputError

TEXT = "First step.  Second step, with more. Third."


def spans_of(text: str, parts: list[str]) -> list[Span]:
    out, at = [], 0
    for p in parts:
        start = text.index(p, at)
        out.append(Span(start, start + len(p), p))
        at = start + len(p)
    return out


SPANS = spans_of(TEXT, ["First step.", "Second step, with more.", "Third."])


def test_merge_joins_two_neighbours_with_what_lies_between() -> None:
    edit = merge_edit(TEXT, SPANS, 0)
    after = edit.apply(SPANS)
    assert [s.text for s in after] == ["First step.  Second step, with more.", "Third."]
    assert edit.removed == tuple(SPANS[:2]) and edit.position == 0 and edit.offset is None
    check_spans(TEXT, after)


def test_merge_needs_a_next_sentence_and_an_existing_one() -> None:
    with pytest.raises(InputError, match="last one"):
        merge_edit(TEXT, SPANS, 2)
    with pytest.raises(InputError, match="sentence 4 does not exist"):
        merge_edit(TEXT, SPANS, 3)
    with pytest.raises(InputError, match="does not exist"):
        merge_edit(TEXT, SPANS, -1)


def test_split_cuts_inside_and_strips_the_whitespace_at_the_cut() -> None:
    offset = SPANS[1].text.index("with")  # "Second step, |with more."
    edit = split_edit(TEXT, SPANS, 1, offset)
    after = edit.apply(SPANS)
    assert [s.text for s in after] == ["First step.", "Second step,", "with more.", "Third."]
    check_spans(TEXT, after)
    assert after[1].end - after[1].start == len("Second step,")  # the space at the cut belongs to neither
    assert edit.offset == offset


@pytest.mark.parametrize("offset", [0, len("Third."), 99, -2])
def test_split_offset_must_lie_strictly_inside(offset: int) -> None:
    with pytest.raises(InputError, match="strictly inside") as err:
        split_edit(TEXT, SPANS, 2, offset)
    assert err.value.field == "at"


def test_split_refuses_a_blank_part() -> None:
    # A stored sentence never starts or ends with whitespace, so only a raw string can leave a blank part.
    assert split_parts("A    b.", 1) == ("A", "b.")
    with pytest.raises(InputError, match="whitespace"):
        split_parts("x   ", 1)
    with pytest.raises(InputError, match="whitespace"):
        split_parts("   y", 2)


def test_undo_restores_the_spans_and_refuses_when_they_changed() -> None:
    split = split_edit(TEXT, SPANS, 1, 5)
    after = split.apply(SPANS)
    undo = revert_edit(after, split)
    assert undo.kind == "undo" and undo.apply(after) == SPANS
    merged = merge_edit(TEXT, after, 0).apply(after)
    with pytest.raises(InputError, match="changed since"):
        revert_edit(merged, split)


def test_apply_refuses_spans_that_are_not_the_ones_it_replaces() -> None:
    edit = merge_edit(TEXT, SPANS, 0)
    with pytest.raises(InputError, match="changed since"):
        edit.apply(SPANS[1:])


def test_check_spans_refuses_overlap_and_wrong_text() -> None:
    with pytest.raises(InputError, match="overlaps"):
        check_spans(TEXT, [SPANS[1], SPANS[0]])
    with pytest.raises(InputError, match="not the text"):
        check_spans(TEXT, [Span(0, 5, "Wrong")])
    with pytest.raises(InputError, match="at least one"):
        check_spans(TEXT, [])
