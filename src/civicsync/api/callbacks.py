"""Routes of the ML service's callbacks: ``POST /api/v1/forecasts`` (F9) and ``POST /api/v1/alerts`` (F10).

The request bodies' id types come from the config (``service.api.scheme.type``,
``service.api.citizen.type``), so the routes are made per app by :func:`callbacks_router`. This module
does not use postponed annotations: FastAPI reads the routes' (local) body types from them.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Security

from civicsync.api.alerts import write_alerts
from civicsync.api.auth import require_scope
from civicsync.api.context import ApiContext, context
from civicsync.api.errors import ApiError, FieldError, responses
from civicsync.api.forecasts import write_forecasts
from civicsync.api.keys import Principal
from civicsync.api.models import AlertResult, AlertResults, ForecastResult, ForecastResults, callback_models, items_of
from civicsync.config.service import Api

_ERRORS = responses(400, 401, 403, 409, 413, 422, 500, 503)
_ERRORS[409]["description"] = "an idempotency key was reused for different content; nothing was written"


def _check_count(ctx: ApiContext, items: list[Any]) -> None:
    limit = ctx.settings.max_items
    if len(items) > limit:
        raise ApiError(422, f"at most {limit} items per request ({len(items)} sent); split the batch",
                       [FieldError(field="items", message=f"at most {limit} items", type="too_long")])


def callbacks_router(settings: Api) -> APIRouter:
    """The callback routes, their bodies typed as ``settings`` declares."""
    router = APIRouter(prefix="/api/v1", tags=["callbacks"])
    models = callback_models(settings.scheme.type, settings.citizen.type)
    forecast_request = models.forecast_request
    alert_request = models.alert_request

    @router.post("/forecasts", response_model=ForecastResult | ForecastResults, responses=_ERRORS,
                 summary="F9: store processing-time forecasts (one, or a batch under items)")
    def post_forecasts(body: Annotated[forecast_request, Body()],  # type: ignore[valid-type]
                       ctx: Annotated[ApiContext, Depends(context)],
                       _: Annotated[Principal, Security(require_scope("forecasts:write"))]) -> Any:
        """Idempotent on (scheme_id, district, horizon_date, model_version). A newer model version replaces
        the stored forecast of the same (scheme_id, district, horizon_date); an older one is answered with
        outcome ``superseded`` and not written. All items are applied, or none."""
        items, batch = items_of(body)
        _check_count(ctx, items)
        results = write_forecasts(ctx, items, batch)
        return ForecastResults(items=results) if batch else results[0]

    @router.post("/alerts", response_model=AlertResult | AlertResults, responses=_ERRORS,
                 summary="F10: store alerts for citizens, or broadcast (one, or a batch under items)")
    def post_alerts(body: Annotated[alert_request, Body()],  # type: ignore[valid-type]
                    ctx: Annotated[ApiContext, Depends(context)],
                    principal: Annotated[Principal, Security(require_scope("alerts:write"))]) -> Any:
        """Idempotent on the caller's ``alert_id`` (per API client): a resend answers with the same
        ``portal_alert_id`` and writes nothing; the same id with other content is a 409. All items are
        applied, or none."""
        items, batch = items_of(body)
        _check_count(ctx, items)
        results = write_alerts(ctx, principal, items, batch)
        return AlertResults(items=results) if batch else results[0]

    return router
