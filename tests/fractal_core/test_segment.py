"""Segmentation: exact offsets, LLM-style text, steps mode, pre-split input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fractal_core.data.records import Span
from fractal_core.data.segment import SEGMENTER_VERSION, segment, spans_from_sentences


def texts(text: str, mode: str = "sentences") -> list[str]:
    spans = segment(text, mode=mode)  # type: ignore[arg-type]
    assert_valid(text, spans)
    return [s.text for s in spans]


def assert_valid(text: str, spans: list[Span]) -> None:
    """Offsets map back exactly, spans are stripped, non-empty, ordered and disjoint."""
    prev_end = 0
    for span in spans:
        assert text[span.start : span.end] == span.text
        assert span.text and span.text == span.text.strip()
        assert span.start >= prev_end
        prev_end = span.end


def test_version_names_pysbd() -> None:
    assert SEGMENTER_VERSION.startswith("pysbd-")


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \n"])
def test_empty_input_gives_no_spans(text: str) -> None:
    assert segment(text) == []
    assert segment(text, mode="steps") == []


def test_plain_sentences_and_abbreviations() -> None:
    text = "Dr. Smith went to Washington D.C. yesterday. He paid $3.50, i.e. too much! Was it e.g. fair? Yes."
    assert texts(text) == [
        "Dr. Smith went to Washington D.C. yesterday.",
        "He paid $3.50, i.e. too much!",
        "Was it e.g. fair?",
        "Yes.",
    ]


def test_urls_are_not_split() -> None:
    text = "See https://example.com/a.b?c=1.d for details. Then www.foo.org/x.y works."
    assert texts(text) == ["See https://example.com/a.b?c=1.d for details.", "Then www.foo.org/x.y works."]


def test_latex_math_is_never_split() -> None:
    text = (
        "We have \\( x = 1. \\) so far. Display \\[ a. B = c. \\] ends. "
        "Inline $x. Y$ too. And $$\nu. V\n\nw. W\n$$ done. "
        "\\begin{align} p. Q \\end{align} last."
    )
    assert texts(text) == [
        "We have \\( x = 1. \\) so far.",
        "Display \\[ a. B = c. \\] ends.",
        "Inline $x. Y$ too.",
        "And $$\nu. V\n\nw. W\n$$ done.",
        "\\begin{align} p. Q \\end{align} last.",
    ]


def test_dollar_amounts_are_not_math() -> None:
    assert texts("It costs $3. Then $4 more. Done.") == ["It costs $3.", "Then $4 more.", "Done."]


def test_code_fence_is_one_unit() -> None:
    text = "Here is code:\n```python\nx = 1. \nprint(x)\n\ny = 2\n```\nDone. Really."
    assert texts(text) == ["Here is code:", "```python\nx = 1. \nprint(x)\n\ny = 2\n```", "Done.", "Really."]


def test_unterminated_code_fence_runs_to_end() -> None:
    text = "Intro.\n```\na. B. c.\n\nd."
    assert texts(text) == ["Intro.", "```\na. B. c.\n\nd."]


def test_delimiters_inside_code_do_not_protect_text_after_it() -> None:
    text = "Regex:\n```\nx = '\\['\n```\nThen. \\] More."
    assert texts(text) == ["Regex:", "```\nx = '\\['\n```", "Then.", "\\] More."]


def test_bullets_and_numbered_lists() -> None:
    text = "Steps:\n- first item\n- second item\n* third\n1. one\n2) two\n# Heading\nEnd."
    assert texts(text) == [
        "Steps:",
        "- first item",
        "- second item",
        "* third",
        "1. one",
        "2) two",
        "# Heading",
        "End.",
    ]


def test_wrapped_prose_is_joined_but_paragraphs_split() -> None:
    text = "This is a long\nsentence that wraps. And another.\n\nNew paragraph without a period\n\nLast"
    assert texts(text) == [
        "This is a long\nsentence that wraps.",
        "And another.",
        "New paragraph without a period",
        "Last",
    ]


def test_leading_and_trailing_whitespace_is_stripped_from_spans() -> None:
    text = "   Leading space.   Trailing.  \n"
    spans = segment(text)
    assert [s.text for s in spans] == ["Leading space.", "Trailing."]
    assert spans[0].start == 3


def test_huge_input_is_segmented_exactly() -> None:
    # 120k+ characters in one paragraph: pysbd alone is super-linear here; windows keep it fast (speed is in
    # benchmarks; this checks the windowing is exact).
    sentence = "This is a sentence about Dr. Who and the U.S.A. economy. "
    text = sentence * 2200
    got = texts(text)
    assert len(got) == 2200
    assert set(got) == {sentence.strip()}


def test_huge_unpunctuated_input_is_cut_at_whitespace() -> None:
    text = "word " * 30000
    spans = segment(text)
    assert_valid(text, spans)
    assert sum(len(s.text.split()) for s in spans) == 30000


def test_steps_with_markers_keep_continuation_lines() -> None:
    text = "Step 1: add 2 and 3.\nThat gives 5.\nStep 2: multiply. So 10.\n\nStep 3: done"
    assert texts(text, "steps") == [
        "Step 1: add 2 and 3.\nThat gives 5.",
        "Step 2: multiply. So 10.",
        "Step 3: done",
    ]


def test_steps_numbered_lines() -> None:
    text = "1. Compute x.\n   x = 5\n2) Then y.\n3. Answer: 7"
    assert texts(text, "steps") == ["1. Compute x.\n   x = 5", "2) Then y.", "3. Answer: 7"]


def test_steps_blank_lines_when_no_markers() -> None:
    text = "First we add.\nstill first.\n\nThen we multiply. More.\n\n\nDone."
    assert texts(text, "steps") == ["First we add.\nstill first.", "Then we multiply. More.", "Done."]


def test_steps_newlines_when_no_markers_and_no_blank_lines() -> None:
    assert texts("First we add.\nThen we multiply.\nDone.", "steps") == [
        "First we add.",
        "Then we multiply.",
        "Done.",
    ]


def test_steps_do_not_cut_display_math_or_code() -> None:
    text = "Step 1: solve\n\\[\nx = 1\n\n2. y\n\\]\nStep 2: code\n```\n1. not a step\n```"
    assert texts(text, "steps") == [
        "Step 1: solve\n\\[\nx = 1\n\n2. y\n\\]",
        "Step 2: code",
        "```\n1. not a step\n```",
    ]


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        segment("x", mode="words")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("ab .!?\n\t$\\[]()`-*1#:") + ["Dr.", "```", "\\(", "\\)", "$$", "http://x.y"]),
        max_size=150,
    ).map("".join),
    st.sampled_from(["sentences", "steps"]),
)
def test_offsets_round_trip_on_random_text(text: str, mode: str) -> None:
    spans = segment(text, mode=mode)  # type: ignore[arg-type]
    assert_valid(text, spans)
    # Nothing but whitespace is lost between spans.
    covered = "".join(s.text for s in spans)
    assert "".join(text.split()) == "".join(covered.split())


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=400))
def test_offsets_round_trip_on_arbitrary_unicode(text: str) -> None:
    spans = segment(text)
    assert_valid(text, spans)
    assert "".join(text.split()) == "".join("".join(s.text for s in spans).split())


def test_spans_from_sentences_keeps_input_as_given() -> None:
    sentences = ["First one.", "  spaced  ", "", "Last"]
    text, spans = spans_from_sentences(sentences)
    assert text == "First one.   spaced    Last"
    assert [s.text for s in spans] == sentences
    assert all(text[s.start : s.end] == s.text for s in spans)
    text, spans = spans_from_sentences(["a", "b"], sep="\n\n")
    assert text == "a\n\nb" and spans == [Span(0, 1, "a"), Span(3, 4, "b")]
    assert spans_from_sentences([]) == ("", [])
