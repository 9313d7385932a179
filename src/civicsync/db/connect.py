"""Opening connections. Every civicsync session says who it is in application_name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from civicsync.db.errors import mapped_errors

APPLICATION_NAME = "civicsync"
DEFAULT_CONNECT_TIMEOUT = 10

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


def _params(dsn: str) -> dict[str, object]:
    try:
        return dict(conninfo_to_dict(dsn))
    except psycopg.ProgrammingError:
        return {}


def _timeout(dsn: str) -> int:
    try:
        return int(float(str(_params(dsn).get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))))
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT


@contextmanager
def _timeout_explained(dsn: str, label: str | None) -> Iterator[None]:
    """Say what a connect timeout means (psycopg only says "connection timeout expired")."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if "timeout expired" not in str(exc):
            raise
        seconds = max(2, _timeout(dsn))  # libpq's minimum
        setting = f"connections.{label}.connect_timeout_seconds" if label else "connect_timeout"
        raise psycopg.OperationalError(
            f"no answer from the server within {seconds} s (a server or proxy that accepts connections but does "
            f"not respond?); the limit is {setting}") from exc


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server, another database (e.g. 'postgres' to create databases)."""
    return make_conninfo(dsn, dbname=dbname)


def connect(
    dsn: str, *, purpose: str, autocommit: bool = False, label: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection; a failure becomes DatabaseUnavailableError/DatabaseError naming the
    database (``label`` is the config's connection name, e.g. 'warehouse')."""
    where = f"{label} database {describe(dsn)}" if label else describe(dsn)
    with mapped_errors(f"cannot connect to {where} ({purpose})"), _timeout_explained(dsn, label):
        return psycopg.connect(dsn, autocommit=autocommit, **session_kwargs(dsn, purpose))


def session_kwargs(dsn: str, purpose: str) -> dict[str, Any]:
    """What every civicsync session is opened with (also by the API's connection pool)."""
    return {
        "application_name": f"{APPLICATION_NAME}:{purpose}"[:63],
        # The config puts the connection's connect_timeout_seconds into the DSN; 10 s otherwise.
        "connect_timeout": _timeout(dsn),
        "options": SESSION_OPTIONS,
    }
