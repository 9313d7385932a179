"""Catalog look-ups: column types and replica identity of a table."""

from __future__ import annotations

from typing import Any

import psycopg

from civicsync.errors import SchemaMismatchError


def column_types(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """Column name → SQL type (as format_type writes it) of ``schema.table``."""
    schema, name = table.split(".", 1)
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, name)).fetchall()
    if not rows:
        raise SchemaMismatchError(f"table {table} does not exist in {conn.info.dbname}")
    return {str(r[0]): str(r[1]) for r in rows}


def replica_identity(conn: psycopg.Connection[Any], table: str) -> str:
    """'d' (default: primary key), 'f' (full), 'i' (index) or 'n' (nothing)."""
    schema, name = table.split(".", 1)
    row = conn.execute(
        "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
    if row is None:
        raise SchemaMismatchError(f"table {table} does not exist in {conn.info.dbname}")
    return str(row[0])
