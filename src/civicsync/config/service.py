"""Config of the long-running service (`civicsync run`): HTTP API, callbacks, scheduler, supervisor."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_TABLE = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"
_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


IdType = Literal["bigint", "integer", "text", "uuid"]
"""SQL types an id sent by the ML service may have: a JSON integer for bigint/integer, a string else."""


def _column(name: str) -> Any:
    """A mapped column, by default the field's own name."""
    return Field(default=name, pattern=_IDENT)


class IdRef(_Model):
    """Where an id the ML service sends must exist (its table and column), and the column's SQL type."""

    table: str = Field(pattern=_TABLE)
    column: str = Field(pattern=_IDENT)
    type: IdType


class _Mapped(_Model):
    """The fields forecasts and alerts share, each mapped to a target column (default: its own name)."""

    scheme_id: str = _column("scheme_id")
    district: str = _column("district")


class ForecastColumns(_Mapped):
    """F9: the target column of each field of a forecast (default: the field's own name)."""

    horizon_date: str = _column("horizon_date")
    expected_processing_days: str = _column("expected_processing_days")
    demand_index: str = _column("demand_index")
    model_version: str = _column("model_version")
    received_at: str = Field(default="received_at", pattern=_IDENT, description="set by civicsync on each write")


class ForecastTarget(_Model):
    """F9's target table: its key must be the columns of (scheme_id, district, horizon_date)."""

    table: str = Field(default="public.scheme_forecasts", pattern=_TABLE)
    columns: ForecastColumns = Field(default_factory=ForecastColumns)

    def key(self) -> tuple[str, str, str]:
        """The target columns of the forecast's identity (scheme_id, district, horizon_date)."""
        return self.columns.scheme_id, self.columns.district, self.columns.horizon_date


class AlertColumns(_Mapped):
    """F10: the target column of each field of an alert, and of what civicsync adds."""

    portal_id: str = Field(default="alert_id", pattern=_IDENT,
                           description="the table's own generated key, answered as portal_alert_id")
    client: str = Field(default="source", pattern=_IDENT, description="the API client that sent it")
    alert_id: str = Field(default="source_alert_id", pattern=_IDENT,
                          description="the client's alert_id (unique with client: a resend is not duplicated)")
    citizen_id: str = _column("citizen_id")
    severity: str = _column("severity")
    alert_type: str = _column("alert_type")
    message: str = _column("message")
    expires_at: str = _column("expires_at")

    def content(self) -> dict[str, str]:
        """Field → column of what an alert says (what a resend must repeat exactly)."""
        return {f: getattr(self, f) for f in ("citizen_id", "scheme_id", "district", "severity", "alert_type",
                                              "message", "expires_at")}


class AlertTarget(_Model):
    """F10's target table: its key is the generated ``portal_id`` column."""

    table: str = Field(default="public.citizen_alerts", pattern=_TABLE)
    columns: AlertColumns = Field(default_factory=AlertColumns)


class Pool(_Model):
    """The API's pool of sessions on its own connection (keys, callbacks), shared by all requests."""

    min_size: int = Field(default=2, ge=0, description="sessions kept open while idle")
    max_size: int = Field(default=10, ge=1, description="at most this many sessions; more requests wait")
    timeout_seconds: float = Field(default=5.0, gt=0,
                                   description="a request waiting longer for a session gets 503")

    @model_validator(mode="after")
    def _sizes(self) -> Pool:
        if self.min_size > self.max_size:
            raise ValueError("min_size may not exceed max_size")
        return self


class Limits(_Model):
    """What slow or too many clients may hold of the server (uvicorn's settings)."""

    max_connections: int = Field(default=1000, ge=1,
                                 description="open connections at once; beyond, new requests get 503 at once")
    keep_alive_seconds: float = Field(default=5.0, gt=0, description="an idle keep-alive connection is closed after")
    request_header_seconds: float = Field(
        default=10.0, gt=0, description="a client must send its request headers within this (slow clients are cut)")
    request_body_seconds: float = Field(
        default=30.0, gt=0, description="a request's body must have arrived within this of its headers (else 408)")


class Api(_Model):
    """The HTTP API: callbacks from the ML service, status, admin endpoints, /metrics."""

    enabled: bool = Field(
        default=True,
        description="serve the HTTP API in `civicsync run`; false: a config that has no API (its connection and "
                    "callback tables need not be declared, and `apikey` commands refuse)")
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    connection: str = Field(default="citizen",
                            description="database holding API keys and written by the callbacks (F9, F10)")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="larger request bodies get 413")
    max_items: int = Field(default=1000, ge=1, description="items per batched callback payload")
    pool: Pool = Field(default_factory=Pool)
    limits: Limits = Field(default_factory=Limits)
    status_cache_seconds: float = Field(
        default=2.0, ge=0, description="GET /api/v1/status is rebuilt at most this often (0: every request)")
    retry_after_seconds: int = Field(default=5, ge=1,
                                     description="Retry-After of a 503 when a database is unavailable")
    status_public: bool = Field(
        default=True,
        description="GET /api/v1/status and the status page without a key (they hold no personal data); "
                    "false requires a key with admin:read")
    forecasts: ForecastTarget = Field(default_factory=ForecastTarget, description="F9: where forecasts go")
    alerts: AlertTarget = Field(default_factory=AlertTarget, description="F10: where alerts go")
    citizen: IdRef = Field(default_factory=lambda: IdRef(table="public.citizens", column="citizen_id", type="uuid"),
                           description="where a callback's citizen_id must exist, and its type")
    scheme: IdRef = Field(default_factory=lambda: IdRef(table="public.schemes", column="scheme_id", type="bigint"),
                          description="where a callback's scheme_id must exist, and its type")

    def privileges(self) -> dict[str, str]:
        """What the API must be allowed to do per table of its connection (for /ready and db init)."""
        return {"civicsync.api_keys": "SELECT", self.forecasts.table: "SELECT, INSERT, UPDATE",
                self.alerts.table: "SELECT, INSERT", self.citizen.table: "SELECT", self.scheme.table: "SELECT"}


class Scheduler(_Model):
    """The embedded scheduler of batch flows."""

    enabled: bool = True
    misfire_grace_seconds: int = Field(
        default=43200, ge=1,
        description="a run missed by less than this (service down at its time) still runs once on start")


class Supervisor(_Model):
    """Restarting crashed CDC workers."""

    restart_initial_delay: float = Field(default=1.0, gt=0)
    restart_max_delay: float = Field(default=60.0, gt=0)
    status_interval_seconds: float = Field(default=5.0, gt=0,
                                           description="how often lag, WAL and dead-letter gauges are refreshed")


class Service(_Model):
    """Everything `civicsync run` needs beyond the flows."""

    api: Api = Field(default_factory=Api)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    supervisor: Supervisor = Field(default_factory=Supervisor)
