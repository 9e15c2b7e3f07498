"""Extraction on real files of every format, written here with the libraries people's tools use (fpdf2 for
PDF, python-docx for Word), and every refusal: wrong type, empty, scanned, encrypted, corrupt, renamed."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from fpdf.enums import EncryptionMethod
from PIL import Image

from galerne.documents import Block, Document, extract
from galerne.errors import (
    CorruptDocumentError,
    DocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    FileTypeMismatchError,
    InvalidRequestError,
    NoTextLayerError,
    UnsupportedFileTypeError,
)
from tests.documents.make_fixtures import FIXTURES

LOREM = (
    "The harbour master keeps a log of every ship that enters the port. Each entry records the time, the name "
    "of the vessel and the berth it was given. "
)


def kinds(document: Document) -> list[tuple[str, str, int]]:
    return [(block.kind, block.text, block.level) for block in document.blocks]


def simple_pdf(*, pages: list[list[tuple[str, int, str]]], title: str | None = None) -> bytes:
    """A PDF with, on each page, lines of (style, size, text) written as wrapped paragraphs."""
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    for page in pages:
        pdf.add_page()
        for style, size, text in page:
            pdf.set_font("Helvetica", style, size)
            pdf.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
    return bytes(pdf.output())


# --- plain text, Markdown, HTML -------------------------------------------------------------------------


def test_text_paragraphs_headings_and_lists() -> None:
    text = (
        "Staff rules\n===========\n\n1. Scope\n\nThese rules apply to everyone\nworking at the depot.\n\n"
        "Bring with you:\n- a badge\n- safety boots\n  with steel caps\n\n2.1 Leave\n\nAsk two weeks ahead.\n"
    )
    document = extract(text.encode(), "rules.TXT")
    assert document.title == "Staff rules"
    assert kinds(document) == [
        ("heading", "Staff rules", 1),
        ("heading", "1. Scope", 1),
        ("paragraph", "These rules apply to everyone working at the depot.", 0),
        ("paragraph", "Bring with you:", 0),
        ("list_item", "a badge", 0),
        ("list_item", "safety boots with steel caps", 0),
        ("heading", "2.1 Leave", 2),
        ("paragraph", "Ask two weeks ahead.", 0),
    ]
    assert document.num_pages is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Prix : 4,20 € — déjà vu".encode("utf-8-sig"), "Prix : 4,20 € — déjà vu"),
        ("Größe: 3 Äpfel".encode("utf-16"), "Größe: 3 Äpfel"),
        ("Ça coûte très cher à Noël, dit-elle à l'élève étonnée.".encode("cp1252"), "Ça coûte très cher"),
        (("Ein Text ohne Byte-Order-Mark, aber in UTF-16. " * 4).encode("utf-16-le"), "Ein Text ohne Byte"),
    ],
)
def test_text_encodings(data: bytes, expected: str) -> None:
    assert extract(data, "note.txt").text.startswith(expected)


def test_markdown_structure_without_markup() -> None:
    text = (
        "# Guide\n\nIntro with **bold**, a [link](https://example.org) and `code`.\nSecond line.\n\n"
        "## Steps\n\n- first\n- second\n  1. nested\n\n> quoted advice\n\n```sh\nmake install\n```\n\n"
        "| Day | Open |\n|---|---|\n| Mon | 9-17 |\n\n<div>raw html is dropped</div>\n"
    )
    document = extract(text.encode(), "guide.md")
    assert document.title == "Guide"
    assert kinds(document) == [
        ("heading", "Guide", 1),
        ("paragraph", "Intro with bold, a link and code. Second line.", 0),
        ("heading", "Steps", 2),
        ("list_item", "first", 0),
        ("list_item", "second", 0),
        ("list_item", "nested", 0),
        ("paragraph", "quoted advice", 0),
        ("code", "make install", 0),
        ("table", "Day | Open\nMon | 9-17", 0),
    ]


def test_html_drops_chrome_and_keeps_structure() -> None:
    html = """<!doctype html><html><head><title>Opening hours</title><style>p { color: red }</style>
    <script>var tracking = "SECRET-SCRIPT";</script></head><body>
    <nav><a href="/">Home</a> <a href="/shop">NAVIGATION-LINK</a></nav>
    <h1>Library <em>hours</em></h1><div>Loose text <b>in bold</b>.<p>First line<br>second line.</p></div>
    <h2>Loans</h2><ul><li>Books: <a>30 days</a></li><li>Films<ul><li>7 days</li></ul></li></ul>
    <pre>GET /loans
