"""HTML through selectolax (the Lexbor HTML5 parser): the page's text without its chrome.

Scripts, styles, navigation, footers, asides, forms and embedded frames are dropped; when the page marks
its content with ``<main>`` (or a single ``<article>``) only that is read. h1 to h6 become headings, p and
loose text paragraphs, li list items, pre code, and a table its rows (cells joined by " | ").
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser, LexborNode

from galerne.documents.document import Block, BlockKind, Document

_DROPPED = "script, style, noscript, template, nav, footer, aside, form, iframe, svg, canvas, button, select, head"
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_TEXT_BLOCKS: dict[str, BlockKind] = {"p": "paragraph", "li": "list_item", "dt": "paragraph", "dd": "paragraph"}
# Elements whose text flows inside a line; any other element starts a new block.
_INLINE = frozenset(
    [
        *("a", "abbr", "b", "bdi", "bdo", "br", "cite", "code", "data", "del", "dfn", "em", "font", "i", "img"),
        *("ins", "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u"),
        *("var", "wbr"),
    ]
)


def read_html(text: str) -> Document:
    tree = LexborHTMLParser(text)
    title_node = tree.css_first("title")
    title = _squash(title_node.text()) if title_node is not None else ""
    for node in tree.css(_DROPPED):
        node.decompose()
    root = tree.css_first("main")
    articles = tree.css("article")
    if root is None and len(articles) == 1:
        root = articles[0]
    if root is None:
        root = tree.body
    blocks: list[Block] = []
    if root is not None:
        _walk(root, blocks)
    if not title and blocks and blocks[0].kind == "heading":
        title = blocks[0].text
    return Document(title=title or None, blocks=blocks)


def _walk(node: LexborNode, blocks: list[Block]) -> None:
    """Emit `node`'s children as blocks; runs of loose text and inline elements between blocks are paragraphs."""
    loose: list[str] = []

    def flush() -> None:
        text = _squash("".join(loose))
        if text:
            blocks.append(Block("paragraph", text))
        loose.clear()

    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            loose.append(child.text_content or "")
        elif tag in _INLINE:
            loose.append(_inline_text(child))
        elif tag is None or tag.startswith("-"):
            continue  # comments, doctype
        else:
            flush()
            _block(child, tag, blocks)
    flush()


def _block(node: LexborNode, tag: str, blocks: list[Block]) -> None:
    if tag in _HEADINGS:
        text = _squash(_inline_text(node))
        if text:
            blocks.append(Block("heading", text, level=_HEADINGS[tag]))
    elif tag == "pre":
        code = (node.text(deep=True, separator="") or "").strip("\n")
        if code.strip():
            blocks.append(Block("code", code))
    elif tag == "table":
        rows = []
        for row in node.css("tr"):
            cells = [_squash(_inline_text(cell)) for cell in row.css("th, td")]
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            blocks.append(Block("table", "\n".join(rows)))
    elif tag in _TEXT_BLOCKS and not _has_block_children(node):
        text = _squash(_inline_text(node))
        if text:
            blocks.append(Block(_TEXT_BLOCKS[tag], text))
    elif tag == "li":
        # An item holding a nested list: its own words are the item, the nested items follow as their own.
        before = len(blocks)
        _walk(node, blocks)
        if len(blocks) > before and blocks[before].kind == "paragraph":
            blocks[before] = Block("list_item", blocks[before].text)
    else:
        _walk(node, blocks)


def _has_block_children(node: LexborNode) -> bool:
    return any(child.tag not in _INLINE and not (child.tag or "-").startswith("-") for child in node.iter())


def _inline_text(node: LexborNode) -> str:
    """The text under `node`, a line break counting as a space (``text()`` would glue the two lines)."""
    if node.tag == "br":
        return " "
    parts = []
    for descendant in node.traverse(include_text=True):
        if descendant.tag == "-text":
            parts.append(descendant.text_content or "")
        elif descendant.tag in ("br", "td", "th", "li", "p", "div"):
            parts.append(" ")
    return "".join(parts)


def _squash(text: str | None) -> str:
    return " ".join((text or "").split())
