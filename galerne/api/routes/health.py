"""`GET /health` for load balancers and `GET /metrics` for Prometheus.

`/health` needs no key and then says only whether each part is up (so it names no model); with a valid
key it adds the load of each model that key may use (every model for an admin key).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from galerne.api.deps import OptionalPrincipalDep, RuntimeDep
from galerne.protocol.health import HealthStatus, ModelHealth, PartStatus
from galerne.services.auth import Principal
from galerne.services.health import HealthReport

router = APIRouter()


@router.get(
    "/health",
    response_model=HealthStatus,
    response_model_exclude_none=True,
    responses={503: {"model": HealthStatus, "description": "A part is down; `down` names it."}},
)
async def health(runtime: RuntimeDep, caller: OptionalPrincipalDep) -> JSONResponse:
    report = await runtime.health.check()
    body = health_status(report, caller)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if report.is_healthy else 503)


def health_status(report: HealthReport, caller: Principal | None) -> HealthStatus:
    """Part health for anyone; model ids and load only for a caller who may see those models."""
    models = None
    if caller is not None:
        models = {
            model_id: ModelHealth(
                status=_status(stats.is_healthy), queued=stats.num_queued, active=stats.num_active,
                slots=stats.num_slots,
            )
            for model_id, stats in report.engines.items()
            if caller.is_admin or caller.may_use(model_id)
        }
    return HealthStatus(
        status="ok" if report.is_healthy else "unavailable",
        database=_status(report.is_database_up),
        limit_store=_status(report.is_limit_store_up),
        engines=_status(report.are_engines_up),
        down=report.down,
        models=models,
    )


def _status(is_up: bool) -> PartStatus:
    return "ok" if is_up else "down"


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus's text format
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
