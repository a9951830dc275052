"""app.render: highlighted response HTML is well formed, uses fixed markup only, and keeps hostile text inert;
formulas become allow-listed MathML (or stay source text), never live markup."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from app import mathml, render
from tests.app.xss_payloads import LATEX_PAYLOADS, XSS_PAYLOADS

OUR_TAGS = {"div", "span"}
OUR_ATTRS = {"id", "class", "tabindex", "title", "dir"}
# Written out here rather than imported, so the test checks the renderer against an independent list.
MATHML_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mspace", "mtext", "msub", "msup", "msubsup", "mfrac", "msqrt",
    "mroot", "mstyle", "merror", "mpadded", "mphantom", "menclose", "munder", "mover", "munderover", "mtable",
    "mtr", "mtd", "mlabeledtr", "mmultiscripts", "mprescripts", "none",
}  # fmt: skip
MATHML_ATTRS = {
    "xmlns", "display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "form", "largeop",
    "movablelimits", "accent", "accentunder", "linethickness", "displaystyle", "scriptlevel", "columnalign",
    "rowalign", "columnspacing", "rowspacing", "columnlines", "rowlines", "frame", "notation", "width",
    "height", "depth", "minsize", "maxsize", "symmetric", "linebreak", "voffset",
}  # fmt: skip
ALLOWED_TAGS = OUR_TAGS | MATHML_TAGS


def _attrs_ok(tag: str, attrs: dict[str, str | None]) -> bool:
    allowed = OUR_ATTRS if tag in OUR_TAGS else MATHML_ATTRS
    if not set(attrs) <= allowed:
        return False
    if tag == "math" and attrs.get("xmlns") not in (None, "http://www.w3.org/1998/Math/MathML"):
        return False
    # A title is text (a formula's source may mention anything); every other value is markup we chose.
    values = " ".join(v or "" for k, v in attrs.items() if k != "title").lower()
    return "javascript" not in values and "pwned" not in values


class _Collector(HTMLParser):
    """Collects tags, attributes and the text content exactly as a browser's parser would see them.

    A rendered formula (``fs-math``) counts as its source, which the renderer keeps in the title."""

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
        if not self.skip and "fs-math" in cls.split():
            self.text.append(d.get("title") or "")
            self.skip += 1
        elif self.skip or "fs-idx" in cls or "fs-gold" in cls:
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


@pytest.mark.parametrize("payload", XSS_PAYLOADS + LATEX_PAYLOADS)
def test_payload_is_inert_text(payload: str) -> None:
    text = f"Intro sentence. {payload} Trailing words."
    spans = _spans_for(text, ["Intro sentence.", payload, "Trailing words."])
    html = render.render_response(text, spans, [0.1, 0.9, None], [None, 1, 0], focus=1)
    parsed = _parse(html)
    # Only our own tags and allow-listed MathML exist, with allowed attributes, and tags are balanced: no
    # payload closed or opened anything.
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    assert all(_attrs_ok(t, a) for t, a in parsed.tags), [
        (t, a) for t, a in parsed.tags if not _attrs_ok(t, a)
    ]
    assert parsed.depth == 0
    # The visible text is exactly the user's text, character for character (a formula by its source).
    assert "".join(parsed.text) == text
    assert [a["id"] for _, a in parsed.tags if "fs-sent" in (a.get("class") or "").split()] == [
        "fs-sent-0",
        "fs-sent-1",
        "fs-sent-2",
    ]


@pytest.mark.parametrize("payload", XSS_PAYLOADS + LATEX_PAYLOADS)
def test_context_and_legend_escape(payload: str) -> None:
    for html in (render.render_context(payload), render.render_legend(positive_name=payload)):
        parsed = _parse(html)
        assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
        assert all(_attrs_ok(t, a) for t, a in parsed.tags)
        assert parsed.depth == 0
        assert payload in "".join(parsed.text)


@pytest.mark.parametrize(
    ("source", "latex", "display"),
    [
        ("$x^2$", "x^2", False),
        ("\\(a+b\\)", "a+b", False),
        ("\\[\\frac{1}{2}\\]", "\\frac{1}{2}", True),
        ("$$\\sqrt{3}$$", "\\sqrt{3}", True),
        ("\\begin{align*}a&=b\\\\c&=d\\end{align*}", "\\begin{align*}a&=b\\\\c&=d\\end{align*}", True),
    ],
)
def test_each_delimiter_renders_mathml_inside_its_sentence(source: str, latex: str, display: bool) -> None:
    text = f"First {source} here. Second."
    spans = _spans_for(text, [f"First {source} here.", "Second."])
    [seg] = mathml.find_math(text)
    assert (text[seg.start : seg.end], seg.latex, seg.display) == (source, latex, display)
    html = render.render_response(text, spans, [0.9, 0.1], None, focus=0)
    parsed = _parse(html)
    assert "math" in {t for t, _ in parsed.tags}
    assert ("mi" in html or "mn" in html) and "\\" not in html.split("<math", 1)[1].split("</math>")[0]
    assert "".join(parsed.text) == text  # offsets and highlight spans unchanged
    # The formula sits inside sentence 0's text span, before sentence 1 starts.
    assert html.index("<math") > html.index('id="fs-sent-0"') and html.index("</math>") < html.index(
        'id="fs-sent-1"'
    )
    assert ("fs-math-block" in html) == display


@pytest.mark.parametrize(
    "text",
    [
        "It costs $5 and $10 in total.",  # currency, not a formula
        "Escaped \\$x\\$ stays.",
        "Broken $\\frac{1}{$ formula.",
        "Unknown $\\foo{x}$ command.",
        "Empty $$ $$ formula.",
    ],
)
def test_text_that_is_not_a_formula_stays_source(text: str) -> None:
    html = render.render_response(text, [(0, len(text))])
    assert "<math" not in html
    assert "".join(_parse(html).text) == text


def test_formula_across_a_sentence_boundary_stays_source() -> None:
    text = "We get $a. b$ next."
    spans = _spans_for(text, ["We get $a.", "b$ next."])
    html = render.render_response(text, spans)
    assert "<math" not in html and "".join(_parse(html).text) == text


def test_sanitiser_refuses_anything_outside_the_allow_list() -> None:
    ok = '<math xmlns="http://www.w3.org/1998/Math/MathML"><mi>x</mi></math>'
    assert mathml.sanitise_mathml(ok) == ok
    for bad in (
        '<math><mrow href="javascript:alert(1)"><mi>x</mi></mrow></math>',
        '<math><mi style="color:red">x</mi></math>',
        '<math><mi onclick="alert(1)">x</mi></math>',
        '<math><maction actiontype="toggle"><mi>x</mi></maction></math>',
        "<math><mi>x</mi><img src=x onerror=alert(1)></math>",
        '<math xmlns="http://evil"><mi>x</mi></math>',
        "<math><mi>x</mo></math>",
        "<math><!-- c --><mi>x</mi></math>",
        "<mi>x</mi>",
        '<math><mi mathvariant="a&quot;b">x</mi></math>',
    ):
        assert mathml.sanitise_mathml(bad) is None, bad


def test_right_to_left_sentences_are_isolated() -> None:
    text = "First. \u0645\u0631\u062d\u0628\u0627. \u05e9\u05dc\u05d5\u05dd."
    spans = _spans_for(text, ["First.", "\u0645\u0631\u062d\u0628\u0627.", "\u05e9\u05dc\u05d5\u05dd."])
    tags = _parse(render.render_response(text, spans)).tags
    txt = [a for _, a in tags if (a.get("class") or "") == "fs-txt"]
    assert len(txt) == 3 and all(a.get("dir") == "auto" for a in txt)
    assert (
        ".fs-txt{unicode-bidi:isolate}" in render.CSS
        and "unicode-bidi:isolate}" in render.CSS.split(".fs-sent{")[1].split("}")[0] + "}"
    )


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


def test_shared_id_prefix_and_column_width() -> None:
    assert render.shared_id_prefix(["processbench/math-1", "processbench/omnimath-2"]) == "processbench/"
    assert render.shared_id_prefix(["r001", "r002"]) == ""  # no separator: nothing to cut
    assert render.shared_id_prefix(["a/b", "a/"]) == ""  # would leave an empty id
    assert render.shared_id_prefix(["only/one"]) == ""
    assert render.text_width_px(["x" * 100]) == 200 and render.text_width_px([]) == 60
    assert render.plural(1, "response") == "1 response" and render.plural(0, "response") == "0 responses"


def test_array_idioms_of_math_datasets_render() -> None:
    # ProcessBench-style column layout: @{...} spacers and \cline, unknown to the converter as written.
    text = "$$\\begin{array}{@{}c@{\\;}c} 1 & 2_b \\\\ \\cline{1-2} 3 & 4 \\end{array}$$"
    html = render.render_rich_text(text)
    assert "<mtable" in html and "@" not in html.split("<math", 1)[1]


# ------------------------------------------------------------------------------------------------ defects


def test_boxed_answers_render_as_math() -> None:
    html = render.render_rich_text(r"So the answer is \boxed{\frac{1}{2}}.")
    assert "<menclose" in html and html.startswith('So the answer is <span class="fs-math"')
    assert "menclose{" in render.CSS_RULES  # drawn as a box (Chromium draws none for menclose)


def test_long_display_formulas_scroll_instead_of_being_cut() -> None:
    rule = next(r for r in render.CSS_RULES.split("}") if r.startswith(".fs-math-block{"))
    assert "overflow-x:auto" in rule and "max-width:100%" in rule


@pytest.mark.parametrize("selector", [".fs-response{", ".fs-legend{", ".fs-context{", ".fs-none{"])
def test_boxes_and_legend_follow_the_page_colours_in_dark_mode(selector: str) -> None:
    """Only the score bins carry fixed colours; boxes and the legend take the page's text colour and no white."""
    rule = next(r for r in render.CSS_RULES.split("}") if r.startswith(selector))
    assert "background:#fff" not in rule and "color:#111" not in rule and "color:#333" not in rule
    if "color:" in rule.replace("background", ""):
        assert "color:inherit" in rule
