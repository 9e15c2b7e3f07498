"""Plain text: paragraphs are separated by blank lines; headings are guessed from how text files mark them.

A plain file has no markup, so the structure comes from the conventions people type: a line underlined
with ``===`` or ``---`` (level 1 or 2), a short numbered line such as ``2.3 Sick leave`` (level = depth of
the number), or a short line of its own without final punctuation (a question mark aside: FAQs) followed by more
text (level 1).
Lines that start with a bullet (``-``, ``*``, ``•``) are list items; wrapped lines of a paragraph are
joined with a space.
"""

from __future__ import annotations

import re

from galerne.documents.document import Block, Document

_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_BULLET = re.compile(r"^\s*(?:[-*•·\u2013]|\d{1,3}[.)])\s+")
_NUMBERED_HEADING = re.compile(r"^(\d{1,2}(?:\.\d{1,2})*)\.?\s+\S")
_UNDERLINE = re.compile(r"^(=+|-+)\s*$")
_MAX_HEADING_CHARS = 80


def read_text(text: str) -> Document:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks = [chunk.strip("\n") for chunk in _BLANK_LINES.split(text)]
    chunks = [chunk for chunk in chunks if chunk.strip()]
    blocks: list[Block] = []
    for position, chunk in enumerate(chunks):
        raw_lines = [line for line in chunk.split("\n") if line.strip()]
        lines = [line.strip() for line in raw_lines]
        is_last = position == len(chunks) - 1
        if len(lines) == 2 and _UNDERLINE.match(lines[1]) and len(lines[1]) >= 3:
            blocks.append(Block("heading", lines[0], level=1 if lines[1][0] == "=" else 2))
        elif len(lines) == 1 and not is_last and _looks_like_heading(lines[0]):
            blocks.append(Block("heading", lines[0], level=_heading_level(lines[0])))
        else:
            blocks.extend(_paragraphs(raw_lines))
    title = blocks[0].text if blocks and blocks[0].kind == "heading" else None
    return Document(title=title, blocks=blocks)


def _paragraphs(raw_lines: list[str]) -> list[Block]:
    """Lines joined into paragraphs; a bullet line starts a list item, and an indented line after it continues it."""
    blocks: list[Block] = []
    current: list[str] = []
    for raw in raw_lines:
        line = raw.strip()
        if _BULLET.match(line):
            if current:
                blocks.append(Block("paragraph", " ".join(current)))
                current = []
            blocks.append(Block("list_item", _BULLET.sub("", line, count=1)))
        elif blocks and blocks[-1].kind == "list_item" and not current and raw[:1].isspace():
            blocks[-1] = Block("list_item", f"{blocks[-1].text} {line}")
        else:
            current.append(line)
    if current:
        blocks.append(Block("paragraph", " ".join(current)))
    return blocks


def _looks_like_heading(line: str) -> bool:
    if len(line) > _MAX_HEADING_CHARS or (_BULLET.match(line) and not _NUMBERED_HEADING.match(line)):
        return False
    # A question on a line of its own is a heading too: that is how FAQs are laid out.
    if line[-1] in ".!;:,…" or not (line[0].isupper() or line[0].isdigit() or line[0] in "¿¡"):
        return False
    return len(line.split()) <= 12


def _heading_level(line: str) -> int:
    numbered = _NUMBERED_HEADING.match(line)
    return numbered.group(1).count(".") + 1 if numbered else 1
