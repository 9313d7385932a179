"""Request and response bodies of the ML callbacks: F9 forecasts and F10 alerts.

Each callback takes one item, or a batch ``{"items": [...]}``. Unknown fields are refused (422
naming them); types are strict (``"5"`` is not a number, ``5`` is not a date); strings may not hold
control characters (or, in messages, NUL) that the database could not store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StringConstraints,
    Tag,
    create_model,
    model_validator,
)

_BIGINT_MAX = 2**63 - 1


def _iso_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a string in ISO 8601 form")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number")
    return value


def _storable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _in_utc(value: datetime) -> datetime:
    """The instant in UTC. An offset can move a date-time out of the years 1-9999 (``0001-01-01T00:00
    +05:30`` is in year 0 in UTC): PostgreSQL would store it, but it could never be read back (every
    resend would fail), so it is refused here, naming the field."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC the instant must fall within the years 1 to 9999") from None


def _scale(places: int) -> AfterValidator:
    quantum = Decimal(1).scaleb(-places)
    return AfterValidator(lambda d: d.quantize(quantum, rounding=ROUND_HALF_EVEN))


Id = Annotated[int, Field(strict=True, ge=1, le=_BIGINT_MAX)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"),
                  AfterValidator(_storable)]
Code = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]+$"),
                 AfterValidator(_storable)]
# Strict bodies, but these arrive as JSON strings: parse the string, refuse anything else.
IsoDate = Annotated[date, Strict(False), BeforeValidator(_iso_string)]
IsoDateTime = Annotated[AwareDatetime, Strict(False), BeforeValidator(_iso_string), AfterValidator(_in_utc)]
Uuid = Annotated[UUID, Strict(False), BeforeValidator(_iso_string)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _shape(value: Any) -> str:
    """'batch' for ``{"items": ...}``, else 'item' (which then names what is wrong)."""
    return "batch" if isinstance(value, dict) and "items" in value else "item"


# --------------------------------------------------------------------------- F9 forecasts


class Forecast(_Body):
    """One processing-time forecast for a scheme in a district on a future date (F9)."""

    scheme_id: Id = Field(description="must exist in the portal's schemes")
    district: Label
    horizon_date: IsoDate = Field(description="the day the forecast is for (YYYY-MM-DD)")
    expected_processing_days: Annotated[
        Decimal, BeforeValidator(_number), Field(strict=False, ge=0, le=Decimal("999999.99"),
                                                 allow_inf_nan=False), _scale(2)] | None = Field(
        default=None, description="rounded to 2 decimal places")
    demand_index: Annotated[
        Decimal, BeforeValidator(_number), Field(strict=False, ge=0, le=Decimal("9999.9999"),
                                                 allow_inf_nan=False), _scale(4)] | None = Field(
        default=None, description="rounded to 4 decimal places")
    model_version: Annotated[str, StringConstraints(min_length=1, max_length=64,
                                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+:-]*$")] = Field(
        description="compared in natural order (v2.10 is newer than v2.9); see docs/api.md")


class ForecastBatch(_Body):
    """Several forecasts, applied all or nothing."""

    items: list[Forecast] = Field(min_length=1, description="at most service.api.max_items")


ForecastRequest = Annotated[
    Annotated[Forecast, Tag("item")] | Annotated[ForecastBatch, Tag("batch")], Discriminator(_shape)]

ForecastOutcome = Literal["created", "replaced", "unchanged", "superseded"]


class ForecastResult(BaseModel):
    """What happened to one forecast."""

    scheme_id: int | str
    district: str
    horizon_date: date
    model_version: str
    outcome: ForecastOutcome = Field(
        description="created; replaced (an older model's forecast); unchanged (the same forecast again: "
                    "nothing written); superseded (a newer model's forecast is stored: nothing written)")
    current_model_version: str = Field(description="the model version stored for this key now")


class ForecastResults(BaseModel):
    """What happened to each forecast of a batch, in request order."""

    items: list[ForecastResult]


# --------------------------------------------------------------------------- F10 alerts


class Alert(_Body):
    """One alert for the portal (F10): to one citizen, or broadcast (optionally to a district / scheme)."""

    alert_id: Code = Field(description="the caller's own id; a resend with the same id is not duplicated")
    citizen_id: Uuid | None = Field(default=None, description="the citizen to alert; absent for a broadcast")
    scheme_id: Id | None = Field(default=None, description="the scheme it concerns (must exist)")
    district: Label | None = Field(default=None, description="broadcast only: limit it to one district")
    severity: Literal["info", "warning", "critical"]
    alert_type: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    message: Text
    expires_at: IsoDateTime | None = Field(default=None, description="with a time zone")

    @model_validator(mode="after")
    def _target(self) -> Alert:
        if self.citizen_id is not None and self.district is not None:
            raise ValueError("district applies to broadcast alerts only (leave it out when citizen_id is given)")
        return self


class AlertBatch(_Body):
    """Several alerts, applied all or nothing."""

    items: list[Alert] = Field(min_length=1, description="at most service.api.max_items")


AlertRequest = Annotated[Annotated[Alert, Tag("item")] | Annotated[AlertBatch, Tag("batch")], Discriminator(_shape)]


class AlertResult(BaseModel):
    """What happened to one alert."""

    alert_id: str = Field(description="the caller's id, as sent")
    portal_alert_id: int = Field(description="the alert's id in the portal (the same on every resend)")
    outcome: Literal["created", "duplicate"] = Field(description="duplicate: sent before, nothing written")


class AlertResults(BaseModel):
    """What happened to each alert of a batch, in request order."""

    items: list[AlertResult]


# --------------------------------------------------------------------------- ids typed by the config

_ID_TYPES: dict[str, Any] = {
    "bigint": Id,
    "integer": Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)],
    "text": Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"),
                      AfterValidator(_storable)],
    "uuid": Uuid,
}


