"""From an uploaded file's bytes and name to a `Document`: check the type, decode, hand to the format's reader.

The extension picks the reader, and the bytes must agree with it (magic bytes: ``%PDF`` for PDF, a zip
holding ``word/document.xml`` for DOCX, no binary signature for the text formats), so a renamed file is
refused with a message that names what it really is, instead of failing somewhere deep in a parser.

    DocumentError (400)
    ├── UnsupportedFileTypeError    an extension we have no reader for
    ├── FileTypeMismatchError       the bytes are not what the extension says
    ├── EmptyDocumentError          no bytes, or no text once markup is dropped
    ├── NoTextLayerError            a scanned PDF
    ├── EncryptedDocumentError      a password-protected PDF
    └── CorruptDocumentError        the file does not parse or decode

Example::

    document = extract(Path("handbook.pdf").read_bytes(), "handbook.pdf")
    document.title, document.num_pages, document.blocks[0]
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import PurePath

import charset_normalizer

from galerne.documents.document import Document
from galerne.documents.from_docx import read_docx
from galerne.documents.from_html import read_html
from galerne.documents.from_markdown import read_markdown
from galerne.documents.from_pdf import read_pdf
from galerne.documents.from_text import read_text
from galerne.errors import (
    CorruptDocumentError,
    EmptyDocumentError,
    FileTypeMismatchError,
    UnsupportedFileTypeError,
)

SUPPORTED_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")
_TEXT_READERS: dict[str, Callable[[str], Document]] = {
    ".txt": read_text,
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".html": read_html,
    ".htm": read_html,
}
# Signatures of binary formats someone may send under a text or a wrong name, to say what the file is.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a zip archive (DOCX, XLSX, ODT, ...)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office file (.doc, .xls); save it as .docx"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"{\\rtf", "an RTF file; save it as .docx"),
    (b"\x7fELF", "an executable"),
    (b"\x1f\x8b", "a gzip archive"),
)
_UTF_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def extract(data: bytes, filename: str) -> Document:
    """The text of `data` as blocks, read according to `filename`'s extension (case-insensitive).

    Raises a `DocumentError` subclass (all 400s) whose message says what is wrong and how to fix it.
    """
    extension = PurePath(filename).suffix.lower()
    if extension not in _TEXT_READERS and extension not in (".pdf", ".docx"):
        shown = f"'{extension}'" if extension else "no extension"
        hint = " (save it as .docx)" if extension in (".doc", ".odt", ".rtf") else ""
        raise UnsupportedFileTypeError(
            f"unsupported file type {shown} for '{filename}'{hint}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not data.strip():
        raise EmptyDocumentError(f"'{filename}' is empty; upload a file with some text in it")
    if extension == ".pdf":
        _expect_pdf(data, filename)
        document = read_pdf(data, filename)
    elif extension == ".docx":
        _expect_docx(data, filename)
        document = read_docx(data, filename)
    else:
        document = _TEXT_READERS[extension](decode_text(data, filename))
    if not any(block.text.strip() for block in document.blocks):
        raise EmptyDocumentError(f"'{filename}' has no text once its markup is dropped; upload a file with text")
    return document


def decode_text(data: bytes, filename: str) -> str:
    """Text bytes as str: a BOM's encoding, else UTF-8, else the encoding charset-normalizer finds.

    Binary content under a text name (a PDF called notes.txt) is a `FileTypeMismatchError`.
    """
    for bom, encoding in _UTF_BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise CorruptDocumentError(f"'{filename}' starts with a {encoding} mark but does not decode") from exc
    found = _signature(data)
    if found is not None:
        raise FileTypeMismatchError(f"'{filename}' is {found}, not text; give it its own extension")
    if b"\x00" in data[:4096]:
        # NUL bytes are valid UTF-8 but no text file has them, except UTF-16/32 written without a BOM.
        wide = charset_normalizer.from_bytes(data).best()
        if wide is not None and wide.encoding.startswith(("utf_16", "utf_32")):
            return str(wide)
        raise FileTypeMismatchError(f"'{filename}' holds binary data, not text; check that it is the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise CorruptDocumentError(f"the text of '{filename}' does not decode; save it as UTF-8 and upload it again")
    return str(best)


def _signature(data: bytes) -> str | None:
    head = data[:16]
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _expect_pdf(data: bytes, filename: str) -> None:
    # The PDF specification lets readers accept junk before the header; 1 KiB is what Acrobat tolerates.
    if b"%PDF-" in data[:1024]:
        return
    found = _signature(data)
    what = found if found is not None else "not a PDF"
    raise FileTypeMismatchError(f"'{filename}' is named .pdf but is {what}; upload it under its real extension")


def _expect_docx(data: bytes, filename: str) -> None:
    if not data.startswith(b"PK\x03\x04"):
        found = _signature(data) or "not a DOCX (zip) file"
        raise FileTypeMismatchError(f"'{filename}' is named .docx but is {found}; upload it under its real extension")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile as exc:
        raise CorruptDocumentError(f"'{filename}' is a damaged zip archive; save the document again") from exc
    if "word/document.xml" not in names:
        raise FileTypeMismatchError(
            f"'{filename}' is a zip archive but not a Word document (no word/document.xml); "
            "save it from your editor as .docx"
        )
