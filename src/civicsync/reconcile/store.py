"""Reconciliation runs in the target database's control schema (migration 0005), and the metrics.

``civicsync.reconcile_runs`` holds one row per run: flow, method, rows compared per side, counts per
class, keys repaired, notes, error. ``civicsync.reconcile_differences`` holds every difference the run
kept, by key (as JSON of the target key's text values) with the differing column names and whether it
was repaired. Never a value: keys and column names only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from civicsync import metrics
from civicsync.config import LoadedConfig
from civicsync.db.connect import connect
from civicsync.errors import NotMigratedError as NotMigratedError  # re-exported: it lives in the one tree

Conn = psycopg.Connection[tuple[Any, ...]]
CLASSES = ("missing", "extra", "different", "rejected")
METRIC_CLASSES = ("missing", "extra", "different")


def start(conn: Conn, flow: str, method: str, repair: bool) -> int:
    """Record a run as started (autocommit connection); returns its id."""
    try:
        row = conn.execute("INSERT INTO civicsync.reconcile_runs (flow, status, method, repair)"
                           " VALUES (%s, 'running', %s, %s) RETURNING run_id", (flow, method, repair)).fetchone()
    except psycopg.errors.UndefinedTable:
        raise NotMigratedError(f"{conn.info.dbname} has no civicsync.reconcile_runs table: run `civicsync db init` "
                               "(it applies control migration 0005)") from None
    assert row is not None
    return int(row[0])


def finish(conn: Conn, run_id: int, summary: Mapping[str, Any],
           differences: Iterable[tuple[str, dict[str, Any], list[str], bool]]) -> None:
    """Record a run's outcome and its differences (class, key, columns, repaired) in one transaction."""
    with conn.transaction():
        conn.execute(
            "UPDATE civicsync.reconcile_runs SET finished_at = clock_timestamp(), status = %(status)s,"
            " method = %(method)s, source_rows = %(source_rows)s, target_rows = %(target_rows)s,"
            " missing = %(missing)s, extra = %(extra)s, different = %(different)s, rejected = %(rejected)s,"
            " repaired = %(repaired)s, notes = %(notes)s, error = %(error)s WHERE run_id = %(run_id)s",
            {**summary, "run_id": run_id})
        with conn.cursor().copy("COPY civicsync.reconcile_differences (run_id, class, row_key, columns, repaired)"
                                " FROM STDIN") as copy:
            for kind, key, columns, repaired in differences:
                copy.write_row((run_id, kind, json.dumps(key), columns, repaired))


def observe(flow: str, counts: Mapping[str, int], repaired: int, seconds: float) -> None:
    """Export a finished run to the Prometheus metrics."""
    for kind in METRIC_CLASSES:
        metrics.RECONCILE_DIFFERENCES.labels(flow, kind).set(counts.get(kind, 0))
    if repaired:
        metrics.RECONCILE_REPAIRED.labels(flow).inc(repaired)
    metrics.RECONCILE_LAST_RUN.labels(flow).set(time.time())
    metrics.RECONCILE_DURATION.labels(flow).observe(seconds)


def latest_results(config: LoadedConfig) -> list[dict[str, Any]]:
    """The last reconciliation of every flow that has one, newest first, JSON-ready, each with up to
    ``reconcile.sample`` keys per class (for the status API and page)."""
    by_target: dict[str, list[str]] = {}
    for name, flow in config.model.flows.items():
        by_target.setdefault(flow.target.connection, []).append(name)
    results: list[dict[str, Any]] = []
    for target, flows in sorted(by_target.items()):
        with connect(config.dsn(target), purpose="reconcile-status", autocommit=True, label=target) as conn:
            results += _latest(conn, config, flows)
    results.sort(key=lambda r: r["started_at"], reverse=True)
    return results


def _latest(conn: Conn, config: LoadedConfig, flows: list[str]) -> list[dict[str, Any]]:
    row = conn.execute("SELECT to_regclass('civicsync.reconcile_runs') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return []  # not migrated yet: nothing has been reconciled here
    with conn.cursor(row_factory=dict_row) as cur:
        runs = cur.execute(
            "SELECT DISTINCT ON (flow) run_id, flow, started_at, finished_at, status, method, repair, source_rows,"
            " target_rows, missing, extra, different, rejected, repaired, notes, error FROM civicsync.reconcile_runs"
            " WHERE flow = ANY(%s) ORDER BY flow, run_id DESC", (flows,)).fetchall()
        samples = cur.execute(
            "SELECT run_id, class, row_key, columns, repaired FROM (SELECT d.*, row_number() OVER"
            " (PARTITION BY run_id, class ORDER BY row_key::text) AS n FROM civicsync.reconcile_differences d"
            " WHERE run_id = ANY(%s)) x WHERE n <= %s ORDER BY run_id, class, n",
            ([r["run_id"] for r in runs], 1000)).fetchall()
    out = []
    for run in runs:
        flow = config.model.flows[run["flow"]]
        limit = flow.reconcile.sample
        keys: dict[str, list[dict[str, Any]]] = {c: [] for c in CLASSES}
        for s in samples:
            if s["run_id"] == run["run_id"] and len(keys[s["class"]]) < limit:
                keys[s["class"]].append({"key": s["row_key"], "columns": list(s["columns"]),
                                         "repaired": s["repaired"]})
        out.append({**{k: _json(v) for k, v in run.items()}, "id": flow.id, "notes": list(run["notes"]),
                    "samples": keys})
    return out


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
