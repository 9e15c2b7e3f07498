"""Message rendering: Markdown to HTML with highlighted code, and nothing executable ever comes out."""

from __future__ import annotations

import re

import pytest

from galerne.web.markdown import render_markdown

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](  javascript:alert(1))",
    "<a href='javascript:alert(1)'>x</a>",
    '<svg onload="alert(1)"></svg>',
    "<iframe src='https://example.org'></iframe>",
    '[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)',
    "![img](javascript:alert(1))",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "```html\n<script>alert(1)</script>\n```",
    "`<script>alert(1)</script>`",
]


_TAG = re.compile(r"<([a-z][a-z0-9]*)([^>]*)>")
_ALLOWED_TAGS = {"p", "a", "code", "pre", "span", "em", "strong"}


@pytest.mark.parametrize("text", HOSTILE)
def test_nothing_executable_survives(text: str) -> None:
    """Hostile markup comes out as text: only harmless tags, no event handler, no URL but http(s)."""
    html = render_markdown(text)
    for name, attributes in _TAG.findall(html.lower()):
        assert name in _ALLOWED_TAGS, (name, html)
        assert not re.search(r"\son\w+\s*=", attributes), html
        assert "style=" not in attributes and "src=" not in attributes, html
        for url in re.findall(r'href="([^"]*)"', attributes):
            assert url.startswith(("http://", "https://")), html


def test_markdown_renders_with_highlighted_code_and_safe_links() -> None:
    html = render_markdown("# Title\n\n**bold** [docs](https://example.org)\n\n```python\ndef f():\n    return 1\n```")
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">docs</a>' in html
    assert '<pre><code class="language-python"><span class="k">def</span>' in html


def test_tables_and_an_unclosed_fence_while_streaming() -> None:
    assert "<table>" in render_markdown("| a | b |\n|---|---|\n| 1 | 2 |")
    partial = render_markdown("Here:\n\n```js\nconst x = 1")  # half a reply, as it streams
    assert partial.count("<pre>") == 1 and partial.endswith("</code></pre>\n")
