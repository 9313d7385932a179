"""Replication origins: how civicsync marks its own writes, and the echo rule built on them.

Every writer marks its transactions with an origin that names it (one per concurrent writer:
PostgreSQL lets one session use an origin at a time):

- ``<prefix>_cdc_<slot>`` and ``<prefix>_replay_<slot>``: the CDC worker of a source's slot and
  replays of its dead letters; they write for every event-path flow of that source;
- ``<prefix>_kafka<i>_<slot>``: the i-th concurrent ``apply --group`` worker for that source's flows;
- ``<prefix>_batch_<flow>``, ``<prefix>_reconcile_<flow>``, ``<prefix>_resync_<flow>``: one flow's
  batch runs, reconciliation repairs and slot re-synchronisations.

**The echo rule (SPEC §4 "No echo loops").** A change never goes back to the table it was derived
from. A captured change of table T whose origin is O is skipped by a reading flow R exactly when one
of O's flows derived T from R's target table (it wrote T, or its event log or change-request table,
from that table). Any other change civicsync made flows on: an officer's decision that F4 wrote into
the portal's ``applications`` reaches the warehouse through F6, because F4 derived it from
``application_decisions``, not from the warehouse's ``applications``. Everything is read from the
config: no flow or table is named here. Connections are compared by the database they reach.

Reconciliation repairs write under their flow's ``reconcile`` origin, so the same rule keeps a
repair from being carried back. An origin names a *worker*: when one worker writes a table for two
flows and only one of them derived it from a reader's target, the reader skips both (no echo, at
the price of the other flow's changes to that table); give such a flow its own connection (its own
slot) to tell them apart.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from civicsync.config import LoadedConfig
from civicsync.config.models import Flow, slot_name
from civicsync.db.connect import describe

SLOT_WRITERS = ("cdc", "replay")
FLOW_WRITERS = ("batch", "reconcile", "resync")


def origin_for(config: LoadedConfig, writer: str) -> str:
    """The origin a writer marks its transactions with (see the module's list of writers)."""
    return f"{config.model.origin}_{writer}"[:63]


def writers(config: LoadedConfig) -> dict[str, set[str]]:
    """Every origin civicsync writes with → the names of the flows whose writes it carries."""
    model = config.model
    found: dict[str, set[str]] = {}
    for source in sorted({f.source.connection for f in model.flows.values() if f.streams}):
        slot = slot_name(model, source)
        for kind in SLOT_WRITERS:
            found.setdefault(origin_for(config, f"{kind}_{slot}"), set()).update(model.streaming_flows(source))
        for origin in kafka_origins(config, slot):  # the apply --group workers of this source's flows
            found.setdefault(origin, set()).update(model.streaming_flows(source))
    for name in model.flows:
        for kind in FLOW_WRITERS:
            found.setdefault(origin_for(config, f"{kind}_{name}"), set()).add(name)
    return found


def kafka_origins(config: LoadedConfig, slot: str) -> list[str]:
    """The origins of `apply --group` workers for a source's flows (one per concurrent worker)."""
    kafka = config.model.kafka
    return [origin_for(config, f"kafka{i}_{slot}") for i in range(kafka.consumer.max_workers if kafka else 0)]


def written_tables(flow: Flow) -> set[str]:
    """The tables of the target connection a flow writes: its target, event log and request table."""
    tables = {flow.target.table}
    if flow.cdc is not None and flow.cdc.event_log is not None:
        tables.add(flow.cdc.event_log.table)
    if flow.cdc is not None and flow.cdc.route_changes is not None:
        tables.add(flow.cdc.route_changes.table)
    return tables


def derived_from(flow: Flow) -> set[str]:
    """The tables of the source connection a flow's rows are derived from."""
    tables = {flow.source.table}
    if flow.aggregate is not None and flow.aggregate.join is not None:
        tables.add(flow.aggregate.join.table)
    return tables


def echo_origins(config: LoadedConfig, reader: str) -> frozenset[str]:
    """The origins whose captured changes of ``reader``'s source table ``reader`` must not carry: those
    of writers that derived that table from ``reader``'s target table."""
    flows = config.model.flows
    r = flows[reader]
    source_db, target_db = database_of(config, r.source.connection), database_of(config, r.target.connection)

    def echoes(writer: Flow) -> bool:
        return (database_of(config, writer.target.connection) == source_db and r.source.table in written_tables(writer)
                and database_of(config, writer.source.connection) == target_db
                and r.target.table in derived_from(writer))

    return frozenset(origin for origin, names in writers(config).items() if any(echoes(flows[n]) for n in names))


def database_of(config: LoadedConfig, connection: str) -> str:
    """Which database a connection reaches (two connection names may reach the same one)."""
    dsn = config.dsns.get(connection)
    return describe(dsn) if dsn else f"connection {connection}"


def is_own(config: LoadedConfig, origin: str | None) -> bool:
    """True for an origin civicsync's writers use (by the config's prefix)."""
    return origin is not None and origin.startswith(f"{config.model.origin}_")


def setup_origin(conn: psycopg.Connection[Any], origin: str) -> None:
    """Mark this session's transactions with ``origin`` (created if missing)."""
    row = conn.execute("SELECT pg_replication_origin_oid(%s)", (origin,)).fetchone()
    if row is None or row[0] is None:
        with contextlib.suppress(psycopg.errors.UniqueViolation):  # created concurrently
            conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
    conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
    if not conn.autocommit:
        conn.commit()
