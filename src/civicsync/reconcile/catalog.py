"""What reconciling a flow needs to know about its two databases: column types, how the source's values
turn into the text the chain sees, pgcrypto, and the three-way bases' layout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from civicsync.db.catalog import column_types
from civicsync.reconcile.plan import Plan

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class SourceCatalog:
    """The facts compiling a flow's rules to SQL depends on."""

    source_types: Mapping[str, str]
    target_types: Mapping[str, str]
    hmac_function: str | None = None  # pgcrypto's hmac(bytea, bytea, text), schema-qualified, if installed
    # Source columns whose cast to text is not their output function (boolean: 'true', not 't'; bpchar,
    # inet, cidr), with that output function: the chain sees what COPY and pgoutput send.
    output_functions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    """Everything read from the two databases before a comparison."""

    source: SourceCatalog
    layout: list[str]   # the newest_wins fields whose hashes civicsync.field_base keeps, in order
    collatable: bool    # the leading key column's type has a collation (ranges compare it as "C")


def load_catalog(src: Conn, tgt: Conn, plan: Plan) -> Catalog:
    """Read the catalog facts of a flow's two tables (ends the target's transaction)."""
    flow = plan.flow
    target_types = column_types(tgt, flow.target.table)
    row = tgt.execute("SELECT fields FROM civicsync.field_base_layout WHERE flow = %s", (plan.name,)).fetchone()
    layout = [str(f) for f in row[0]] if row else []
    row = tgt.execute("SELECT typcollation <> 0 FROM pg_type WHERE oid = %s::regtype",
                      (target_types[plan.key[0]],)).fetchone()
    tgt.rollback()
    source = SourceCatalog(column_types(src, flow.source.table), target_types,
                           _hmac_function(src) if flow.reconcile.hmac_in_source else None,
                           _output_functions(src, flow.source.table))
    return Catalog(source, layout, bool(row and row[0]))


def _hmac_function(src: Conn) -> str | None:
    row = src.execute(
        "SELECT quote_ident(n.nspname) || '.hmac' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.proname = 'hmac' AND pg_get_function_identity_arguments(p.oid) = 'bytea, bytea, text'"
        " LIMIT 1").fetchone()
    return str(row[0]) if row else None


def _output_functions(src: Conn, table: str) -> dict[str, str]:
    rows = src.execute(
        "SELECT a.attname::text, t.typoutput::regproc::text FROM pg_attribute a"
        " JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %s::regclass AND a.attnum > 0"
        " AND NOT a.attisdropped AND EXISTS (SELECT 1 FROM pg_cast c WHERE c.castsource IN (t.oid, t.typbasetype)"
        " AND c.casttarget = 'text'::regtype AND c.castmethod = 'f')", (table,)).fetchall()
    return {str(name): str(function) for name, function in rows}
