"""Documents in a chat call: put them in the prompt whole when they fit, else the passages that answer.

A chat request may hand over several documents (uploaded file ids, or files inline). Unknown ids and other
projects' ids are refused with 404 before anything is decoded. The documents' text goes into the user
message that carried them, numbered so the answer can cite `[n]`:

- when every document fits the model's context (what is left after the conversation and the answer's
  `max_tokens`), each goes in whole, and the references are the passages that rank best for the question;
- when they do not, the passages that rank best across all documents (one budget, `services.retrieval`)
  go in, best first, until the budget is spent, and they are the references.

They go into the system prompt; the best passage is repeated next to the question (see `_with_documents`).

Token counts are the embedding model's; the chat model's tokenizer may need more for the same text, so a
budget is counted at `TOKEN_RATIO` times them, and a prompt that still overflows is rebuilt smaller
(`ChatService` asks again with `shrink`).

Example::

    grounded = await grounding.ground(request, principal, entry)
    request, references = grounded.request, grounded.references
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from galerne.catalog import ModelEntry
from galerne.inference.types import ChatMessage, DocumentRef, GenerationRequest, Role
from galerne.services.auth import Principal
from galerne.services.documents import CHUNK_TOKENS, DocumentService
from galerne.services.retrieval import Passage
from galerne.storage.document_tables import StoredFile

TOKEN_RATIO = 1.5  # chat-model tokens per embedding-model word piece, with room to spare (fr/de/es/it)
ANSWER_TOKENS = 512  # reserved for the answer when the request sets no max_tokens
OVERHEAD_TOKENS = 64  # the chat template and the headings of the document block
MAX_REFERENCES = 5
CANDIDATE_PASSAGES = 200
INSTRUCTION = "Answer the question from the documents below. Cite the passages you use as [n]."


@dataclass(frozen=True, slots=True)
class Reference:
    """A passage of a document an answer was given: the wire's `DocumentReference`, and what Le Chat keeps
    with an answer (`services.conversations`)."""

    id: int  # the [n] of the prompt, which the answer may cite
    file_id: str
    filename: str
    chunk_index: int
    page_start: int | None
    page_end: int | None
    score: float
    text: str


@dataclass(frozen=True, slots=True)
class Grounded:
    request: GenerationRequest
    references: tuple[Reference, ...]
    temporary_file_ids: tuple[str, ...]


class DocumentGrounding:
    def __init__(self, documents: DocumentService) -> None:
        self._documents = documents
        self._retriever = documents.retriever

    async def ground(
        self, request: GenerationRequest, principal: Principal, entry: ModelEntry, *, shrink: float = 1.0
    ) -> Grounded:
        """`request` with its documents in the prompt; 404 for a file the caller may not read, 4xx for a bad
        inline document. `shrink` (< 1) lowers the budget after a prompt overflowed the context."""
        files = await self._resolve(request.documents, principal)
        temporary = tuple(stored.id for stored in files if stored.is_temporary)
        try:
            return await self._ground(request, principal, entry, files, temporary, shrink)
        except BaseException:
            await self._documents.forget_temporary(temporary)
            raise

    async def _ground(
        self,
        request: GenerationRequest,
        principal: Principal,
        entry: ModelEntry,
        files: list[StoredFile],
        temporary: tuple[str, ...],
        shrink: float,
    ) -> Grounded:
        question = _question(request.messages)
        # The best passage is shown twice (in the documents, and next to the question): keep room for it.
        budget = max(0, math.floor(_budget(request, entry) * shrink / TOKEN_RATIO) - CHUNK_TOKENS)
        whole_tokens = sum(stored.num_tokens for stored in files)
        file_ids = [stored.id for stored in files]
        names = {stored.id: stored.filename for stored in files}
        cited: list[tuple[int, Passage]]
        if whole_tokens <= budget:
            ranked = await self._retriever.rank(principal, file_ids, question, limit=MAX_REFERENCES)
            files = _most_relevant_last(files, ranked)
            block = await self._whole_block(files)
            numbers = {stored.id: number for number, stored in enumerate(files, start=1)}
            cited = [(numbers[passage.file_id], passage) for passage in ranked]
        else:
            ranked = await self._retriever.rank(principal, file_ids, question, limit=CANDIDATE_PASSAGES)
            chosen = _within(ranked, budget)
            block = "\n\n".join(_passage_block(number, passage, names) for number, passage in enumerate(chosen, 1))
            cited = list(enumerate(chosen[:MAX_REFERENCES], 1))
        message_index = request.documents[-1].message_index if request.documents else len(request.messages) - 1
        excerpt = _passage_block(*cited[0], names) if cited else None
        grounded = _with_documents(request, block, excerpt, message_index)
        references = tuple(_reference(number, passage, names) for number, passage in cited)
        return Grounded(grounded, references, temporary)

    async def release(self, grounded: Grounded) -> None:
        await self._documents.forget_temporary(grounded.temporary_file_ids)

    async def _resolve(self, documents: Sequence[DocumentRef], principal: Principal) -> list[StoredFile]:
        """Every document as a stored file: ids checked first (404 before any work), then inline ones stored
        as temporary files, deleted when the call ends."""
        owned = await self._documents.owned(principal, [ref.file_id for ref in documents if ref.file_id is not None])
        by_id = {stored.id: stored for stored in owned}
        files: list[StoredFile] = []
        try:
            for ref in documents:
                if ref.file_id is not None:
                    files.append(by_id[ref.file_id])
                else:
                    assert ref.data is not None and ref.filename is not None  # validate.py made it so
                    files.append(await self._documents.upload(principal, ref.filename, ref.data, is_temporary=True))
        except BaseException:
            await self._documents.forget_temporary([stored.id for stored in files if stored.is_temporary])
            raise
        return files

    async def _whole_block(self, files: Sequence[StoredFile]) -> str:
        texts = await self._documents.texts([stored.id for stored in files])
        return "\n\n".join(
            f"[{number}] {stored.filename}\n{texts[stored.id]}" for number, stored in enumerate(files, start=1)
        )


def _most_relevant_last(files: Sequence[StoredFile], ranked: Sequence[Passage]) -> list[StoredFile]:
    """Whole documents in order of their best passage, the best one last: right before the question, where
    a small model attends most (what it reads last, it uses first)."""
    best: dict[str, int] = {}
    for rank, passage in enumerate(ranked):
        best.setdefault(passage.file_id, rank)
    return sorted(files, key=lambda stored: -best.get(stored.id, len(ranked)))


def _budget(request: GenerationRequest, entry: ModelEntry) -> int:
    """Tokens of the context left for documents, in the chat model's tokens (estimated from characters for
    the conversation: ~3 characters a token is on the safe side for these five languages)."""
    conversation = sum(len(message.content) for message in request.messages) // 3
    answer = request.sampling.max_tokens or ANSWER_TOKENS
    return max(0, entry.context_length - answer - conversation - OVERHEAD_TOKENS)


def _within(ranked: Sequence[Passage], budget: int) -> list[Passage]:
    """The best passages whose tokens add up to at most `budget`, in rank order."""
    chosen: list[Passage] = []
    spent = 0
    for passage in ranked:
        if spent + passage.num_tokens > budget:
            continue
        chosen.append(passage)
        spent += passage.num_tokens
    return chosen


def _question(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role is Role.USER and message.content.strip():
            return message.content
    return ""


def _passage_block(number: int, passage: Passage, names: dict[str, str]) -> str:
    where = names[passage.file_id] + (f", p. {passage.page_start}" if passage.page_start is not None else "")
    heading = f"{passage.heading_path}\n" if passage.heading_path else ""
    return f"[{number}] {where}\n{heading}{passage.text}"


def _reference(number: int, passage: Passage, names: dict[str, str]) -> Reference:
    return Reference(
        id=number,
        file_id=passage.file_id,
        filename=names[passage.file_id],
        chunk_index=passage.chunk_index,
        page_start=passage.page_start,
        page_end=passage.page_end,
        score=round(passage.score, 6),
        text=passage.text,
    )


def _with_documents(
    request: GenerationRequest, block: str, excerpt: str | None, message_index: int
) -> GenerationRequest:
    """The documents go into the system prompt; the user message that handed them over keeps its question,
    after the passage that ranks best. Measured on SmolLM2-135M: with three documents and the question in
    one user message it answered from the wrong document every time; with the documents as system context
    and the best passage next to the question it answered right."""
    messages = list(request.messages)
    index = min(message_index, len(messages) - 1)
    target = messages[index]
    question = target.content.strip()
    parts = [f"Most relevant passage:\n{excerpt}"] if excerpt else []
    parts += [f"Question: {question}"] if question else []
    messages[index] = replace(target, content="\n\n".join(parts) or question)
    context = f"{INSTRUCTION}\n\n{block}"
    if messages and messages[0].role is Role.SYSTEM:
        messages[0] = replace(messages[0], content=f"{messages[0].content}\n\n{context}")
    else:
        messages.insert(0, ChatMessage(role=Role.SYSTEM, content=context))
    return replace(request, messages=tuple(messages), documents=())
