"""`/v1/moderations` and `/v1/chat/moderations` in la Plateforme's shape (the `mistralai` SDK's
`classifiers.moderate` and `classifiers.moderate_chat`).

Example::

    curl localhost:8000/v1/moderations -H "Authorization: Bearer $KEY" \\
      -d '{"model": "smollm2", "input": ["How do I pick a lock?", "Nice weather today"]}'
    # {"id": "...", "model": "smollm2-135m-instruct",
    #  "results": [{"categories": {"sexual": false, ...}, "category_scores": {"sexual": 0.01, ...}}, ...]}
"""

from __future__ import annotations

from pydantic import Field

from galerne.protocol.base import RequestBody, WireModel
from galerne.protocol.chat import Message


class ModerationRequest(RequestBody):
    model: str | None = Field(default=None, description="A catalogue model; default: the moderation model.")
    input: str | list[str] = Field(description="A text, or a list of texts, each classified on its own.")


class ChatModerationRequest(RequestBody):
    model: str | None = None
    input: list[Message] | list[list[Message]] = Field(
        description="A conversation, or a list of them; the last message of each is classified in context."
    )


class ModerationResult(WireModel):
    categories: dict[str, bool]
    category_scores: dict[str, float]


class ModerationResponse(WireModel):
    id: str
    model: str
    results: list[ModerationResult]
