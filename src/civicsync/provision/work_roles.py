"""Least privilege for batch runs, reconciliation and the HTTP API, beside CDC's roles (provision/roles.py).

`db init` creates, per database, what each role needs and nothing more:

- batch role (``roles.batch``): SELECT on the source tables of batch, aggregate and hybrid flows (and
  the tables they join), membership of ``pg_read_all_stats`` where a flow guards its watermark by the
  transactions in flight; on their targets SELECT/INSERT/UPDATE/DELETE (and their sequences), SELECT on
  the tables their validation refers to, civicsync's control schema and the origins it marks writes with.
- reconcile role (``roles.reconcile``): SELECT on every flow's source (and joined) tables and targets;
  where a flow repairs (``reconcile.repair``, the default), write on its targets (and event-log /
  routed-change tables), the control schema and its origin.
- API role (``roles.api``): on ``service.api.connection`` only: SELECT on the API keys, the callbacks'
  tables as ``service.api`` declares them (forecasts SELECT/INSERT/UPDATE, alerts SELECT/INSERT and
  the alert table's sequence, SELECT on the citizen and scheme tables).

Point ``batch_dsn_env`` / ``reconcile_dsn_env`` / ``api_dsn_env`` of a connection at DSNs that log in
as them. Passwords and ``pg_hba.conf`` stay the DBA's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from civicsync.config import LoadedConfig
from civicsync.config.models import Flow
from civicsync.db.connect import connect
from civicsync.db.origin import origin_for
from civicsync.provision.roles import ORIGIN_FUNCTIONS, Conn, _ensure_role, _grant_table, _owned_sequences

WRITE = "SELECT, INSERT, UPDATE, DELETE"


@dataclass
class Needs:
    """What one role needs in one database."""

    tables: dict[str, str] = field(default_factory=dict)  # table → privileges
    sequences_of: list[str] = field(default_factory=list)  # tables whose own sequences it uses
    control: bool = False  # read and write civicsync's control schema
    origins: list[str] = field(default_factory=list)
    read_all_stats: bool = False

    def grant(self, table: str, privileges: str) -> None:
        """Add ``privileges`` on ``table`` (writing includes reading)."""
        if self.tables.get(table) != WRITE:
            self.tables[table] = privileges


def _joined(flow: Flow) -> list[str]:
    return [flow.aggregate.join.table] if flow.aggregate is not None and flow.aggregate.join is not None else []


def _written(flow: Flow) -> list[str]:
    extra = [x.table for x in (flow.cdc.event_log, flow.cdc.route_changes) if x is not None] if flow.cdc else []
    return [flow.target.table, *extra]


def work_needs(config: LoadedConfig) -> dict[tuple[str, str], Needs]:
    """(role, connection) → what that role needs in that database."""
    roles = config.model.roles
    needs: dict[tuple[str, str], Needs] = {}

    def at(role: str, connection: str) -> Needs:
        return needs.setdefault((role, connection), Needs())

    for name, flow in config.model.flows.items():
        src, tgt = flow.source.connection, flow.target.connection
        jobs = [(roles.batch, True)] if flow.batches else []  # (role, writes the target)
        for role, writes in [*jobs, (roles.reconcile, flow.reconcile.repair)]:
            for table in [flow.source.table, *_joined(flow)]:
                at(role, src).grant(table, "SELECT")
            written = _written(flow) if role == roles.reconcile else [flow.target.table]
            for table in written:
                at(role, tgt).grant(table, WRITE if writes else "SELECT")
            if writes:
                at(role, tgt).sequences_of += written
                writer = "batch" if role == roles.batch else "reconcile"
                at(role, tgt).origins.append(origin_for(config, f"{writer}_{name}"))
            for ref in flow.validate_.references:
                at(role, tgt).grant(ref.table, "SELECT")
            at(role, tgt).control = True
        if flow.batches and flow.incremental is not None and flow.incremental.guard == "in_flight_transactions":
            at(roles.batch, src).read_all_stats = True
    api = config.model.service.api
    if not api.enabled:
        return needs
    for table, privileges in api.privileges().items():
        at(roles.api, api.connection).grant(table, privileges)
    at(roles.api, api.connection).sequences_of.append(api.alerts.table)
    return needs


def grant_work_roles(config: LoadedConfig) -> list[str]:
    """Create the batch, reconcile and API roles and grant what :func:`work_needs` says (idempotent)."""
    done: list[str] = []
    by_connection: dict[str, list[tuple[str, Needs]]] = {}
    for (role, connection), need in work_needs(config).items():
        by_connection.setdefault(connection, []).append((role, need))
    for connection, wanted in by_connection.items():
        with connect(config.dsn(connection), purpose="grants", autocommit=True, label=connection) as conn:
            for role, need in wanted:
                _grant(conn, role, need)
                done.append(f"{connection}: {role} may use {', '.join(sorted(need.tables))}")
    return done


def role_needs_no_keys(need: Needs) -> bool:
    """Whether a role with control-schema access must still not read the API keys (all but the API's)."""
    return "civicsync.api_keys" not in need.tables


def _grant(conn: Conn, role: str, need: Needs) -> None:
    _ensure_role(conn, role, replication=False)
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(conn.info.dbname), ident))
    for table, privileges in need.tables.items():
        _grant_table(conn, table, privileges, role)
    for table in dict.fromkeys(need.sequences_of):
        for seq in _owned_sequences(conn, table):
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(sql.SQL(seq), ident))
    if need.control:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA civicsync TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA civicsync TO {}")
                     .format(ident))
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA civicsync TO {}").format(ident))
        if role_needs_no_keys(need) and conn.execute("SELECT to_regclass('civicsync.api_keys')").fetchone() != (None,):
            # The control schema holds the API keys' hashes too: only the API reads them.
            conn.execute(sql.SQL("REVOKE ALL ON civicsync.api_keys FROM {}").format(ident))
    for origin in need.origins:
        if conn.execute("SELECT pg_replication_origin_oid(%s)", (origin,)).fetchone() == (None,):
            conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
    if need.origins:
        for fn in ORIGIN_FUNCTIONS:
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(fn), ident))
    if need.read_all_stats:
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(ident))
