"""The status report behind ``GET /api/v1/status``, ``/ready`` and the status page.

It is :func:`civicsync.status.flow_status` (what the databases show), with what only a running
service knows (worker phases, scheduled jobs) laid on top, a verdict per flow (``ok``, ``warning``,
``error`` and the problems behind it), and the latest reconciliation results.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from civicsync.api.context import ApiContext, Conn
from civicsync.config import LoadedConfig
from civicsync.errors import CivicsyncError
from civicsync.kafka.capture import group_flows
from civicsync.kafka.lag import LagSample, sample_lag, with_kafka_lag
from civicsync.reconcile import latest_results
from civicsync.status import flow_status

log = logging.getLogger("civicsync.api")

LAG_WARNING_SECONDS = 60.0

Health = Literal["ok", "warning", "error"]


class FlowReport(BaseModel):
    """One flow as the status API shows it (fields of :func:`civicsync.status.flow_status` and more)."""

    model_config = ConfigDict(extra="allow")

    flow: str
    id: str
    kind: str
    state: str = Field(description="streaming / stopped / not started (event path; for a Kafka-carried flow, of "
                                   "civicsync capture's slot, or from the consumer lag when Debezium captures it); "
                                   "last run status or never run")
    carrier: str | None = Field(default=None, description="kafka: the event path runs on Kafka (capture + apply "
                                                          "--group), never on a native worker")
    health: Health
    problems: list[str] = Field(description="why the flow is not ok (empty when it is)")
    dead_letters: int = 0
    schedule: str | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    retained_wal_bytes: int | None = None
    last_run: str | None = None
    last_run_status: str | None = None
    error: str | None = None
    worker: dict[str, Any] | None = Field(default=None, description="the service's CDC worker of this flow")
    job: dict[str, Any] | None = Field(default=None, description="the service's schedule of this flow")
    kafka_lag_records: int | None = Field(default=None, description="Kafka-carried flows: records not applied yet")
    kafka_lag_seconds: float | None = Field(default=None, description="Kafka-carried flows: age of the oldest")
    kafka_lag_error: str | None = Field(default=None, description="why the Kafka lag is unknown")


class StatusReport(BaseModel):
    """Every flow, the running service (when there is one) and the reconciliation results."""

    generated_at: datetime
    healthy: bool = Field(description="no flow in error")
    flows: list[FlowReport]
    service: dict[str, Any] | None = Field(description="the service's state; null when the API runs alone")
    reconciliation: list[dict[str, Any]] = Field(description="latest reconciliation results, when they exist")
    kafka: dict[str, Any] | None = Field(
        default=None, description="the consumer groups' lag per partition (taken_at, error, partitions); "
                                  "null without a kafka: section")


def _assess(row: dict[str, Any], worker: dict[str, Any] | None) -> tuple[Health, list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    if row.get("carrier") == "kafka":
        # Carried by civicsync capture (or Debezium) and apply --group: no native worker runs it, by design.
        if row.get("slot") is not None and row["state"] != "streaming":
            errors.append(f"Kafka capture {row['state']} (nobody reads slot {row['slot']}: run civicsync capture)")
        elif row.get("slot") is None and row["state"] == "not started":
            warnings.append("no apply --group worker has applied a record yet")
    elif "slot" in row:
        if row.get("stop_reason"):
            errors.append(f"stopped by a schema change of its source: {row['stop_reason']}")
        if worker is not None:
            if worker["phase"] != "running":
                errors.append(f"CDC worker {worker['phase']}" + (f": {worker['last_error']}"
                                                                 if worker.get("last_error") else ""))
        elif row["state"] != "streaming":
            errors.append(f"event path {row['state']} (nobody reads slot {row['slot']})")
        if (row.get("lag_seconds") or 0) > LAG_WARNING_SECONDS:
            warnings.append(f"lag {row['lag_seconds']:.0f} s")
    if row.get("kafka_lag_error"):
        warnings.append(f"Kafka lag unknown: {row['kafka_lag_error']}")
    elif (row.get("kafka_lag_seconds") or 0) > LAG_WARNING_SECONDS:
        warnings.append(f"Kafka consumer lag {row['kafka_lag_seconds']:.0f} s")
    if row.get("last_run_failed"):
        errors.append(f"last run failed: {row.get('error') or 'unknown error'}")
    elif "last_run_status" in row and row["last_run_status"] is None:
        warnings.append("never run")
    if row.get("dead_letters"):
        warnings.append(f"{row['dead_letters']} dead letter(s) waiting")
    return ("error" if errors else "warning" if warnings else "ok"), errors + warnings


def build_report(ctx: ApiContext, with_keys: bool = False) -> StatusReport:
    """The status report now (reads both databases; raises DatabaseUnavailableError if one is down).
    Without ``with_keys`` the reconciliation results carry counts of sample keys, never the keys."""
    rows = flow_status(ctx.config)
    kafka = kafka_lag(ctx)
    with_kafka_lag(ctx.config, rows, kafka)
    service = ctx.state.snapshot() if ctx.state is not None else None
    workers = {f: w for w in (service or {}).get("workers", []) for f in w["flows"]}
    jobs = {j["flow"]: j for j in (service or {}).get("jobs", [])}
    flows = []
    for row in rows:
        native = row.get("slot") is not None and row.get("carrier") != "kafka"
        worker = workers.get(row["flow"]) if native else None
        if service is not None and native and worker is None:
            worker = {"name": None, "phase": "stopped", "last_error": "no worker runs this flow"}
        stopped = (service or {}).get("stopped_flows", {})
        if row["flow"] in stopped:  # the worker knows before the stop is in the target
            row.update(state="stopped", stop_reason=stopped[row["flow"]])
        health, problems = _assess(row, worker)
        flows.append(FlowReport(**jsonable_encoder(row), health=health, problems=problems,
                                worker=worker, job=jsonable_encoder(jobs.get(row["flow"]))))
    return StatusReport(generated_at=datetime.now(UTC), healthy=all(f.health != "error" for f in flows),
                        flows=flows, service=service, reconciliation=reconciliation(ctx.config, with_keys),
                        kafka=kafka.as_dict() if kafka is not None else None)


def kafka_lag(ctx: ApiContext) -> LagSample | None:
    """The consumer groups' lag: the service's last sample, or (the API alone) one read now; None
    without Kafka-carried flows or before the service's first sample."""
    kafka = ctx.config.model.kafka
    if kafka is None or not group_flows(ctx.config, None):
        return None
    if ctx.state is not None:
        sample: LagSample | None = ctx.state.kafka_lag
        return sample
    return sample_lag(ctx.config, kafka.lag.timeout_seconds)


