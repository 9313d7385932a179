"""Every Prometheus metric civicsync exports, in one place, grouped by the question it answers.

Names follow Prometheus conventions (base units, ``_total`` for counters, ``_seconds`` / ``_bytes``).
Labels are bounded: flow names, slot names, worker names, API route templates, never keys or values.
Alert rules (``deploy/prometheus/``) and dashboards (``deploy/grafana/``) are written against these
names; rename one and their promtool unit tests fail.

Gauges that describe the databases (lag, WAL retained, dead letters) are refreshed by
:func:`observe_status` from :func:`civicsync.status.flow_status`, which the service calls on a timer,
so a scrape never waits for a database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)
"""civicsync's own registry: /metrics serves exactly these (plus process metrics, added by the API)."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RUN_BUCKETS = (0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200)

BUILD = Info("civicsync_build", "civicsync version and config in use", registry=REGISTRY)

# --- Is every flow running? ------------------------------------------------------------------------
FLOW_UP = Gauge("civicsync_flow_up",
                "1 while the flow is running as configured (CDC: its worker streams; batch: it is scheduled)",
                ["flow", "kind"], registry=REGISTRY)
FLOW_STOPPED = Gauge("civicsync_flow_stopped",
                     "1 while a schema change of its source (a mapped column dropped, renamed or retyped) stops the "
                     "CDC flow, while the other flows of its worker go on; its config must change", ["flow"],
                     registry=REGISTRY)
REPLICATION_BROKEN = Gauge("civicsync_replication_broken",
                           "1 while a CDC worker is stopped for good: its replication stream failed in a way a "
                           "reconnect cannot fix (slot or publication gone, slot invalidated, permission revoked)",
                           ["worker"], registry=REGISTRY)
WORKER_RESTARTS = Counter("civicsync_worker_restarts_total",
                          "CDC workers restarted by the supervisor after a crash", ["worker"], registry=REGISTRY)

# --- Is CDC keeping up? ----------------------------------------------------------------------------
CDC_CAPTURED = Counter("civicsync_cdc_events_captured_total",
                       "Row changes read from the replication stream for the flow's source table",
                       ["flow"], registry=REGISTRY)
CDC_APPLIED = Counter("civicsync_cdc_events_applied_total",
                      "Row changes committed to the target (including those the flow's rules dropped)",
                      ["flow"], registry=REGISTRY)