200 OK</pre>
    <table><tr><th>Day</th><th>Hours</th></tr><tr><td>Mon</td><td>9\u201317</td></tr></table>
    <aside>RELATED-ARTICLES</aside><footer>FOOTER-COPYRIGHT</footer><noscript>NOSCRIPT</noscript>
    </body></html>"""
    document = extract(html.encode(), "hours.html")
    assert document.title == "Opening hours"
    assert kinds(document) == [
        ("heading", "Library hours", 1),
        ("paragraph", "Loose text in bold.", 0),
        ("paragraph", "First line second line.", 0),
        ("heading", "Loans", 2),
        ("list_item", "Books: 30 days", 0),
        ("list_item", "Films", 0),
        ("list_item", "7 days", 0),
        ("code", "GET /loans\n200 OK", 0),
        ("table", "Day | Hours\nMon | 9\u201317", 0),
    ]
    for junk in ("SECRET-SCRIPT", "NAVIGATION-LINK", "RELATED-ARTICLES", "FOOTER-COPYRIGHT", "NOSCRIPT", "color"):
        assert junk not in document.text


def test_html_main_element_is_the_content() -> None:
    html = "<body><div class=banner>Subscribe to our newsletter</div><main><h1>Recipe</h1><p>Mix.</p></main></body>"
    assert kinds(extract(html.encode(), "r.htm")) == [("heading", "Recipe", 1), ("paragraph", "Mix.", 0)]


# --- PDF ------------------------------------------------------------------------------------------------


def test_pdf_pages_headings_and_paragraphs() -> None:
    data = simple_pdf(
        title="Port Handbook",
        pages=[
            [("B", 20, "Port Handbook"), ("", 11, LOREM * 3), ("B", 15, "Berths"), ("", 11, "Berth 4 is deep.")],
            [("B", 11, "Night arrivals"), ("", 11, "Pilots board at the outer buoy after dark.")],
        ],
    )
    document = extract(data, "port.pdf")
    assert document.title == "Port Handbook"
    assert document.num_pages == 2
    assert [(b.kind, b.level, b.page) for b in document.blocks] == [
        ("heading", 1, 1),
        ("paragraph", 0, 1),
        ("heading", 2, 1),
        ("paragraph", 0, 1),
        ("heading", 3, 2),  # bold at body size: below the two larger heading sizes
        ("paragraph", 0, 2),
    ]
    assert document.blocks[1].text == (LOREM * 3).strip()  # wrapped lines are one paragraph again
    assert document.blocks[5].text == "Pilots board at the outer buoy after dark."


def test_pdf_drops_running_headers_and_page_numbers() -> None:
    class Paged(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", "", 9)
            self.cell(0, 5, "ACME Corp - Confidential", new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", "", 9)
            self.cell(0, 5, f"Page {self.page_no()} of 4", align="C")

    pdf = Paged()
    for number in range(1, 5):
        pdf.add_page()
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, f"Body text of page {number}. " + LOREM, new_x="LMARGIN", new_y="NEXT")
    document = extract(bytes(pdf.output()), "paged.pdf")
    assert "Confidential" not in document.text
    assert "of 4" not in document.text
    assert [block.page for block in document.blocks] == [1, 2, 3, 4]
    assert document.blocks[2].text.startswith("Body text of page 3.")


def test_pdf_locked_only_against_editing_opens() -> None:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner-secret", encryption_method=EncryptionMethod.AES_128)
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6, "Readable without a password.")
    assert extract(bytes(pdf.output()), "locked.pdf").text == "Readable without a password."


# --- DOCX -----------------------------------------------------------------------------------------------


def word_file(build: object) -> bytes:
    document = docx.Document()
    build(document)  # type: ignore[operator]
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_docx_styles_become_structure() -> None:
    def build(document: docx.document.Document) -> None:
        document.add_paragraph("Annual Report", style="Title")
        document.add_paragraph("Written for the shareholders.")
        document.add_heading("Results", level=1)
        document.add_heading("Revenue", level=2)
        document.add_paragraph("Revenue grew by   4 percent.")
        document.add_paragraph("Exports", style="List Bullet")
        document.add_paragraph("")
        table = document.add_table(rows=2, cols=3)
        for cell, text in zip(table.rows[0].cells, ["Year", "Sales", "Sales"], strict=True):
            cell.text = text
        merged = table.cell(1, 1).merge(table.cell(1, 2))
        table.cell(1, 0).text = "2025"
        merged.text = "68.7"
        custom = document.styles.add_style("Chapter Title", 1)
        custom.base_style = document.styles["Heading 1"]
        document.add_paragraph("Outlook", style="Chapter Title")
        document.add_paragraph("Stable.")

    document = extract(word_file(build), "report.docx")
    assert document.title == "Annual Report"
    assert kinds(document) == [
        ("paragraph", "Written for the shareholders.", 0),
        ("heading", "Results", 1),
        ("heading", "Revenue", 2),
        ("paragraph", "Revenue grew by 4 percent.", 0),
        ("list_item", "Exports", 0),
        ("table", "Year | Sales | Sales\n2025 | 68.7", 0),  # equal cells stay, a merged one counts once
        ("heading", "Outlook", 1),
        ("paragraph", "Stable.", 0),
    ]
    assert all(block.page is None for block in document.blocks)


# --- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["report.doc", "sheet.xlsx", "photo.png", "README", "archive.zip"])
def test_unsupported_extension(filename: str) -> None:
    with pytest.raises(UnsupportedFileTypeError, match=r"supported: \.txt, \.md") as caught:
        extract(b"some bytes", filename)
    assert caught.value.status == 400 and caught.value.code == "unsupported_file_type"
    if filename.endswith(".doc"):
        assert "save it as .docx" in caught.value.message


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"", "empty.txt"),
        (b"  \n\t\n", "blank.md"),
        (b"", "empty.pdf"),
        (b"<html><head><script>x()</script></head><body><nav>Home</nav></body></html>", "chrome.html"),
        (b"<!-- only a comment -->", "comment.md"),
    ],
)
def test_empty_or_textless(data: bytes, filename: str) -> None:
    with pytest.raises(EmptyDocumentError) as caught:
        extract(data, filename)
    assert caught.value.status == 400 and caught.value.code == "empty_document"


def test_empty_docx() -> None:
    with pytest.raises(EmptyDocumentError):
        extract(word_file(lambda document: document.add_paragraph("   ")), "blank.docx")


def test_scanned_pdf_with_an_image_only(tmp_path: Path) -> None:
    image = tmp_path / "scan.png"
    Image.new("RGB", (400, 560), "white").save(image)
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(str(image), x=10, y=10, w=190)
    with pytest.raises(NoTextLayerError, match=r"scanned PDF: no text layer .*2 page\(s\).*OCR it first"):
        extract(bytes(pdf.output()), "scan.pdf")


def test_pdf_with_drawings_only() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 50, style="F")
    pdf.line(10, 10, 150, 200)
    with pytest.raises(NoTextLayerError) as caught:
        extract(bytes(pdf.output()), "drawing.pdf")
    assert caught.value.code == "no_text_layer" and caught.value.status == 400


@pytest.mark.parametrize("method", [EncryptionMethod.RC4, EncryptionMethod.AES_256])
def test_password_protected_pdf(method: EncryptionMethod) -> None:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="open-sesame", encryption_method=method)
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6, "Secret text.")
    with pytest.raises(EncryptedDocumentError, match="password-protected") as caught:
        extract(bytes(pdf.output()), "secret.pdf")
    assert caught.value.code == "encrypted_document"


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"%PDF-1.7\n" + bytes(range(256)) * 4, "garbage.pdf"),
        (b"PK\x03\x04" + b"\x00" * 200, "broken.docx"),
        (b"\xff\xfe\x00\xd8", "bad-utf16.txt"),  # a UTF-16 mark followed by a lone surrogate
    ],
)
def test_corrupt_files(data: bytes, filename: str) -> None:
    with pytest.raises(CorruptDocumentError) as caught:
        extract(data, filename)
    assert caught.value.status == 400 and caught.value.code == "corrupt_document"


def test_truncated_pdf_is_corrupt_or_partial() -> None:
    data = (FIXTURES / "manual_en.pdf").read_bytes()
    with pytest.raises(DocumentError):
        extract(data[: len(data) // 3], "cut.pdf")


def test_damaged_docx_part() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document><unclosed>")
    with pytest.raises(CorruptDocumentError):
        extract(buffer.getvalue(), "damaged.docx")


@pytest.mark.parametrize(
    ("data", "filename", "says"),
    [
        ((FIXTURES / "manual_en.pdf").read_bytes(), "manual.txt", "a PDF"),
        ((FIXTURES / "guide_fr.docx").read_bytes(), "guide.md", "zip archive"),
        ((FIXTURES / "guide_fr.docx").read_bytes(), "guide.pdf", "zip archive"),
        ((FIXTURES / "manual_en.pdf").read_bytes(), "manual.docx", "a PDF"),
        (b"Just some text, really.", "notes.pdf", "not a PDF"),
        (b"Just some text, really.", "notes.docx", "not a DOCX"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "photo.html", "a PNG image"),
        (b"\x00\x01\x02\x03binary\x00\xff\xfe" * 10, "data.txt", "binary data"),
    ],
)
def test_content_must_match_extension(data: bytes, filename: str, says: str) -> None:
    with pytest.raises(FileTypeMismatchError, match=says) as caught:
        extract(data, filename)
    assert caught.value.code == "file_type_mismatch"


def test_zip_that_is_not_a_word_document() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(FileTypeMismatchError, match=r"no word/document\.xml"):
        extract(buffer.getvalue(), "sheet.docx")


def test_every_refusal_is_a_400_in_the_error_tree() -> None:
    for error in (
        UnsupportedFileTypeError,
        EmptyDocumentError,
        NoTextLayerError,
        EncryptedDocumentError,
        CorruptDocumentError,
        FileTypeMismatchError,
    ):
        assert issubclass(error, DocumentError) and issubclass(error, InvalidRequestError)
        assert error.status == 400 and error.type == "invalid_request_error"


def test_block_defaults() -> None:
    assert Block("paragraph", "x") == Block(kind="paragraph", text="x", level=0, page=None)


@pytest.mark.parametrize("filename", ["x.txt", "x.md", "x.html", "x.pdf", "x.docx"])
def test_random_bytes_are_a_document_or_a_400_never_a_crash(filename: str) -> None:
    rng = random.Random(filename)
    real = (FIXTURES / "manual_en.pdf").read_bytes() if filename.endswith(".pdf") else b""
    real = (FIXTURES / "guide_fr.docx").read_bytes() if filename.endswith(".docx") else real
    for _ in range(25):
        noise = rng.randbytes(rng.randint(1, 3000))
        if real:  # a real file with a run of bytes overwritten: damage deep inside, not only at the start
            start = rng.randint(16, len(real) - 1)
            noise = real[:start] + noise + real[start + len(noise) :]
        try:
            document = extract(noise, filename)
        except DocumentError:
            continue
        assert isinstance(document, Document)
