"""Writes the retrieval set's PDF and DOCX documents from their Markdown sources, deterministically.

    python -m tests.documents.make_fixtures          # rewrite tests/fixtures/documents/*.pdf, *.docx

The sources (tests/fixtures/documents/sources/*.md) are read with Galerne's own Markdown reader and laid out
with fpdf2 (core Helvetica, so Latin-1 text only) or python-docx (real "Heading N", "List Bullet" and "Title"
styles, a real table). Dates and zip timestamps are fixed, so a rerun gives the same bytes and git sees no
change; test_retrieval_set checks that a rerun gives the same text.
"""

from __future__ import annotations

import datetime
import io
import zipfile
from pathlib import Path

import docx
from fpdf import FPDF

from galerne.documents import Document, extract

FIXTURES = Path(__file__).parents[1] / "fixtures" / "documents"
SOURCES = FIXTURES / "sources"
FIXED_DATE = datetime.datetime(2026, 1, 15, 9, 30, tzinfo=datetime.UTC)
_HEADING_SIZES = {1: 18, 2: 14, 3: 12}
_BODY_SIZE = 11


def read_source(name: str) -> Document:
    return extract((SOURCES / name).read_bytes(), name)


def render_pdf(document: Document) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(document.title or "")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    for block in document.blocks:
        if block.kind == "heading":
            if block.level <= 2 and pdf.get_y() > 60:
                pdf.ln(4)
            pdf.set_font("Helvetica", "B", _HEADING_SIZES.get(block.level, 12))
            pdf.multi_cell(0, 8, block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
            continue
        pdf.set_font("Helvetica", "", _BODY_SIZE)
        if block.kind == "table":
            for row in block.text.split("\n"):
                pdf.multi_cell(0, 6, row, new_x="LMARGIN", new_y="NEXT")
        elif block.kind == "list_item":
            pdf.multi_cell(0, 6, f"- {block.text}", new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.multi_cell(0, 6, block.text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    return bytes(pdf.output())


def render_docx(document: Document) -> bytes:
    word = docx.Document()
    properties = word.core_properties
    properties.title = ""
    properties.author = "Galerne tests"
    properties.last_modified_by = "Galerne tests"
    properties.created = properties.modified = FIXED_DATE.replace(tzinfo=None)
    properties.revision = 1
    if document.title:
        word.add_paragraph(document.title, style="Title")
    blocks = document.blocks[1:] if document.title and document.blocks[0].text == document.title else document.blocks
    for block in blocks:
        if block.kind == "heading":
            word.add_heading(block.text, level=min(block.level, 9))
        elif block.kind == "list_item":
            word.add_paragraph(block.text, style="List Bullet")
        elif block.kind == "table":
            rows = [row.split(" | ") for row in block.text.split("\n")]
            table = word.add_table(rows=len(rows), cols=max(len(row) for row in rows))
            table.style = "Table Grid"
            for cells, row in zip(table.rows, rows, strict=True):
                for cell, text in zip(cells.cells, row, strict=False):
                    cell.text = text
        else:
            word.add_paragraph(block.text)
    buffer = io.BytesIO()
    word.save(buffer)
    return _fixed_zip_times(buffer.getvalue())


def _fixed_zip_times(data: bytes) -> bytes:
    """The same archive with every member dated FIXED_DATE (python-docx stamps the current time)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(info.filename))
    return out.getvalue()


def generated() -> dict[str, bytes]:
    """Each generated fixture's file name and bytes, from every source."""
    files: dict[str, bytes] = {}
    for source in sorted(SOURCES.glob("*.md")):
        stem, _, kind = source.stem.rpartition(".")
        document = read_source(source.name)
        files[f"{stem}.{kind}"] = render_pdf(document) if kind == "pdf" else render_docx(document)
    return files


def main() -> None:
    for name, data in generated().items():
        (FIXTURES / name).write_bytes(data)
        print(f"wrote {name} ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
