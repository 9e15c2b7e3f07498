"""Documents: the text of uploaded files as structured blocks, and those blocks cut into passages.

A peer of `galerne.services` that needs no model and no database: `extract` turns a file's bytes into a
`Document` (headings, paragraphs, list items, tables, code, with PDF page numbers); `chunk` cuts it along
its structure into passages that fit an embedding model's window, each prefixed with its heading path;
`search_terms` turns a question into the word stems a lexical index is searched for.

Example::

    document = extract(data, "handbook.pdf")
    passages = chunk(document, max_tokens=200, count_tokens=lambda text: len(tokenizer.encode(text)))
"""

from galerne.documents.chunking import Chunk, chunk
from galerne.documents.document import Block, BlockKind, Document
from galerne.documents.extraction import SUPPORTED_EXTENSIONS, extract

__all__ = ["SUPPORTED_EXTENSIONS", "Block", "BlockKind", "Chunk", "Document", "chunk", "extract"]
