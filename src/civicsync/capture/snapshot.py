"""Initial snapshot consistent with the stream.

The slot is created with ``EXPORT_SNAPSHOT`` on a replication connection; while that connection
stays open, another session imports the snapshot (``SET TRANSACTION SNAPSHOT``) and reads every
row as of exactly the slot's consistent point. Streaming then starts at that point: nothing
committed before it is missed, nothing after it is read twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras
from psycopg import sql

from civicsync.capture.pgoutput import parse_lsn
from civicsync.capture.slots import check_name
from civicsync.db.connect import SESSION_OPTIONS


@contextmanager
def slot_with_snapshot(dsn: str, slot: str) -> Iterator[tuple[int, str]]:
    """Create ``slot`` and yield (consistent LSN, exported snapshot name) while the snapshot is valid."""
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                            application_name="civicsync:snapshot", options=SESSION_OPTIONS)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE_REPLICATION_SLOT {check_name(slot, 'slot')} LOGICAL pgoutput EXPORT_SNAPSHOT")
        _, consistent_point, snapshot_name, _ = cur.fetchone()
        yield parse_lsn(consistent_point), str(snapshot_name)
    finally:
        conn.close()


def begin_in_snapshot(conn: psycopg.Connection[Any], snapshot_name: str) -> None:
    """Start a read-only transaction that sees exactly the exported snapshot (autocommit connection)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