@dataclass(frozen=True)
class CallbackModels:
    """The request bodies of one app, their ids typed as its config declares (``service.api.scheme.type``,
    ``service.api.citizen.type``): a JSON integer for bigint/integer ids, a string for text and uuid ones."""

    forecast: type[Forecast]
    forecast_batch: type[ForecastBatch]
    forecast_request: Any
    alert: type[Alert]
    alert_batch: type[AlertBatch]
    alert_request: Any


def callback_models(scheme_type: str, citizen_type: str) -> CallbackModels:
    """The callback bodies with ``scheme_id`` and ``citizen_id`` of these SQL types (the reference's
    bigint and uuid give exactly the module's own models)."""
    scheme, citizen = _ID_TYPES[scheme_type], _ID_TYPES[citizen_type]
    forecast = create_model("Forecast", __base__=Forecast, __doc__=Forecast.__doc__,
                            scheme_id=(scheme, Field(description="must exist in the portal's schemes")))
    forecast_batch = create_model("ForecastBatch", __base__=ForecastBatch, __doc__=ForecastBatch.__doc__,
                                  items=(list[forecast], Field(
                                      min_length=1, description="at most service.api.max_items")))
    alert = create_model("Alert", __base__=Alert, __doc__=Alert.__doc__,
                         citizen_id=(citizen | None, Field(
                             default=None, description="the citizen to alert; absent for a broadcast")),
                         scheme_id=(scheme | None, Field(
                             default=None, description="the scheme it concerns (must exist)")))
    alert_batch = create_model("AlertBatch", __base__=AlertBatch, __doc__=AlertBatch.__doc__,
                               items=(list[alert], Field(
                                   min_length=1, description="at most service.api.max_items")))
    return CallbackModels(
        forecast, forecast_batch,
        Annotated[Annotated[forecast, Tag("item")] | Annotated[forecast_batch, Tag("batch")],
                  Discriminator(_shape)],
        alert, alert_batch,
        Annotated[Annotated[alert, Tag("item")] | Annotated[alert_batch, Tag("batch")],
                  Discriminator(_shape)])


def items_of(body: Forecast | ForecastBatch | Alert | AlertBatch) -> tuple[list[Any], bool]:
    """The request's items and whether it was a batch."""
    if isinstance(body, ForecastBatch | AlertBatch):
        return list(body.items), True
    return [body], False


__all__ = [
    "Alert",
    "AlertBatch",
    "AlertRequest",
    "AlertResult",
    "AlertResults",
    "CallbackModels",
    "Forecast",
    "ForecastBatch",
    "ForecastRequest",
    "ForecastResult",
    "ForecastResults",
    "callback_models",
    "items_of",
]
