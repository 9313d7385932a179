"""Quoting helpers for the table and column names that come from the config."""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql


def table_ident(qualified: str) -> sql.Identifier:
    """'schema.table' → a safely quoted identifier."""
    schema, table = qualified.split(".", 1)
    return sql.Identifier(schema, table)


def idents(columns: Iterable[str], prefix: str | None = None) -> sql.Composed:
    """A comma-separated list of (optionally alias-qualified) column identifiers."""
    return sql.SQL(", ").join(
        sql.Identifier(prefix, c) if prefix else sql.Identifier(c) for c in columns
    )
