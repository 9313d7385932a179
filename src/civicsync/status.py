"""The state of every flow, read from the databases: what `civicsync status`, the status API, the
status page and the metrics gauges all show (one implementation for all of them)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from civicsync.capture.pgoutput import format_lsn
from civicsync.config import LoadedConfig
from civicsync.config.models import kafka_slot_name, slot_name
from civicsync.db.connect import connect


def config_hash(config: LoadedConfig, flow: str) -> str:
    """A fingerprint of a flow's config (its columns, filters and rules): a flow a schema change
    stopped stays stopped while it is unchanged (see :mod:`civicsync.runtime.flowstops`)."""
    text = config.model.flows[flow].model_dump_json(exclude_none=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cdc_sources(loaded: LoadedConfig, flows: list[str] | None = None, *, carried: bool = False) -> list[str]:
    """Source connections whose event-path flows the native path runs, one slot and worker each
    (optionally only among ``flows``, names or ids). With a ``kafka:`` section the Kafka-carried flows
    are not among them (a source whose flows are all on Kafka has no native slot), unless ``carried``
    (dead-letter replay re-reads any event-path flow's source rows, without a slot)."""
    model = loaded.model
    sources: list[str] = []
    for name, flow in model.flows.items():
        if not flow.streams or (flows and name not in flows and flow.id not in flows):
            continue
        if not carried and model.carried_by_kafka(name):
            continue
        if flow.source.connection not in sources:
            sources.append(flow.source.connection)
    return sources


def kafka_capture_sources(loaded: LoadedConfig) -> list[str]:
    """Source connections ``civicsync capture`` reads for the Kafka-carried flows (its own slot each);
    connections Debezium captures (``kafka.debezium``) are not among them: no slot of ours."""
    model = loaded.model
    debezium = model.kafka.debezium if model.kafka is not None else {}
    sources: list[str] = []
    for name in model.kafka_flows():
        source = model.flows[name].source.connection
        if source not in debezium and source not in sources:
            sources.append(source)
    return sources


def _slot_state(loaded: LoadedConfig, source: str, slot: str) -> dict[str, Any]:
    with connect(loaded.dsn(source), purpose="status", autocommit=True, label=source) as conn:
        row = conn.execute(
            "SELECT active, confirmed_flush_lsn::text,"
            " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint,"
            " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,)).fetchone()
    return {"slot": slot, "exists": row is not None, "active": bool(row and row[0]),
            "confirmed_lsn": row[1] if row else None, "lag_bytes": int(str(row[2])) if row else None,
            "retained_wal_bytes": int(str(row[3])) if row else None}


def _slots(loaded: LoadedConfig) -> dict[str, dict[str, Any]]:
    """The native slot of every source the native path reads."""
    return {source: _slot_state(loaded, source, slot_name(loaded.model, source)) for source in cdc_sources(loaded)}


def _capture_slots(loaded: LoadedConfig) -> dict[str, dict[str, Any]]:
    """The ``civicsync capture`` slot of every source it reads for the Kafka-carried flows."""
    return {source: _slot_state(loaded, source, kafka_slot_name(loaded.model, source))
            for source in kafka_capture_sources(loaded)}


def _target_state(loaded: LoadedConfig) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[Any, Any]]]:
    """From the target databases: per flow dead letters, last run and last success; per slot the position."""
    found: dict[str, dict[str, Any]] = {}
    positions: dict[str, tuple[Any, Any]] = {}
    for target in sorted({f.target.connection for f in loaded.model.flows.values()}):
        with connect(loaded.dsn(target), purpose="status", autocommit=True, label=target) as conn:
            for flow, n, oldest in conn.execute(
                    "SELECT flow, count(*), extract(epoch FROM clock_timestamp() - min(first_seen))::float8"
                    " FROM civicsync.dead_letters WHERE status = 'pending' GROUP BY flow"):
                found.setdefault(str(flow), {}).update(dead_letters=int(str(n)), dead_letter_oldest_age_seconds=oldest)
            for flow, status, finished, err_text in conn.execute(
                    "SELECT DISTINCT ON (flow) flow, status, finished_at, error FROM civicsync.runs"
                    " ORDER BY flow, run_id DESC"):
                found.setdefault(str(flow), {}).update(last_status=status, last_finished=finished, error=err_text)
            for flow, finished in conn.execute(
                    "SELECT flow, max(finished_at) FROM civicsync.runs WHERE status = 'succeeded' GROUP BY flow"):
                found.setdefault(str(flow), {})["last_success_at"] = finished
            for slot_id, lsn, commit_time in conn.execute("SELECT slot, lsn, commit_time FROM civicsync.cdc_positions"):
                positions[str(slot_id)] = (lsn, commit_time)
            for flow, slot_id, error, fingerprint in conn.execute(
                    "SELECT flow, slot, error, config_hash FROM civicsync.cdc_flow_stops"):
                found.setdefault(str(flow), {})["flow_stop"] = (str(slot_id), str(error), str(fingerprint))
    return found, positions


