"""`/v1/files`: la Plateforme's file object, with OpenAI's `status` and what Galerne read from the file.

la Plateforme's SDK requires `sample_type` and `source` (open enums); a document is `"document"` from
`"upload"`. `num_pages`, `num_chunks` and `num_tokens` say what was extracted and indexed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from galerne.protocol.base import RequestBody, WireModel


class FileObject(WireModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    sample_type: str = "document"
    source: Literal["upload"] = "upload"
    mimetype: str
    num_lines: int | None = None
    status: Literal["processed"] = "processed"  # stored only once extracted, chunked and embedded
    num_pages: int | None
    num_chunks: int
    num_tokens: int


class FileList(WireModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    total: int


class DeletedFile(WireModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class DocumentSearchRequest(RequestBody):
    """`POST /v1/documents/search`: the passages of some of your files that best answer a query."""

    query: str = Field(min_length=1, max_length=4000)
    file_ids: list[str] = Field(min_length=1, max_length=64)
    limit: int = Field(default=8, ge=1, le=50)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"


class SearchHit(WireModel):
    file_id: str
    filename: str
    chunk_index: int
    heading_path: str
    page_start: int | None
    page_end: int | None
    score: float
    text: str


class DocumentSearchResponse(WireModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]
