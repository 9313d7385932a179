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


def texts(columns: Iterable[sql.Composable]) -> sql.Composed:
    """Column values as their text output, comma-separated.

    Change guards compare these, never the values: not every type has an equality operator (json,
    xml, point, ...), and ``=`` calls 1.5 and 1.50, 0 and -0, '30 days' and '1 mon' equal, while the
    target must hold exactly the source's text."""
    return sql.SQL(", ").join(sql.SQL("{}::text").format(c) for c in columns)
