"""Publications and logical replication slots, created idempotently.

One publication and one slot per source database and civicsync deployment. Names come from the
caller (tests use random ones so they never collide).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from civicsync.errors import CaptureSetupError as CaptureSetupError  # re-exported: it lives in the one tree
from civicsync.sqlnames import table_ident

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_name(name: str, what: str) -> str:
    """Slot and publication names: lower-case letters, digits and underscores (PostgreSQL's rule for slots)."""
    if not _NAME.match(name):
        raise CaptureSetupError(f"{what} name {name!r} must match {_NAME.pattern}")
    return name


def check_wal_level(conn: psycopg.Connection[Any]) -> None:
    """Logical replication needs wal_level=logical; say so plainly if it is not."""
    row = conn.execute("SHOW wal_level").fetchone()
    if row is None or row[0] != "logical":
        raise CaptureSetupError(
            f"the source server runs with wal_level={row[0] if row else '?'}; logical replication needs "
            "wal_level=logical (set it in postgresql.conf and restart the server)")


def ensure_publication(conn: psycopg.Connection[Any], name: str, tables: Sequence[str]) -> None:
    """Create the publication for ``tables``, or make an existing one publish exactly them."""
    check_name(name, "publication")
    table_list = sql.SQL(", ").join(table_ident(t) for t in sorted(tables))
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if exists:
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), table_list))
    else:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), table_list))


@dataclass(frozen=True)
class SlotInfo:
    """A replication slot's state as the server reports it."""

    name: str
    confirmed_flush_lsn: str | None
    retained_wal_bytes: int | None
    active: bool
    wal_status: str | None = None  # 'lost': invalidated by max_slot_wal_keep_size, it streams no more

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost"


def slot_info(conn: psycopg.Connection[Any], name: str) -> SlotInfo | None:
    """The slot's state, or None if it does not exist."""
    row = conn.execute(
        "SELECT slot_name, confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,"
        " active, wal_status FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone()
    return None if row is None else SlotInfo(str(row[0]), row[1], row[2], bool(row[3]), row[4])


def ensure_slot(conn: psycopg.Connection[Any], name: str) -> bool:
    """Create a pgoutput slot if missing (no snapshot). True if it was created now."""
    check_name(name, "slot")
    if slot_info(conn, name) is not None:
        return False
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    return True


def drop_slot(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop the slot if it exists (it must not be active)."""
    if slot_info(conn, name) is not None:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def drop_publication(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop the publication if it exists."""
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(check_name(name, "publication"))))
