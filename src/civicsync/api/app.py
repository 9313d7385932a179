"""The FastAPI application: callbacks, operations, admin, status page, error format, middleware."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from civicsync import __version__
from civicsync.api import admin, callbacks, page
from civicsync.api.context import ApiContext
from civicsync.api.errors import install_error_handlers
from civicsync.api.middleware import BodyLimit, RequestMetrics
from civicsync.api.ops import add_process_collectors, ops_router
from civicsync.config import LoadedConfig
from civicsync.runtime.state import ServiceState

DESCRIPTION = """\
civicsync's HTTP API: the ML service's callbacks (F9 forecasts, F10 alerts), health and readiness,
the status of every flow, dead-letter administration, Prometheus metrics and an operator status page.

Authenticate with an API key (`civicsync apikey create NAME --scope SCOPE`) sent as
`Authorization: Bearer KEY` or `X-API-Key: KEY`. Scopes: `forecasts:write`, `alerts:write`,
`admin:read`, `admin:write`. Every error has the body `{"error", "message", "fields"}`;
`fields` names each field at fault. See docs/api.md.
"""


def create_app(config: LoadedConfig, state: ServiceState | None = None) -> FastAPI:
    """The API for ``config``. With ``state`` (the running service's), readiness and the status report
    use its workers and jobs; without it (the API alone) readiness reads the replication slots."""
    settings = config.model.service.api
    # /docs and /redoc with their scripts and styles served from the fastapi-offline package, not a CDN:
    # the pages work on a closed network.
    app = FastAPIOffline(title="civicsync", version=__version__, description=DESCRIPTION,
                         static_url="/docs-assets", docs_url="/docs", redoc_url="/redoc",
                         openapi_tags=[{"name": "callbacks", "description": "F9 and F10, from the ML service"},
                                       {"name": "operations", "description": "health, readiness, status, metrics"},
                                       {"name": "admin", "description": "dead letters (admin scopes)"}])
    app.state.civicsync = ApiContext(config, state)
    install_error_handlers(app, settings.retry_after_seconds)
    app.include_router(callbacks.callbacks_router(settings))
    app.include_router(ops_router(settings.status_public))
    app.include_router(admin.router)
    app.include_router(page.router)
    add_process_collectors()
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       body_seconds=settings.limits.request_body_seconds)
    app.add_middleware(RequestMetrics)  # added last: outermost, so it also counts 413s and errors
    _document_limits(app, settings.max_items, settings.status_public)
    return app


def _document_limits(app: FastAPI, max_items: int, status_public: bool) -> None:
    """Put the configured batch limit and the status API's optional key into the OpenAPI document
    (the models and routes cannot know them)."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default()
            for name in ("ForecastBatch", "AlertBatch"):
                schema["components"]["schemas"][name]["properties"]["items"]["maxItems"] = max_items
            status = schema["paths"]["/api/v1/status"]["get"]
            if status_public:  # a key is optional there: it only adds the reconciliation's sample keys
                status["security"] = [{}, *status.get("security", [])]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
