"""Documents attached to a Le Chat conversation: upload one into it, list them, remove one.

An attached document is the user's own upload (`DocumentService`, under the user's `Principal`, so only
they can read it), linked to one conversation; every reply in that conversation is then grounded in all of
its documents (`ReplyService`). Removing a document, or deleting the conversation, deletes the file with its
passages: nothing of it stays behind. Someone else's conversation or file is the same 404 as one that never
existed. The conversation is checked before the upload is processed, so a wrong id costs no extraction.

Example::

    attached = await attachments.attach(principal, user.id, conversation_id, "handbook.pdf", data)
    files = await attachments.files(user.id, conversation_id)
    await attachments.remove(user.id, conversation_id, attached.id)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from galerne.errors import InvalidRequestError, NotFoundError, UnsupportedFeatureError
from galerne.services.auth import Principal
from galerne.services.conversations import AttachedFile, attached_file, checked_id, not_found
from galerne.services.documents import DocumentService
from galerne.storage import conversations as store
from galerne.storage import documents as document_store
from galerne.storage.database import Database

MAX_FILES_PER_CONVERSATION = 20


class AttachmentService:
    def __init__(
        self, database: Database, documents: DocumentService | None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        """`documents` is None on a server without an embedding model: attaching is then refused (400)."""
        self._database = database
        self._documents = documents
        self._now = clock or (lambda: datetime.now(UTC))

    @property
    def is_available(self) -> bool:
        return self._documents is not None

    async def attach(
        self, principal: Principal, user_id: str, conversation_id: str, filename: str, data: bytes
    ) -> AttachedFile:
        """Process the document (4xx for a bad one: type, empty, no text, too big) and attach it."""
        num_files = await self._database.run(
            lambda session: len(self._owned_file_ids(session, user_id, conversation_id))
        )
        documents = self._documents
        if documents is None:
            raise UnsupportedFeatureError(
                "this server has no embedding model for documents; the operator adds one to the catalogue "
                "(docs/documents.md)",
                param="file",
            )
        if num_files >= MAX_FILES_PER_CONVERSATION:
            raise InvalidRequestError(
                f"a conversation holds at most {MAX_FILES_PER_CONVERSATION} documents; remove one first",
                param="file",
            )
        stored = await documents.upload(principal, filename, data)

        def link(session: Any) -> None:
            self._owned_file_ids(session, user_id, conversation_id)  # still there (not deleted meanwhile)
            store.link_file(session, conversation_id, stored.id, self._now())

        try:
            await self._database.run(link)
        except BaseException:
            await documents.delete(principal, stored.id)  # an unlinked upload would be an orphan nobody sees
            raise
        return attached_file(stored)

    async def files(self, user_id: str, conversation_id: str) -> list[AttachedFile]:
        """The conversation's documents, in the order they were attached."""

        def read(session: Any) -> list[AttachedFile]:
            _owned(session, user_id, conversation_id)
            return [attached_file(row) for row in store.files_of(session, conversation_id)]

        return await self._database.run(read)

    async def remove(self, user_id: str, conversation_id: str, file_id: str) -> None:
        """Detach the document and delete it (404 when it is not one of this conversation's)."""

        def write(session: Any) -> None:
            if file_id not in self._owned_file_ids(session, user_id, conversation_id):
                raise NotFoundError(f"no document {file_id[:64]!r} in this conversation", param="file_id")
            store.unlink_file(session, conversation_id, file_id)
            document_store.delete_file(session, file_id)

        await self._database.run(write)

    def _owned_file_ids(self, session: Any, user_id: str, conversation_id: str) -> list[str]:
        _owned(session, user_id, conversation_id)
        return store.file_ids_of(session, conversation_id)


def _owned(session: Any, user_id: str, conversation_id: str) -> None:
    if store.find_conversation(session, user_id, checked_id(conversation_id)) is None:
        raise not_found(conversation_id)
