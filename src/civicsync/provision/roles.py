"""Least privilege for CDC: the roles civicsync streams and applies as, their grants, and the
start-up check that names a missing grant instead of failing half-way.

- capture role: LOGIN REPLICATION, and SELECT on the tables its database publishes to civicsync
  (nothing else; the publication itself is made by `db init`, which owns the tables).
- apply role: LOGIN, SELECT/INSERT/UPDATE/DELETE on the tables CDC flows write in its database,
  the sequences of those tables, civicsync's control schema, and the two replication-origin
  functions that mark its writes (origins are created by `db init`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from civicsync.capture.slots import ensure_publication
from civicsync.config import LoadedConfig
from civicsync.config.models import publication_name, slot_name
from civicsync.db.connect import connect
from civicsync.db.origin import kafka_origins, origin_for
from civicsync.errors import MissingGrantError as MissingGrantError  # re-exported: it lives in the one tree
from civicsync.sqlnames import table_ident

Conn = psycopg.Connection[Any]
ORIGIN_FUNCTIONS = ("pg_replication_origin_session_setup(text)", "pg_replication_origin_oid(text)")


@dataclass(frozen=True)
class CdcTables:
    """What CDC reads from and writes to in one database."""

    captured: list[str]
    applied: list[str]


def cdc_tables(config: LoadedConfig, connection: str) -> CdcTables:
    """The tables CDC flows read from (capture) and write to (apply) in ``connection``."""
    captured: list[str] = []
    applied: list[str] = []
    for flow in config.model.flows.values():
        if flow.cdc is None:
            continue
        if flow.source.connection == connection and flow.source.table not in captured:
            captured.append(flow.source.table)
        if flow.target.connection == connection:
            extra = [x.table for x in (flow.cdc.event_log, flow.cdc.route_changes) if x is not None]
            for table in [flow.target.table, *extra]:
                if table not in applied:
                    applied.append(table)
    return CdcTables(captured, applied)


def origins_of(config: LoadedConfig, source: str) -> list[str]:
    """The replication origins the CDC writers of a source's slot use."""
    slot = slot_name(config.model, source)
    return [origin_for(config, f"cdc_{slot}"), origin_for(config, f"replay_{slot}"), *kafka_origins(config, slot)]


def _ensure_role(conn: Conn, role: str, replication: bool) -> None:
    options = sql.SQL("LOGIN REPLICATION" if replication else "LOGIN")
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists:
        conn.execute(sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(role), options))
    else:
        with contextlib.suppress(psycopg.errors.DuplicateObject):  # created meanwhile by another init
            conn.execute(sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(role), options))


def _owned_sequences(conn: Conn, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT s.oid::regclass::text FROM pg_class s JOIN pg_depend d ON d.objid = s.oid"
        " WHERE s.relkind = 'S' AND d.refobjid = %s::regclass AND d.deptype IN ('a', 'i')",
        (table,)).fetchall()
    return [str(r[0]) for r in rows]


def grant_roles(config: LoadedConfig) -> list[str]:
    """Create the roles, grants, publications and origins CDC needs (idempotent). Returns what it did."""
    roles = config.model.roles
    done: list[str] = []
    for name in config.model.connections:
        tables = cdc_tables(config, name)
        if not (tables.captured or tables.applied):
            continue
        with connect(config.dsn(name), purpose="grants", autocommit=True, label=name) as conn:
            _ensure_role(conn, roles.capture, replication=True)
            _ensure_role(conn, roles.apply, replication=False)
            db = sql.Identifier(conn.info.dbname)
            for role in (roles.capture, roles.apply):
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(role)))
            for table in tables.captured:
                _grant_table(conn, table, "SELECT", roles.capture)
            if tables.captured:
                ensure_publication(conn, publication_name(config.model, name), tables.captured)
                for origin in origins_of(config, name):
                    if conn.execute("SELECT pg_replication_origin_oid(%s)", (origin,)).fetchone() == (None,):
                        conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
                done.append(f"{name}: {roles.capture} may read {', '.join(tables.captured)}")
            for table in tables.applied:
                _grant_table(conn, table, "SELECT, INSERT, UPDATE, DELETE", roles.apply)
                for seq in _owned_sequences(conn, table):
                    conn.execute(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(
                        sql.SQL(seq), sql.Identifier(roles.apply)))
            if tables.applied:
                apply_role = sql.Identifier(roles.apply)
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA civicsync TO {}").format(apply_role))
                conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA civicsync TO {}")
                             .format(apply_role))
                conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA civicsync TO {}").format(apply_role))
                for fn in ORIGIN_FUNCTIONS:
                    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(fn), apply_role))
                done.append(f"{name}: {roles.apply} may write {', '.join(tables.applied)}")
    return done


def _grant_table(conn: Conn, table: str, privileges: str, role: str) -> None:
    schema = table.split(".", 1)[0]
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), table_ident(table), sql.Identifier(role)))


# --------------------------------------------------------------------------- start-up checks


def _missing_table_grants(conn: Conn, tables: list[str], privileges: list[str]) -> list[str]:
    missing = []
    for table in tables:
        for privilege in privileges:
            row = conn.execute("SELECT has_table_privilege(current_user, %s, %s)", (table, privilege)).fetchone()
            if not (row and row[0]):
                missing.append(f"GRANT {privilege} ON {table} TO {conn.info.user}")
    return missing


def check_capture(conn: Conn, tables: list[str]) -> None:
    """The capture session's role may replicate and read every captured table."""
    row = conn.execute("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    missing = [] if row and row[0] else [f"ALTER ROLE {conn.info.user} REPLICATION"]
    missing += _missing_table_grants(conn, tables, ["SELECT"])
    if missing:
        raise MissingGrantError(f"the capture role {conn.info.user} on {conn.info.dbname} lacks privileges; "
                                f"run `civicsync db init` or: {'; '.join(missing)}")


def check_apply(conn: Conn, tables: list[str]) -> None:
    """The apply session's role may write every table its flows write, and mark its writes."""
    missing = _missing_table_grants(conn, tables, ["SELECT", "INSERT", "UPDATE", "DELETE"])
    missing += _missing_table_grants(conn, ["civicsync.cdc_positions", "civicsync.dead_letters"],
                                     ["SELECT", "INSERT", "UPDATE"])
    for fn in ORIGIN_FUNCTIONS:
        row = conn.execute("SELECT has_function_privilege(current_user, %s, 'EXECUTE')", (fn,)).fetchone()
        if not (row and row[0]):
            missing.append(f"GRANT EXECUTE ON FUNCTION {fn} TO {conn.info.user}")
    if missing:
        raise MissingGrantError(f"the apply role {conn.info.user} on {conn.info.dbname} lacks privileges; "
                                f"run `civicsync db init` or: {'; '.join(missing)}")
