"""PDF through pypdf, page by page: text runs with their position and font size become lines, lines
become paragraphs and headings.

A PDF holds positioned text, not paragraphs, so the structure is rebuilt from the layout:

- a new line where the baseline moves; a new paragraph where the gap to the previous line is clearly wider
  than the document's usual line spacing, or where the font size or weight changes;
- headings are lines set larger than the body text (the size that carries most characters), one level per
  size, largest first, or short bold lines of their own at body size (one level below those);
- running headers and footers (the same first or last line on most pages, digits aside) and bare page
  numbers are dropped, so they do not end up inside every passage.

A PDF whose pages hold no text at all is a scan (`NoTextLayerError`); one that needs a password is an
`EncryptedDocumentError`. pypdf is lenient, so a damaged file often still yields its readable pages.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pypdf import PasswordType, PdfReader

from galerne.documents.document import Block, Document
from galerne.errors import CorruptDocumentError, EncryptedDocumentError, NoTextLayerError

_PAGE_NUMBER = re.compile(
    r"^(?:page|seite|página|pagina|pag\.|p\.|s\.)?\s*[-\u2013]?\s*\d{1,4}\s*[-\u2013]?"
    r"(?:\s*(?:/|of|de|von|di|sur|su)\s*\d{1,4})?$",
    re.IGNORECASE,
)
_BOLD = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)
_PARAGRAPH_GAP = 1.35  # a gap this many times the usual line spacing starts a paragraph
_HEADING_SIZE = 1.15  # a line this many times the body size is a heading
_MAX_BOLD_HEADING_WORDS = 14


@dataclass
class _Line:
    text: str
    y: float
    size: float
    is_bold: bool
    page: int


def read_pdf(data: bytes, filename: str) -> Document:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _decrypt(reader, filename)
        pages = [_page_lines(page, number) for number, page in enumerate(reader.pages, start=1)]
        title = _metadata_title(reader)
    except (CorruptDocumentError, EncryptedDocumentError):
        raise
    except Exception as exc:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError...) on damaged files
        raise CorruptDocumentError(f"'{filename}' is a damaged PDF that cannot be read; export it again") from exc
    if not any(line.text.strip() for lines in pages for line in lines):
        raise NoTextLayerError(
            f"scanned PDF: no text layer in '{filename}' ({len(pages)} page(s) of images or drawings); OCR it first "
            "(for example with ocrmypdf) and upload the result"
        )
    lines = _drop_running_lines(pages)
    blocks = _blocks(lines)
    if title is None and blocks and blocks[0].kind == "heading":
        title = blocks[0].text
    return Document(title=title, blocks=blocks, num_pages=len(pages))


def _decrypt(reader: PdfReader, filename: str) -> None:
    """Open a PDF that is only locked against editing (empty user password); refuse one that needs a password."""
    try:
        opened = reader.decrypt("")
    except Exception as exc:  # an unknown security handler, a missing crypto dependency
        raise EncryptedDocumentError(
            f"'{filename}' is an encrypted PDF we cannot open; save an unprotected copy and upload that"
        ) from exc
    if opened == PasswordType.NOT_DECRYPTED:
        raise EncryptedDocumentError(
            f"'{filename}' is password-protected; remove the password (print or save an unprotected copy) and upload it"
        )


def _metadata_title(reader: PdfReader) -> str | None:
    title = (reader.metadata.title if reader.metadata else None) or ""
    title = " ".join(str(title).removeprefix("Microsoft Word - ").split())
    return title or None


def _page_lines(page: Any, number: int) -> list[_Line]:
    """The page's lines in content order, each with its baseline, its largest font size and its weight."""
    lines: list[_Line] = []
    current: list[tuple[str, float, bool]] = []
    current_y: float | None = None

    def close() -> None:
        nonlocal current, current_y
        text = "".join(part for part, _, _ in current)
        if text.strip() and current_y is not None:
            visible = [(size, bold, len(part.strip())) for part, size, bold in current if part.strip()]
            size = max(size for size, _, _ in visible)
            bold_chars = sum(count for _, bold, count in visible if bold)
            is_bold = bold_chars >= 0.8 * sum(count for _, _, count in visible)
            lines.append(_Line(" ".join(text.split()), current_y, round(size * 2) / 2, is_bold, number))
        current, current_y = [], None

    def visit(text: str, cm: list[float], tm: list[float], font: Any, font_size: float) -> None:
        nonlocal current_y
        if not text:
            return
        pieces = text.split("\n")
        for index, piece in enumerate(pieces):
            if index > 0:
                close()
            if not piece:
                continue
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            size = font_size * math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])
            if current_y is not None and piece.strip() and abs(y - current_y) > max(size, 1.0) * 0.5:
                close()
            if current_y is None and piece.strip():
                current_y = y
            name = str(font.get("/BaseFont", "")) if font is not None else ""
            current.append((piece, size, bool(_BOLD.search(name))))

    page.extract_text(visitor_text=visit)
    close()
    return lines


