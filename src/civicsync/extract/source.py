"""Stream a source table's rows out of a consistent snapshot with ``COPY (SELECT …) TO STDOUT``.

Rows arrive as tuples of PostgreSQL text values (None for NULL) and are yielded one at a time, so
memory stays flat whatever the table size.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from civicsync.sqlnames import idents, table_ident

Conn = psycopg.Connection[tuple[Any, ...]]


def begin_snapshot(conn: Conn) -> None:
    """Start a REPEATABLE READ, READ ONLY transaction: every read of the run sees one snapshot."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def in_flight_horizon(conn: Conn) -> str:
    """The start of the oldest transaction still open on the source database, or now.

    Any row a later snapshot may reveal was written by a transaction that started no earlier than
    this, so a timestamp watermark may safely advance to it (rows stamped with their transaction's
    start time can commit late but never with a time before that start). Must be read *before*
    the snapshot is taken. Needs pg_read_all_stats (or superuser) to see other roles' sessions.
    """
    row = conn.execute(
        "SELECT LEAST(clock_timestamp(), min(xact_start))::text FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_type = 'client backend'"
        " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return str(row[0])


def stream_rows(
    conn: Conn, table: str, columns: Sequence[str], where: sql.Composable | None = None
) -> Generator[tuple[str | None, ...], None, None]:
    """Yield ``columns`` of every row of ``table`` (matching ``where``) as text values."""
    query = sql.SQL("SELECT {} FROM {}").format(idents(columns), table_ident(table))
    if where is not None:
        query = query + sql.SQL(" WHERE ") + where
    yield from stream_query(conn, query)


def stream_query(conn: Conn, query: sql.Composable) -> Generator[tuple[str | None, ...], None, None]:
    """Yield the rows of any SELECT as text values, through COPY."""
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
        yield from copy.rows()
