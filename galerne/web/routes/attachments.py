"""`/chat/api/conversations/{id}/files`: the documents attached to a conversation (see services/attachments).

Same conventions as `chat_api`: the logged-in user's conversations only (404 otherwise), the CSRF token on
every change, la Plateforme's error body. An upload is a multipart form with one `file` field; it is
processed before the answer, so a 200 means searchable, and a document that cannot be read is a 4xx whose
message the page shows as is (its type, empty, no text layer, too large, ...).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, UploadFile

from galerne.errors import InvalidRequestError
from galerne.services.conversations import AttachedFile
from galerne.web.auth import CurrentPrincipal, CurrentUser
from galerne.web.runtime import WebRuntimeDep

router = APIRouter(prefix="/chat/api/conversations/{conversation_id}/files", include_in_schema=False)


def file_json(attached: AttachedFile) -> dict[str, Any]:
    return {
        "id": attached.id,
        "filename": attached.filename,
        "bytes": attached.num_bytes,
        "num_pages": attached.num_pages,
        "num_chunks": attached.num_chunks,
        "created_at": attached.created_at.isoformat(),
        "status": "ready",
    }


@router.post("", status_code=201)
async def attach(
    conversation_id: str, file: UploadFile, user: CurrentUser, principal: CurrentPrincipal, chat: WebRuntimeDep
) -> dict[str, Any]:
    """Upload a document into the conversation; every later reply in it is grounded in its documents."""
    filename = (file.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not filename:
        raise InvalidRequestError("the upload has no file name; send the file in a `file` form field", param="file")
    # The body-size middleware has already bounded the upload; the service checks the exact limit.
    data = await file.read()
    attached = await chat.attachments.attach(principal, user.id, conversation_id, filename[:255], data)
    return file_json(attached)


@router.get("")
async def list_files(conversation_id: str, user: CurrentUser, chat: WebRuntimeDep) -> dict[str, Any]:
    files = await chat.attachments.files(user.id, conversation_id)
    return {"object": "list", "data": [file_json(attached) for attached in files]}


@router.delete("/{file_id}", status_code=204)
async def remove(conversation_id: str, file_id: str, user: CurrentUser, chat: WebRuntimeDep) -> Response:
    """Detach the document and delete it with its passages."""
    await chat.attachments.remove(user.id, conversation_id, file_id)
    return Response(status_code=204)
