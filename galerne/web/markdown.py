"""Message text → safe HTML: markdown-it-py parses, pygments highlights fenced code, nh3 sanitises.

Model output and user text are both untrusted: raw HTML in a message is shown as text (markdown-it with
`html` off), and whatever the renderer produces passes nh3 (the Ammonia sanitiser) with a short allow-list,
so no `<script>`, no event handler attribute and no `javascript:` URL can reach the page, even if a parser
bug let one through. Copy buttons are added by the page's script to each `<pre>`, so the sanitised HTML
itself holds no controls.

Example::

    render_markdown("**bold** and `code`")  # '<p><strong>bold</strong> and <code>code</code></p>\n'
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p",
    "pre", "s", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}
_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "span": {"class"}, "ol": {"start"},
               "th": {"style"}, "td": {"style"}}
_URL_SCHEMES = {"http", "https", "mailto"}
_FORMATTER = HtmlFormatter(nowrap=True)
CODE_STYLE_SCOPE = ".message-body pre"


def _highlight(code: str, language: str, _attributes: str) -> str:
    """Pygments' token spans for a fenced block with a known language; "" lets markdown-it escape it plainly."""
    if not language:
        return ""
    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        return ""
    result: str = highlight(code, lexer, _FORMATTER)
    return result


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    options = {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
    return MarkdownIt("commonmark", options).enable(["table", "strikethrough"])


def render_markdown(text: str) -> str:
    """Sanitised HTML for a message (also for a partial one while it streams: open fences close themselves)."""
    html = _parser().render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


def code_style_css(style: str = "default") -> str:
    """The CSS for pygments' token classes, scoped to message code blocks (used to build static/code.css)."""
    css: str = HtmlFormatter(style=style).get_style_defs(CODE_STYLE_SCOPE)
    return css
