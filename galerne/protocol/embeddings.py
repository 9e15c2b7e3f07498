"""`POST /v1/embeddings` in the shape both la Plateforme and OpenAI answer (the `mistralai` SDK's
`embeddings.create` and the `openai` SDK's `embeddings.create`, whose default is base64).

Example::

    curl localhost:8000/v1/embeddings -H "Authorization: Bearer $KEY" \\
      -d '{"model": "all-minilm-l6-v2", "input": ["a query", "a passage"]}'
    # {"id": "...", "object": "list", "model": "all-minilm-l6-v2",
    #  "data": [{"object": "embedding", "embedding": [0.01, ...], "index": 0}, ...],
    #  "usage": {"prompt_tokens": 9, "total_tokens": 9}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from galerne.protocol.base import MAX_INT32, RequestBody, WireModel

OutputDtype = Literal["float", "int8", "uint8", "binary", "ubinary"]


class EmbeddingRequest(RequestBody):
    """`dimensions` (OpenAI) and `output_dimension` (la Plateforme) are one setting; `output_dtype` is la
    Plateforme's (binary/ubinary pack the signs of the components, 8 to a byte, as sentence-transformers
    does). `metadata` (la Plateforme) and `user` (OpenAI) are accepted and not used."""

    model: str = Field(min_length=1)
    input: str | list[str] = Field(description="A text, or a list of texts, each embedded on its own.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=-MAX_INT32, le=MAX_INT32)  # checked against the model: 400
    output_dimension: int | None = Field(default=None, ge=-MAX_INT32, le=MAX_INT32)
    output_dtype: OutputDtype = "float"
    metadata: dict[str, Any] | None = None
    user: str | None = None


class EmbeddingData(WireModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | list[int] | str  # str: base64 of the little-endian float32 (or packed int) values
    index: int


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(WireModel):
    id: str
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingData]
    usage: EmbeddingUsage