CDC_APPLY_LATENCY = Histogram("civicsync_cdc_apply_latency_seconds",
                              "Source commit to target commit, per source transaction",
                              ["worker"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
REPLICATION_LAG_BYTES = Gauge("civicsync_replication_lag_bytes",
                              "WAL between the source's current position and what civicsync confirmed",
                              ["slot"], registry=REGISTRY)
REPLICATION_LAG_SECONDS = Gauge("civicsync_replication_lag_seconds",
                                "How long the oldest change not yet applied has waited since its source commit "
                                "(0 when caught up)", ["flow"], registry=REGISTRY)
SLOT_WAL_RETAINED = Gauge("civicsync_slot_wal_retained_bytes",
                          "WAL the source keeps for the replication slot (restart_lsn to current)",
                          ["slot"], registry=REGISTRY)

# --- Is bad data piling up? ------------------------------------------------------------------------
DLQ_DEPTH = Gauge("civicsync_dead_letters", "Dead letters waiting (pending)", ["flow"], registry=REGISTRY)
DEAD_LETTERS_CREATED = Counter("civicsync_dead_letters_created_total",
                               "Dead letters created (a replay that succeeds does not decrease it)", ["flow"],
                               registry=REGISTRY)
DLQ_OLDEST_AGE = Gauge("civicsync_dead_letter_oldest_age_seconds",
                       "Age of the oldest pending dead letter (0 when none)", ["flow"], registry=REGISTRY)
CONFLICTS = Counter("civicsync_conflicts_decided_total",
                    "Field conflicts the ownership policy decided (each is recorded in civicsync.conflicts)",
                    ["flow"], registry=REGISTRY)

# --- Did the batch jobs run? -----------------------------------------------------------------------
BATCH_DURATION = Histogram("civicsync_batch_run_duration_seconds", "Wall time of one batch run",
                           ["flow"], buckets=_RUN_BUCKETS, registry=REGISTRY)
BATCH_RUNS = Counter("civicsync_batch_runs_total", "Batch runs by outcome", ["flow", "status"], registry=REGISTRY)
BATCH_ROWS = Counter("civicsync_batch_rows_total", "Rows handled by batch runs",
                     ["flow", "outcome"], registry=REGISTRY)  # outcome: read | written | deleted | rejected
BATCH_LAST_SUCCESS = Gauge("civicsync_batch_last_success_timestamp_seconds",
                           "Unix time the flow's last successful run finished", ["flow"], registry=REGISTRY)
BATCH_LAST_FAILED = Gauge("civicsync_batch_last_run_failed", "1 if the flow's most recent run failed",
                          ["flow"], registry=REGISTRY)
BATCH_INTERVAL = Gauge("civicsync_batch_schedule_interval_seconds",
                       "Longest gap between two scheduled runs of the flow (from its cron schedule)",
                       ["flow"], registry=REGISTRY)

# --- Do source and target agree? -------------------------------------------------------------------
RECONCILE_DIFFERENCES = Gauge("civicsync_reconcile_differences",
                              "Differences the flow's last reconciliation found, by class",
                              ["flow", "class"], registry=REGISTRY)  # class: missing | extra | different
RECONCILE_REPAIRED = Counter("civicsync_reconcile_repaired_total", "Keys repaired by reconciliation",
                             ["flow"], registry=REGISTRY)
RECONCILE_LAST_RUN = Gauge("civicsync_reconcile_last_run_timestamp_seconds",
                           "Unix time the flow's last reconciliation finished", ["flow"], registry=REGISTRY)
RECONCILE_DURATION = Histogram("civicsync_reconcile_duration_seconds", "Wall time of one reconciliation",
                               ["flow"], buckets=_RUN_BUCKETS, registry=REGISTRY)

# --- Is the API healthy? ---------------------------------------------------------------------------
API_REQUESTS = Counter("civicsync_api_requests_total", "HTTP requests by route template, method and status",
                       ["route", "method", "status"], registry=REGISTRY)
API_LATENCY = Histogram("civicsync_api_request_duration_seconds", "HTTP request handling time",
                        ["route", "method"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)


def observe_status(rows: Iterable[Mapping[str, Any]]) -> None:
    """Refresh the database-derived gauges from :func:`civicsync.status.flow_status` rows."""
    for r in rows:
        flow = str(r["flow"])
        DLQ_DEPTH.labels(flow).set(r.get("dead_letters") or 0)
        DLQ_OLDEST_AGE.labels(flow).set(r.get("dead_letter_oldest_age_seconds") or 0)
        if r.get("slot"):
            slot = str(r["slot"])
            if r.get("lag_bytes") is not None:
                REPLICATION_LAG_BYTES.labels(slot).set(r["lag_bytes"])
            if r.get("retained_wal_bytes") is not None:
                SLOT_WAL_RETAINED.labels(slot).set(r["retained_wal_bytes"])
        if r.get("last_success_at") is not None:
            BATCH_LAST_SUCCESS.labels(flow).set(r["last_success_at"].timestamp())
        if r.get("last_run_failed") is not None:
            BATCH_LAST_FAILED.labels(flow).set(1 if r["last_run_failed"] else 0)


def observe_reconciliations(rows: Iterable[Mapping[str, Any]]) -> None:
    """Set the reconciliation gauges from the stored last run per flow (``reconcile.latest_results``),
    so that runs made by another process (``civicsync reconcile``) and before a restart show too."""
    for r in rows:
        if r.get("status") not in ("equal", "different", "repaired"):
            continue  # still running, or failed: its counts say nothing about the data
        flow = str(r["flow"])
        for kind in ("missing", "extra", "different"):
            RECONCILE_DIFFERENCES.labels(flow, kind).set(r.get(kind) or 0)
        finished = r.get("finished_at")
        if finished:
            RECONCILE_LAST_RUN.labels(flow).set(datetime.fromisoformat(str(finished)).timestamp())


def declare_flows(flows: Iterable[str]) -> None:
    """Create every per-flow counter at 0, so that the first event after a start is an increase."""
    for flow in flows:
        for counter in (CDC_CAPTURED, CDC_APPLIED, DEAD_LETTERS_CREATED, CONFLICTS, RECONCILE_REPAIRED):
            counter.labels(flow)


# --- Does masking hold? (audit pii) ----------------------------------------------------------------

PII_AUDIT_LEAKING_ROWS = Gauge("civicsync_pii_audit_leaking_rows",
                               "Rows of target databases that held raw protected values at the last `audit pii`",
                               registry=REGISTRY)
PII_AUDIT_LAST_RUN = Gauge("civicsync_pii_audit_last_run_timestamp_seconds",
                           "When `audit pii` last completed a scan", registry=REGISTRY)


def record_pii_audit(clean: bool, leaking_rows: int) -> None:
    """Publish the outcome of a PII audit (counts only)."""
    PII_AUDIT_LEAKING_ROWS.set(0 if clean else max(leaking_rows, 1))
    PII_AUDIT_LAST_RUN.set(time.time())

# Kafka (issue 13): consumer-group apply (`civicsync apply --group`) and `civicsync capture`.
KAFKA_CONSUMER_LAG_RECORDS = Gauge("civicsync_kafka_consumer_lag_records",
                                   "Records of a partition the group has not applied (high watermark - stored offset)",
                                   ["group", "topic", "partition"], registry=REGISTRY)
KAFKA_CONSUMER_LAG_SECONDS = Gauge("civicsync_kafka_consumer_lag_seconds",
                                   "Age of the oldest record of a partition not yet applied (0 when caught up)",
                                   ["group", "topic", "partition"], registry=REGISTRY)
KAFKA_LAG_SAMPLE_FAILED = Gauge("civicsync_kafka_lag_sample_failed",
                                "1 while the service cannot read the consumer groups' lag (broker or a target "
                                "unreachable): the lag gauges are not current", registry=REGISTRY)
KAFKA_APPLIED = Counter("civicsync_kafka_records_applied_total", "Kafka records applied to the target",
                        ["group", "topic"], registry=REGISTRY)
KAFKA_FENCED = Counter("civicsync_kafka_fenced_total",
                       "Batches rolled back because another worker of the group owned the partition",
                       ["group"], registry=REGISTRY)
KAFKA_PUBLISHED = Counter("civicsync_kafka_records_published_total", "Records civicsync capture delivered to Kafka",
                          ["topic"], registry=REGISTRY)
