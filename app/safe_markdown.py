"""Markdown written by users (dataset guidelines) rendered without letting markup through.

markdown-it-py in CommonMark mode with raw HTML off: ``<script>`` and every other tag come out as text, link
targets are checked by its ``validateLink`` (no ``javascript:``, ``vbscript:``, ``file:`` or ``data:`` URLs),
and images are switched off so a guideline cannot make every reader's browser fetch a remote address.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")


def render_markdown(text: str) -> str:
    """HTML for ``text``: headings, emphasis, lists, code and checked links; never raw markup."""
    html = _md.render(text or "")
    # Links open in a new tab without handing over this page (rel=noopener), and never follow as referrer.
    return html.replace("<a href=", '<a rel="noopener noreferrer nofollow" target="_blank" href=')
