"""Routes for operators and their tools: ``/health``, ``/ready``, ``/api/v1/status``, ``/metrics``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, Security
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, PlatformCollector, ProcessCollector, generate_latest
from pydantic import BaseModel

from civicsync.api.auth import optional_principal, require_scope
from civicsync.api.context import ApiContext, context
from civicsync.api.errors import responses
from civicsync.api.keys import Principal
from civicsync.api.status import StatusReport, build_report, not_ready
from civicsync.metrics import REGISTRY

_collectors_lock = threading.Lock()
_collectors_added = False


def add_process_collectors() -> None:
    """Register the process and platform collectors on civicsync's registry (once per process)."""
    global _collectors_added
    with _collectors_lock:
        if not _collectors_added:
            ProcessCollector(registry=REGISTRY)
            PlatformCollector(registry=REGISTRY)
            _collectors_added = True


class Health(BaseModel):
    """The process is up."""

    status: str = "ok"
    time: datetime


class Readiness(BaseModel):
    """Whether the service can do its job, and if not, why."""

    ready: bool
    reasons: list[str]


def ops_router(status_public: bool) -> APIRouter:
    """The operators' routes; the status API needs an admin:read key unless ``status_public``."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", response_model=Health, summary="The process is up (no database is asked)")
    def health() -> Health:
        """200 while the process serves requests."""
        return Health(time=datetime.now(UTC))

    @router.get("/ready", response_model=Readiness, summary="Both databases reachable, every event-path flow running",
                responses={503: {"model": Readiness, "description": "not ready; reasons says why"}})
    def ready(ctx: Annotated[ApiContext, Depends(context)]) -> Any:
        """200 when both databases answer and every CDC/hybrid flow runs; else 503 with the reasons."""
        reasons = not_ready(ctx)
        if reasons:
            return JSONResponse(Readiness(ready=False, reasons=reasons).model_dump(), status_code=503)
        return Readiness(ready=True, reasons=[])

    guard = [] if status_public else [Security(require_scope("admin:read"))]

    @router.get("/api/v1/status", response_model=StatusReport, dependencies=guard,
                responses=responses(401, *((500, 503) if status_public else (403, 500, 503))),
                summary="Every flow: state, lag, last runs, dead letters, verdict; service state; reconciliation")
    def status(ctx: Annotated[ApiContext, Depends(context)],
               principal: Annotated[Principal | None, Depends(optional_principal)]) -> StatusReport:
        """What `civicsync status` shows, with a verdict per flow, the service's workers and jobs, and the
        latest reconciliation results. Counts, never keys of people: the reconciliation's sample keys
        (row keys such as citizen ids) are shown only to a key with ``admin:read``."""
        with_keys = principal is not None and "admin:read" in principal.scopes
        return ctx.status_cache.get(with_keys, lambda: build_report(ctx, with_keys=with_keys))

    @router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)",
                responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                                 "description": "the metrics"}})
    def metrics() -> Response:
        """civicsync's metrics and the process's, for Prometheus."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
