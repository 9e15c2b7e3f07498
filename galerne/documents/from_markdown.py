"""Markdown through markdown-it-py (CommonMark plus GFM tables): the parser's tokens give the structure.

Inline markup is dropped to plain text (``**bold**`` → ``bold``, a link → its text, an image → its alt
text), since the text is for search and for a model, not for display.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

from galerne.documents.document import Block, BlockKind, Document


def read_markdown(text: str) -> Document:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[Block] = []
    list_depth = 0
    pending_kind: BlockKind | None = None
    pending_level = 0
    table_rows: list[list[str]] | None = None
    for token in tokens:
        if token.type in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif token.type == "heading_open":
            pending_kind, pending_level = "heading", int(token.tag[1:])
        elif token.type == "paragraph_open" and table_rows is None:
            pending_kind, pending_level = ("list_item" if list_depth else "paragraph"), 0
        elif token.type in ("fence", "code_block"):
            code = token.content.rstrip("\n")
            if code.strip():
                blocks.append(Block("code", code))
        elif token.type == "table_open":
            table_rows = []
        elif token.type == "tr_open" and table_rows is not None:
            table_rows.append([])
        elif token.type == "table_close" and table_rows is not None:
            blocks.append(Block("table", "\n".join(" | ".join(row) for row in table_rows)))
            table_rows = None
        elif token.type == "inline":
            content = _plain(token)
            if table_rows is not None:
                table_rows[-1].append(content)
            elif pending_kind is not None and content:
                blocks.append(Block(pending_kind, content, level=pending_level))
            pending_kind = None
    title = blocks[0].text if blocks and blocks[0].kind == "heading" else None
    return Document(title=title, blocks=blocks)


def _plain(inline: Token) -> str:
    """An inline token's text without markup; line breaks inside a paragraph become spaces."""
    parts: list[str] = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return " ".join("".join(parts).split())
