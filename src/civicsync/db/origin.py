"""Replication origins: how civicsync marks its own writes so capture never sends them back."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from civicsync.config import LoadedConfig


def origin_for(config: LoadedConfig, writer: str) -> str:
    """The origin a writer marks its transactions with. One per concurrent writer: PostgreSQL lets
    only one session use an origin at a time. Capture skips every origin with the config's prefix."""
    return f"{config.model.origin}_{writer}"[:63]


def setup_origin(conn: psycopg.Connection[Any], origin: str) -> None:
    """Mark this session's transactions with ``origin`` (created if missing)."""
    row = conn.execute("SELECT pg_replication_origin_oid(%s)", (origin,)).fetchone()
    if row is None or row[0] is None:
        with contextlib.suppress(psycopg.errors.UniqueViolation):  # created concurrently
            conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
    conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
    if not conn.autocommit:
        conn.commit()