def _drop_running_lines(pages: list[list[_Line]]) -> list[_Line]:
    """All lines but page numbers and running headers/footers (the same edge line on most pages)."""

    def shape(line: _Line) -> str:
        return re.sub(r"\d+", "#", line.text.lower())

    edges: Counter[str] = Counter()
    for lines in pages:
        edges.update({shape(line) for line in (lines[:1] + lines[-1:])})
    running = {text for text, count in edges.items() if len(pages) >= 3 and count >= 0.6 * len(pages)}
    kept: list[_Line] = []
    for lines in pages:
        for position, line in enumerate(lines):
            is_edge = position in (0, len(lines) - 1)
            if is_edge and (shape(line) in running or _PAGE_NUMBER.match(line.text)):
                continue
            kept.append(line)
    return kept


def _blocks(lines: list[_Line]) -> list[Block]:
    sizes: Counter[float] = Counter()
    for line in lines:
        sizes[line.size] += len(line.text)
    body_size = sizes.most_common(1)[0][0] if sizes else 0.0
    heading_sizes = sorted((size for size in sizes if size >= body_size * _HEADING_SIZE), reverse=True)
    level_of = {size: index + 1 for index, size in enumerate(heading_sizes)}
    bold_level = len(heading_sizes) + 1
    spacing = _usual_spacing(lines, body_size)

    groups: list[list[_Line]] = []
    for line in lines:
        previous = groups[-1][-1] if groups else None
        if previous is None or _starts_paragraph(previous, line, spacing):
            groups.append([line])
        else:
            groups[-1].append(line)

    blocks: list[Block] = []
    for group in groups:
        text = _join_lines([line.text for line in group])
        first = group[0]
        if first.size in level_of:
            blocks.append(Block("heading", text, level=level_of[first.size], page=first.page))
        elif first.is_bold and len(text.split()) <= _MAX_BOLD_HEADING_WORDS and text[-1] not in ".:;,":
            blocks.append(Block("heading", text, level=bold_level, page=first.page))
        elif re.match(r"^[•·▪◦‣∙-]\s+", text):
            blocks.append(Block("list_item", re.sub(r"^[•·▪◦‣∙-]\s+", "", text), page=first.page))
        else:
            blocks.append(Block("paragraph", text, page=first.page))
    return blocks


def _usual_spacing(lines: list[_Line], body_size: float) -> float:
    """The most common baseline gap between consecutive body lines of one page: the line spacing."""
    gaps: Counter[float] = Counter()
    for previous, line in itertools.pairwise(lines):
        if previous.page == line.page and previous.size == line.size == body_size:
            gap = round(previous.y - line.y, 1)
            if gap > 0:
                gaps[gap] += 1
    return gaps.most_common(1)[0][0] if gaps else body_size * 1.2


def _starts_paragraph(previous: _Line, line: _Line, spacing: float) -> bool:
    if line.page != previous.page or line.size != previous.size or line.is_bold != previous.is_bold:
        return True
    if re.match(r"^[•·▪◦‣∙-]\s+", line.text):
        return True
    gap = previous.y - line.y
    return gap <= 0 or gap > spacing * _PARAGRAPH_GAP * max(line.size / max(previous.size, 1.0), 1.0)


def _join_lines(texts: list[str]) -> str:
    """Wrapped lines as one text: a soft hyphen at a line's end joins the word, other lines join with a space."""
    joined = texts[0]
    for text in texts[1:]:
        if joined.endswith("\xad"):
            joined = joined[:-1] + text
        elif joined.endswith("-") and len(joined) > 1 and joined[-2].isalpha() and text[:1].islower():
            joined += text
        else:
            joined += " " + text
    return joined
