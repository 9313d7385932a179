"""Config of the long-running service (`civicsync run`): HTTP API, callbacks, scheduler, supervisor."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_TABLE = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Api(_Model):
    """The HTTP API: callbacks from the ML service, status, admin endpoints, /metrics."""

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    connection: str = Field(default="citizen",
                            description="database holding API keys and written by the callbacks (F9, F10)")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="larger request bodies get 413")
    max_items: int = Field(default=1000, ge=1, description="items per batched callback payload")
    retry_after_seconds: int = Field(default=5, ge=1,
                                     description="Retry-After of a 503 when a database is unavailable")
    status_public: bool = Field(
        default=True,
        description="GET /api/v1/status and the status page without a key (they hold no personal data); "
                    "false requires a key with admin:read")
    forecasts_table: str = Field(default="public.scheme_forecasts", pattern=_TABLE,
                                 description="F9 target: key (scheme_id, district, horizon_date)")
    alerts_table: str = Field(default="public.citizen_alerts", pattern=_TABLE,
                              description="F10 target: with source and source_alert_id columns (idempotency)")
    citizens_table: str = Field(default="public.citizens", pattern=_TABLE,
                                description="where a callback's citizen_id must exist")
    schemes_table: str = Field(default="public.schemes", pattern=_TABLE,
                               description="where a callback's scheme_id must exist")


    def privileges(self) -> dict[str, str]:
        """What the API must be allowed to do per table of its connection (for /ready and db init)."""
        return {"civicsync.api_keys": "SELECT", self.forecasts_table: "SELECT, INSERT, UPDATE",
                self.alerts_table: "SELECT, INSERT", self.citizens_table: "SELECT", self.schemes_table: "SELECT"}


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
