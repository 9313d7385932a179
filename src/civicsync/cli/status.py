"""``civicsync status``: every flow's state, lag, last run and dead letters, and the Kafka groups' lag."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from civicsync.cli.common import ConfigOpt, JsonOpt, fail, load, out, user_errors
from civicsync.config import LoadedConfig
from civicsync.status import flow_status


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show every flow: state, lag (CDC), last run (batch), dead letters waiting; with a kafka: section,
    also the consumer groups' lag per partition. Exit 1 when the Kafka lag cannot be read."""
    with user_errors():
        loaded = load(config)
        rows = flow_status(loaded)
        lag_error = _kafka_lag(loaded, rows)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    else:
        out.print(_flow_table(rows))
        kafka_rows = [r for r in rows if r.get("kafka_lag")]
        if kafka_rows:
            out.print(_kafka_table(kafka_rows))
    if lag_error:
        fail(f"Kafka consumer lag unknown: {lag_error}", 1)


def _kafka_lag(loaded: LoadedConfig, rows: list[dict[str, Any]]) -> str | None:
    """Add the Kafka-carried flows' lag to ``rows``; the reason it is unknown, if it is."""
    if loaded.model.kafka is None:
        return None
    from civicsync.kafka.capture import group_flows
    from civicsync.kafka.lag import sample_lag, with_kafka_lag

    if not group_flows(loaded, None):
        return None
    sample = sample_lag(loaded, loaded.model.kafka.lag.timeout_seconds)
    with_kafka_lag(loaded, rows, sample)
    return sample.error


def _flow_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("id", "flow", "kind", "state", "applied up to", "lag", "WAL retained", "dead letters",
                  "last run / error")
    for r in rows:
        colour = {"streaming": "green", "succeeded": "green", "failed": "red", "stopped": "yellow"}.get(r["state"], "")
        state = f"[{colour}]{r['state']}[/]" if colour else r["state"]
        if "slot" in r:
            lag = "-" if r["lag_bytes"] is None else f"{r['lag_bytes']:,} B / {r['lag_seconds'] or 0:.1f} s"
            applied = "-" if r["applied_lsn"] is None else (
                f"{r['applied_lsn']} ({(r['source_commit_time'] or '')[:19]})")
            table.add_row(r["id"], r["flow"], r["kind"], state, applied, lag, f"{r['retained_wal_bytes'] or 0:,} B",
                          str(r["dead_letters"]), "")
        else:
            table.add_row(r["id"], r["flow"], r["kind"], state, "", "", "", str(r["dead_letters"]),
                          (r.get("error") or r.get("last_run") or "")[:70])
    return table


def _kafka_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("flow", "group", "topic", "partition", "applied", "high watermark", "lag", "lag s", "owner",
                  title="Kafka consumer groups")
    for r in rows:
        for p in r["kafka_lag"]:
            table.add_row(r["flow"], p["group"], p["topic"], str(p["partition"]), str(p["applied_offset"]),
                          str(p["high_watermark"]), str(p["lag_records"]), f"{p['lag_seconds']:.1f}", p["owner"])
    return table