def reconciliation(config: LoadedConfig, with_keys: bool = False) -> list[dict[str, Any]]:
    """The latest reconciliation results; the sample keys (personal data: a citizen id is a key) only
    ``with_keys``, else how many there are per class."""
    results = jsonable_encoder(latest_results(config) or [])
    return [_without_keys(r) if not with_keys else r if isinstance(r, dict) else {"result": r} for r in results]


def _without_keys(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        return {"result": "(hidden: needs admin:read)"}
    samples = result.get("samples")
    shown = {k: v for k, v in result.items() if k != "samples"}
    if isinstance(samples, dict):
        shown["sample_counts"] = {c: len(keys) if isinstance(keys, list) else 0 for c, keys in samples.items()}
    return shown


def not_ready(ctx: ApiContext) -> list[str]:
    """Why the service is not ready (empty when it is): a database unreachable, an event-path flow
    not running (per the service's workers, or per the slots when the API runs alone), shutting down."""
    reasons = ["the service is stopping"] if ctx.state is not None and ctx.state.stopping else []
    for name in ctx.config.model.connections:
        try:
            with ctx.database("ready", name) as conn:
                conn.execute("SELECT 1")
                if name == ctx.settings.connection:
                    reasons += cannot_write(conn, ctx.settings.privileges())
        except CivicsyncError as exc:
            reasons.append(f"database {name} unreachable: {exc}")
    if reasons:
        return reasons
    if ctx.state is not None:
        # The flows this service runs (``civicsync run --flow`` may run only some of them).
        stopped: dict[str, str] = ctx.state.snapshot()["stopped_flows"]
        down = [n for n, up in ctx.state.flows_running().items() if not up]
    else:
        # The native event path only: a Kafka-carried flow's health is its capture and consumer lag.
        rows = [r for r in flow_status(ctx.config)
                if r.get("slot") and r.get("carrier") != "kafka" and r["state"] != "streaming"]
        stopped = {r["flow"]: r["stop_reason"] for r in rows if r.get("stop_reason")}
        down = [r["flow"] for r in rows]
    return [f"flow {n} is stopped by a schema change: {stopped[n]}" if n in stopped else f"flow {n} is not running"
            for n in down]


def cannot_write(conn: Conn, privileges: dict[str, str]) -> list[str]:
    """Why the API's callbacks could not be stored in its database now (empty when they could): a
    standby or read-only session, a table missing (``db init`` not run), a privilege missing."""
    problems = []
    row = conn.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')").fetchone()
    if row is not None and (row[0] or row[1] == "on"):
        what = "is a standby" if row[0] else "is read-only"
        problems.append(f"the API's database {what}: callbacks cannot be stored")
    for table, wanted in privileges.items():
        # has_table_privilege is true if ANY of a list is held: ask for each one.
        found = conn.execute(
            "SELECT p FROM unnest(%s::text[]) p WHERE CASE WHEN to_regclass(%s) IS NULL THEN true"
            " ELSE NOT has_table_privilege(to_regclass(%s), p) END",
            ([p.strip() for p in wanted.split(",")], table, table)).fetchall()
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not (exists and exists[0]):
            problems.append(f"table {table} does not exist (run civicsync db init)")
        elif found:
            problems.append(f"the API's role lacks {', '.join(str(r[0]) for r in found)} on {table}")
    return problems