def _flow_stop(loaded: LoadedConfig, name: str, slot: str, stop: tuple[str, str, str] | None) -> dict[str, Any]:
    """A schema change's stop of the flow: ``stopped`` while its config is unchanged (the error names
    the column and what to change), ``resuming`` once it changed and the flow catches up."""
    if stop is None or stop[0] != slot:
        return {}
    if stop[2] == config_hash(loaded, name):
        return {"state": "stopped", "stop_reason": stop[1]}
    return {"resuming_after": stop[1]}


def _carried(capture: dict[str, Any] | None) -> dict[str, Any]:
    """A Kafka-carried flow's event path: ``civicsync capture``'s slot (None for a connection Debezium
    captures: no slot of ours; the state then comes from the consumer lag, see civicsync.kafka.lag).
    How far the target has applied is the Kafka consumer lag (``kafka_lag_*``), not a slot position."""
    common = {"carrier": "kafka", "position": None, "applied_lsn": None, "source_commit_time": None}
    if capture is None:
        return {**common, "capture": "debezium", "state": "on kafka", "slot": None, "lag_bytes": None,
                "retained_wal_bytes": None, "lag_seconds": None}
    caught_up = capture["lag_bytes"] is not None and capture["lag_bytes"] == 0
    return {**common, "capture": "civicsync", "slot": capture["slot"],
            "state": "streaming" if capture["active"] else ("stopped" if capture["exists"] else "not started"),
            "lag_bytes": capture["lag_bytes"], "retained_wal_bytes": capture["retained_wal_bytes"],
            "lag_seconds": 0.0 if caught_up else None}


def flow_status(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """One dict per flow: state, lag and WAL retained (event path), last run (batch path), dead letters.

    ``state`` is what the databases show: ``streaming`` (the slot is in use), ``stopped`` (the slot
    exists, nobody reads it, or a schema change stopped the flow: then ``stop_reason`` says why),
    ``not started``; for batch flows the last run's status or ``never run``. A Kafka-carried flow
    (``carrier: kafka``) shows the slot of ``civicsync capture`` instead of the native one (``slot``
    None and ``state`` ``on kafka`` for a connection Debezium captures); its apply lag is the consumer
    lag that civicsync.kafka.lag adds.
    A running service adds what only it knows (worker health) on top, see :mod:`civicsync.runtime.state`.
    """
    slots = _slots(loaded)
    capture_slots = _capture_slots(loaded)
    targets, positions = _target_state(loaded)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, flow in loaded.model.flows.items():
        t = targets.get(name, {})
        entry: dict[str, Any] = {
            "flow": name, "id": flow.id, "kind": flow.kind, "schedule": flow.schedule,
            "dead_letters": t.get("dead_letters", 0),
            "dead_letter_oldest_age_seconds": t.get("dead_letter_oldest_age_seconds", 0.0)}
        if flow.streams and loaded.model.carried_by_kafka(name):
            entry.update(_carried(capture_slots.get(flow.source.connection)))
        elif flow.streams:
            info = slots[flow.source.connection]
            pos = positions.get(info["slot"])
            caught_up = info["lag_bytes"] is not None and info["lag_bytes"] == 0
            entry.update(state="streaming" if info["active"] else ("stopped" if info["exists"] else "not started"),
                         slot=info["slot"], position=pos[0] if pos else None,
                         applied_lsn=format_lsn(int(pos[0])) if pos else None,
                         source_commit_time=pos[1].isoformat() if pos and pos[1] else None,
                         lag_bytes=info["lag_bytes"], retained_wal_bytes=info["retained_wal_bytes"],
                         lag_seconds=0.0 if caught_up else (
                             round((now - pos[1]).total_seconds(), 3) if pos and pos[1] else None))
            entry.update(_flow_stop(loaded, name, info["slot"], t.get("flow_stop")))
        if flow.batches:
            last_finished = t.get("last_finished")
            batch = {"last_run_status": t.get("last_status"),
                     "last_run": last_finished.isoformat() if last_finished else None,
                     "last_success_at": t.get("last_success_at"),
                     "last_run_failed": t.get("last_status") == "failed" if "last_status" in t else None,
                     "error": t.get("error")}
            entry.update(batch)
            if not flow.streams:
                entry["state"] = t.get("last_status") or "never run"
        rows.append(entry)
    return rows
