"""`GET /health` for load balancers and `GET /metrics` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from galerne.api.deps import RuntimeDep

router = APIRouter()


@router.get("/health")
async def health(runtime: RuntimeDep) -> dict[str, object]:
    models = {entry.id: runtime.registry.engine_for(entry).stats() for entry in runtime.registry.catalog.models}
    return {
        "status": "ok",
        "models": {
            model_id: {"queued": stats.num_queued, "active": stats.num_active, "slots": stats.num_slots}
            for model_id, stats in models.items()
        },
    }


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus's text format
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
