"""Opening connections. Every civicsync session says who it is in application_name."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from civicsync.db.errors import mapped_errors

APPLICATION_NAME = "civicsync"

# Every setting that shapes a value's text output, pinned on every session civicsync opens (apply,
# snapshot, re-reads, and the replication connection, whose walsender formats the streamed values):
# values travel as PostgreSQL text, so both ends must agree whatever the servers' defaults are.
# lc_monetary 'C' exists on every server and gives money a locale-free '1234.56' on both sides.
TEXT_SETTINGS = {"DateStyle": "ISO,YMD", "IntervalStyle": "postgres", "extra_float_digits": "3",
                 "TimeZone": "UTC", "bytea_output": "hex", "lc_monetary": "C"}
SESSION_OPTIONS = " ".join(f"-c {name}={value}" for name, value in TEXT_SETTINGS.items())
"""The settings above as a libpq ``options`` value (for psycopg and psycopg2 alike)."""


def describe(dsn: str) -> str:
    """A DSN with any password removed, for messages and logs."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    params.pop("password", None)
    host = params.get("host", "localhost")
    return f"{params.get('dbname', '?')}@{host}:{params.get('port', 5432)}"


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server, another database (e.g. 'postgres' to create databases)."""
    return make_conninfo(dsn, dbname=dbname)


def connect(
    dsn: str, *, purpose: str, autocommit: bool = False, label: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection; a failure becomes DatabaseUnavailableError/DatabaseError naming the
    database (``label`` is the config's connection name, e.g. 'warehouse')."""
    where = f"{label} database {describe(dsn)}" if label else describe(dsn)
    with mapped_errors(f"cannot connect to {where} ({purpose})"):
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=f"{APPLICATION_NAME}:{purpose}"[:63],
            connect_timeout=10,
            options=SESSION_OPTIONS,
        )
