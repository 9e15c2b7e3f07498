"""`/v1/files`: upload a document (processed before the answer), list, read, download and delete it."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import Response

from galerne.api.deps import PrincipalDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.errors import PayloadTooLargeError, UnsupportedFeatureError
from galerne.protocol.files import (
    DeletedFile,
    DocumentSearchRequest,
    DocumentSearchResponse,
    FileList,
    FileObject,
    SearchHit,
)
from galerne.services.documents import DOCUMENTS_PURPOSE, DocumentService
from galerne.services.retrieval import RetrievalMode
from galerne.storage.document_tables import StoredFile

router = APIRouter(responses=error_responses(400, 401, 404, 413, 422, 429, 500, 503))


def documents_of(runtime: RuntimeDep) -> DocumentService:
    if runtime.documents is None:
        raise UnsupportedFeatureError(
            "this server has no embedding model for documents; add one to the catalogue (docs/documents.md)"
        )
    return runtime.documents


@router.post("/v1/files", response_model=FileObject)
async def upload_file(
    file: UploadFile,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    purpose: Annotated[str, Form()] = DOCUMENTS_PURPOSE,
) -> FileObject:
    """Upload a .txt, .md, .html, .pdf or .docx document; it is answered once searchable."""
    documents = documents_of(runtime)
    limit = documents.limits.max_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"the file is larger than the {limit}-byte limit")
    stored = await documents.upload(principal, file.filename or "document", data, purpose=purpose)
    return file_object(stored)


@router.get("/v1/files", response_model=FileList)
async def list_files(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    purpose: str | None = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FileList:
    """Your files (a Le Chat user's own uploads, or the project's API uploads), newest first."""
    files = await documents_of(runtime).files(principal, purpose=purpose, limit=page_size)
    return FileList(data=[file_object(stored) for stored in files], total=len(files))


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> FileObject:
    return file_object(await documents_of(runtime).get(principal, file_id))


@router.get("/v1/files/{file_id}/content", response_class=Response)
async def download_file(file_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    stored, data = await documents_of(runtime).content(principal, file_id)
    disposition = f"attachment; filename*=UTF-8''{_quoted(stored.filename)}"
    return Response(data, media_type=stored.mime_type, headers={"Content-Disposition": disposition})


@router.delete("/v1/files/{file_id}", response_model=DeletedFile)
async def delete_file(file_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> DeletedFile:
    await documents_of(runtime).delete(principal, file_id)
    return DeletedFile(id=file_id)


@router.post("/v1/documents/search", response_model=DocumentSearchResponse)
async def search_documents(body: DocumentSearchRequest, principal: PrincipalDep, runtime: RuntimeDep) -> Any:
    """The passages of your files that best answer `query`, ranked across all of them (docs/documents.md)."""
    names, passages = await documents_of(runtime).search(
        principal, body.file_ids, body.query, limit=body.limit, mode=RetrievalMode(body.mode)
    )
    return DocumentSearchResponse(
        data=[
            SearchHit(
                file_id=passage.file_id,
                filename=names[passage.file_id],
                chunk_index=passage.chunk_index,
                heading_path=passage.heading_path,
                page_start=passage.page_start,
                page_end=passage.page_end,
                score=passage.score,
                text=passage.text,
            )
            for passage in passages
        ]
    )


def file_object(stored: StoredFile) -> FileObject:
    return FileObject(
        id=stored.id,
        bytes=stored.num_bytes,
        created_at=int(stored.created_at.timestamp()),
        filename=stored.filename,
        purpose=stored.purpose,
        mimetype=stored.mime_type,
        num_pages=stored.num_pages,
        num_chunks=stored.num_chunks,
        num_tokens=stored.num_tokens,
    )


def _quoted(filename: str) -> str:
    return quote(filename, safe="")
