"""`POST /v1/embeddings`: vectors for a text or a list of texts, from a model that offers embeddings."""

from __future__ import annotations

from fastapi import APIRouter

from galerne.api.deps import PrincipalDep, RuntimeDep
from galerne.api.errors import error_responses
from galerne.protocol.embeddings import EmbeddingRequest, EmbeddingResponse

router = APIRouter(responses=error_responses(400, 401, 404, 413, 422, 429, 500, 502, 503, 504))


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, principal: PrincipalDep, runtime: RuntimeDep) -> EmbeddingResponse:
    """Embed each input on its own (la Plateforme's and OpenAI's shape; `encoding_format: base64` as the openai
    SDK sends by default). An input longer than the model's window is a 400 giving its token count."""
    return await runtime.embeddings.create(body, principal)
