"""Config of the long-running service (`civicsync run`): HTTP API, callbacks, scheduler, supervisor."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

_TABLE = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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


class Api(_Model):
    """The HTTP API: callbacks from the ML service, status, admin endpoints, /metrics."""

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
