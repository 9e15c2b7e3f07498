"""What extraction returns and chunking reads: a document as a flat run of typed blocks.

Blocks keep the structure retrieval needs (which heading a paragraph sits under, which page it is on)
and nothing of the layout (fonts, columns, styles), so every format becomes the same shape.

Example::

    Document(title="Handbook", num_pages=3, blocks=[
        Block(kind="heading", text="Leave", level=1, page=1),
        Block(kind="paragraph", text="Staff get 27 days of paid leave a year.", level=0, page=1),
    ])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "list_item", "table", "code"]


@dataclass(frozen=True, slots=True)
class Block:
    """One unit of text: a heading (`level` 1 is the top), a paragraph, a list item, a table, a code block.

    A table's text is its rows, one per line, cells joined by " | ". `page` is 1-based, None when the
    format has no pages (everything but PDF).
    """

    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """The extracted text of one file: its title when it declares one (or opens with a heading), its blocks
    in reading order, and its page count (PDF only)."""

    title: str | None
    blocks: list[Block] = field(default_factory=list)
    num_pages: int | None = None

    @property
    def text(self) -> str:
        """The whole text, blocks separated by a blank line: what a document that fits the context sends."""
        return "\n\n".join(block.text for block in self.blocks)
