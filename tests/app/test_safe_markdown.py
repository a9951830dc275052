"""Guidelines are Markdown from users: every XSS payload renders as text, links cannot run code."""

from __future__ import annotations

import re

import pytest

from app.safe_markdown import render_markdown
from tests.app.xss_payloads import LATEX_PAYLOADS, XSS_PAYLOADS

ALLOWED_TAGS = {
    "p",
    "h1",
    "h2",
    "h3",
    "em",
    "strong",
    "code",
    "pre",
    "ul",
    "ol",
    "li",
    "a",
    "blockquote",
    "hr",
    "br",
}


@pytest.mark.parametrize("payload", XSS_PAYLOADS + LATEX_PAYLOADS)
def test_payloads_render_as_inert_text(payload: str) -> None:
    html = render_markdown(f"# Guide\n\n{payload}\n\n- item {payload}")
    tags = {t.lower() for t in re.findall(r"<\s*/?\s*([a-zA-Z0-9]+)", html)}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    # Real tags (escaped text shows as &lt;...) carry no attribute but a link's own.
    for _, attrs in re.findall(r"<([a-zA-Z0-9]+)((?:\s[^>]*)?)>", html):
        assert set(re.findall(r"([a-zA-Z-]+)=", attrs)) <= {"href", "rel", "target", "class"}, attrs
    assert "javascript:" not in " ".join(re.findall(r'href="([^"]*)"', html)).lower()
    assert "<img" not in html and "<script" not in html


def test_markdown_formatting_and_safe_links_survive() -> None:
    html = render_markdown(
        "# Rules\n\nMark the **first** wrong step. See [the paper](https://example.org/x)."
    )
    assert "<h1>Rules</h1>" in html and "<strong>first</strong>" in html
    assert 'href="https://example.org/x"' in html and 'rel="noopener noreferrer nofollow"' in html
