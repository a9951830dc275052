"""Hostile strings that must render as inert text, shared by the unit and the browser XSS tests.

Each payload, if it were interpreted, would either open a dialog (``alert``/``confirm``/``prompt``) or create an
element with id or class ``pwned``; the browser test checks for both.
"""

from __future__ import annotations

XSS_PAYLOADS: tuple[str, ...] = (
    "<script>alert('xss-1')</script>",
    '<img src=x onerror="alert(\'xss-2\')" class="pwned">',
    '</span></div><script>alert("xss-3")</script><div id="pwned">',
    '<a href="javascript:alert(\'xss-4\')" id="pwned">click me</a>',
    '<div style="background:url(javascript:alert(5))" id="pwned">css</div><style>body{display:none}</style>',
    "[click](javascript:alert('xss-6')) and ![img](x onerror=alert(6))",
    "$\\href{javascript:alert(7)}{x}$ and $$\\frac{1}{0}$$ \\(x^2\\)",
    '<svg onload="alert(\'xss-8\')" id="pwned"></svg>',
    '"><iframe src="javascript:alert(9)" id="pwned"></iframe>',
    '<details open ontoggle="confirm(\'xss-10\')" id="pwned">',
    "&lt;script&gt;alert(11)&lt;/script&gt; &amp; &#60;b&#62;",
    '<math><mtext><table><mglyph><style><img src=x onerror="prompt(12)" id="pwned">',
    '` <b id="pwned">bold</b> ` **markdown** <!-- comment --> {{7*7}}',
)

LATEX_PAYLOADS: tuple[str, ...] = (
    "$\\href{javascript:alert('tex-1')}{click}$",
    "$$\\href{javascript:alert(2)}{\\text{click}}$$",
    "\\(\\style{background:url(javascript:alert(3))}{x}\\)",
    "$\\class{pwned}{x}$",
    "$\\unicode{x3C}script\\unicode{x3E}alert(5)$",
    "$<script>alert('tex-6')</script>$",
    "$\\text{<img src=x onerror=alert(7) class=pwned>}$",
    "\\[\\text{</mtext></math><img src=x onerror=alert(8) id=pwned>}\\]",
    "$x^{<svg onload=alert(9) id=pwned>}$",
    "$\\mathrm{&lt;b id=pwned&gt;}$ \\(\\color{javascript:alert(10)}{x}\\)",
    "$\\toggle{x}{y}\\endtoggle$ $\\mathtip{x}{<b id=pwned>tip</b>}$",
)
"""LaTeX that must never become a link, a style, a class, an event handler or a tag: a formula either renders
as allow-listed MathML or stays escaped source text."""
