"""Word documents through python-docx: paragraph styles give the headings, tables their rows.

A paragraph is a heading when its style is a "Heading N" (or is based on one, as custom heading styles
are), or when it carries an outline level, which is how Word marks headings in styles with other names
and other languages; the first "Title" paragraph (or the core properties' title) is the document's
title. Numbered and bulleted paragraphs are list items. Word has no fixed pages, so `page` is None.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from galerne.documents.document import Block, Document
from galerne.errors import CorruptDocumentError

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)
_MAX_STYLE_DEPTH = 8


def read_docx(data: bytes, filename: str) -> Document:
    try:
        word = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CorruptDocumentError(f"'{filename}' is not a readable Word document; save it again as .docx") from exc
    except Exception as exc:  # lxml's XMLSyntaxError and friends: the parts are damaged
        raise CorruptDocumentError(f"'{filename}' has damaged content; open it in Word and save it again") from exc
    title = (word.core_properties.title or "").strip() or None
    blocks: list[Block] = []
    for item in word.iter_inner_content():
        if isinstance(item, Table):
            text = _table_text(item)
            if text:
                blocks.append(Block("table", text))
            continue
        text = " ".join(item.text.split())
        if not text:
            continue
        style = _style_names(item)
        if "title" in style:
            if title is None:
                title = text
            continue
        level = _heading_level(item, style)
        if level:
            blocks.append(Block("heading", text, level=level))
        elif _is_list_item(item, style):
            blocks.append(Block("list_item", text))
        else:
            blocks.append(Block("paragraph", text))
    if title is None and blocks and blocks[0].kind == "heading":
        title = blocks[0].text
    return Document(title=title, blocks=blocks)


def _style_names(paragraph: Paragraph) -> list[str]:
    """The paragraph's style name and those it is based on, lower-cased, nearest first."""
    names: list[str] = []
    style: Any = paragraph.style
    while style is not None and len(names) < _MAX_STYLE_DEPTH:
        names.append((style.name or "").lower())
        style = style.base_style
    return names


def _heading_level(paragraph: Paragraph, style: list[str]) -> int:
    for name in style:
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
    outline = paragraph._p.find(f"{qn('w:pPr')}/{qn('w:outlineLvl')}")
    if outline is not None:
        value = int(outline.get(qn("w:val"), "9"))
        return value + 1 if value < 9 else 0  # 9 is Word's "body text"
    return 0


def _is_list_item(paragraph: Paragraph, style: list[str]) -> bool:
    return any("list" in name for name in style) or paragraph._p.find(f"{qn('w:pPr')}/{qn('w:numPr')}") is not None


def _table_text(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        previous: Any = None
        for cell in row.cells:
            if previous is not None and cell._tc is previous._tc:
                continue  # a merged cell comes back once for each column it spans
            previous = cell
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
