"""app.render: highlighted response HTML is well formed, uses fixed markup only, and keeps hostile text inert."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from app import render
from tests.app.xss_payloads import XSS_PAYLOADS

ALLOWED_TAGS = {"div", "span"}
ALLOWED_ATTRS = {"id", "class", "tabindex", "title"}


class _Collector(HTMLParser):
    """Collects tags, attributes and the text content exactly as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.depth = 0
        self.skip = 0  # inside fs-idx / fs-gold decorations, which are not part of the response text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        self.tags.append((tag, d))
        self.depth += 1
        cls = d.get("class") or ""
        if self.skip or "fs-idx" in cls or "fs-gold" in cls:
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1
        if self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.text.append(data)


def _parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def _spans_for(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for p in pieces:
        start = text.index(p, pos)
        spans.append((start, start + len(p)))
        pos = start + len(p)
    return spans


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_payload_is_inert_text(payload: str) -> None:
    text = f"Intro sentence. {payload} Trailing words."
    spans = _spans_for(text, ["Intro sentence.", payload, "Trailing words."])
    html = render.render_response(text, spans, [0.1, 0.9, None], [None, 1, 0], focus=1)
    parsed = _parse(html)
    # Only our own tags and attributes exist, and tags are balanced: no payload closed or opened anything.
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    assert all(set(a) <= ALLOWED_ATTRS for _, a in parsed.tags)
    assert parsed.depth == 0
    assert not any("pwned" in (a.get("id") or "") + (a.get("class") or "") for _, a in parsed.tags)
    # The visible text is exactly the user's text, character for character.
    assert "".join(parsed.text) == text


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_context_and_legend_escape(payload: str) -> None:
    for html in (render.render_context(payload), render.render_legend(positive_name=payload)):
        parsed = _parse(html)
        assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
        assert parsed.depth == 0
        assert payload in "".join(parsed.text)


def test_at_least_ten_payloads_cover_the_classes() -> None:
    joined = "\n".join(XSS_PAYLOADS)
    assert len(XSS_PAYLOADS) >= 10
    for needle in (
        "<script>",
        "onerror",
        "</span>",
        "javascript:",
        "style",
        "](",
        "\\frac",
        "<svg",
        "<iframe",
    ):
        assert needle in joined


def test_colour_bins_and_uncertainty_outline() -> None:
    text = "a. b. c. d."
    spans = _spans_for(text, ["a.", "b.", "c.", "d."])
    html = render.render_response(text, spans, [0.0, 0.5, 0.97, float("nan")], None)
    tags = [a for t, a in _parse(html).tags if "fs-sent" in (a.get("class") or "")]
    classes = [set((a["class"] or "").split()) for a in tags]
    assert {"fs-s0", "fs-u0"} <= classes[0]
    assert {"fs-s5", "fs-u2"} <= classes[1]
    assert {"fs-s9", "fs-u0"} <= classes[2]
    assert {"fs-none", "fs-u0"} <= classes[3]
    assert [a["id"] for a in tags] == ["fs-sent-0", "fs-sent-1", "fs-sent-2", "fs-sent-3"]
    assert all(a["tabindex"] == "0" for a in tags)


def test_focus_and_gold_markers() -> None:
    text = "One. Two."
    html = render.render_response(text, _spans_for(text, ["One.", "Two."]), [0.2, 0.8], [0, 1], focus=1)
    tags = _parse(html).tags
    sent = [a for _, a in tags if "fs-sent" in (a.get("class") or "")]
    assert "fs-focus" not in (sent[0]["class"] or "")
    assert "fs-focus" in (sent[1]["class"] or "")
    gold = [a["class"] for _, a in tags if "fs-gold" in (a.get("class") or "")]
    assert gold == ["fs-gold fs-gold-0", "fs-gold fs-gold-1"]


def test_score_bin_edges() -> None:
    assert render.score_bin(None) is None
    assert render.score_bin(float("inf")) is None
    assert render.score_bin(-0.3) == 0
    assert render.score_bin(1.0) == render.N_BINS - 1
    assert render.score_bin(0.0999) == 0
    assert render.score_bin(0.1) == 1
    assert render.uncertainty(0.5) == pytest.approx(1.0)
    assert render.uncertainty(1.0) == pytest.approx(0.0)


def test_text_between_sentences_kept_verbatim() -> None:
    text = "  Lead <b>in</b>\n\nFirst.\tSecond.  tail & more"
    spans = _spans_for(text, ["First.", "Second."])
    parsed = _parse(render.render_response(text, spans, None, None, show_index=False))
    assert "".join(parsed.text) == text


@pytest.mark.parametrize(
    ("spans", "scores", "labels"),
    [
        ([(3, 2)], None, None),
        ([(0, 99)], None, None),
        ([(0, 2), (1, 3)], None, None),
        ([(0, 2)], [0.1, 0.2], None),
        ([(0, 2)], None, [1, 0]),
    ],
)
def test_bad_spans_or_lengths_raise(spans, scores, labels) -> None:
    with pytest.raises(ValueError):
        render.render_response("abcdef", spans, scores, labels)


@pytest.mark.parametrize("prefix", ['x" onmouseover="alert(1)', "Upper", "", "1abc", "a b"])
def test_id_prefix_is_validated(prefix: str) -> None:
    with pytest.raises(ValueError):
        render.render_response("a", [(0, 1)], prefix=prefix)


def test_css_has_one_rule_per_bin() -> None:
    for i in range(render.N_BINS):
        assert f".fs-s{i}{{" in render.CSS
