"""Writing the reference seed: each table COPYed into its database, both databases committed together."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import psycopg
from psycopg import sql

from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.reference.seed.activity import (
    _APPLICATION_COLUMNS,
    _DECISION_COLUMNS,
    _DOCUMENT_COLUMNS,
    _EVENT_COLUMNS,
    _FEEDBACK_COLUMNS,
    _application_rows,
    _decision_rows,
    _document_rows,
    _event_rows,
    _feedback_rows,
)
from civicsync.reference.seed.registry import (
    _CITIZEN_COLUMNS,
    _PREDICTION_COLUMNS,
    _PROFILE_COLUMNS,
    _SUMMARY_COLUMNS,
    _citizen_rows,
    _portal_scheme_rows,
    _prediction_rows,
    _profile_rows,
    _summary_rows,
    _warehouse_scheme_rows,
)
from civicsync.reference.seed.values import _DAY, _EPOCH, _NID_SPACE, PROGRESS_EVERY, Progress, Row, SeedCounts, _Plan

# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Table:
    """One table to seed: its qualified name, the columns the generator yields, the generator."""

    name: str
    columns: tuple[str, ...]
    rows: Callable[[_Plan], Iterator[Row]]


_WAREHOUSE_PROFILES = (
    _Table("public.schemes", ("scheme_id", "code", "name", "description", "department", "category",
                              "benefit_type", "benefit_amount", "eligibility_rules", "status", "start_date",
                              "end_date", "updated_at"), _warehouse_scheme_rows),
    _Table("public.citizen_profiles", _PROFILE_COLUMNS, _profile_rows),
)
_WAREHOUSE_ALL = (
    *_WAREHOUSE_PROFILES,
    _Table("public.eligibility_predictions", _PREDICTION_COLUMNS, _prediction_rows),
    _Table("public.profile_summaries", _SUMMARY_COLUMNS, _summary_rows),
    _Table("public.application_decisions", _DECISION_COLUMNS, _decision_rows),
)
_CITIZEN_ALL = (
    _Table("public.schemes", ("scheme_id", "code", "name", "description", "category", "benefit_summary",
                              "status", "synced_at"), _portal_scheme_rows),
    _Table("public.citizens", _CITIZEN_COLUMNS, _citizen_rows),
    _Table("public.applications", _APPLICATION_COLUMNS, _application_rows),
    _Table("public.application_documents", _DOCUMENT_COLUMNS, _document_rows),
    _Table("public.user_events", _EVENT_COLUMNS, _event_rows),
    _Table("public.feedback", _FEEDBACK_COLUMNS, _feedback_rows),
)


def _ident(qualified: str) -> sql.Identifier:
    schema, name = qualified.split(".")
    return sql.Identifier(schema, name)


def _copy_table(cur: psycopg.Cursor[tuple[object, ...]], key: str, table: _Table, plan: _Plan,
                progress: Progress | None) -> int:
    """Stream one table's generator into COPY; report progress every PROGRESS_EVERY rows."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        _ident(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in table.columns))
    written = pending = 0
    with cur.copy(statement) as copy:
        write = copy.write_row
        for row in table.rows(plan):
            write(row)
            pending += 1
            if pending == PROGRESS_EVERY:
                written += pending
                pending = 0
                if progress is not None:
                    progress(key, PROGRESS_EVERY)
    if progress is not None and pending:
        progress(key, pending)
    return written + pending


def _seed_database(conn: psycopg.Connection[tuple[object, ...]], connection: str, tables: Sequence[_Table],
                   plan: _Plan, progress: Progress | None, counts: dict[str, int]) -> None:
    """Truncate the tables, then COPY each; the caller commits (or rolls back) the whole lot."""
    with mapped_errors(f"seeding {connection}"), conn.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(_ident(t.name) for t in tables)))
        for table in tables:
            key = f"{connection}.{table.name}"
            counts[key] = _copy_table(cur, key, table, plan, progress)


def seed(warehouse_dsn: str, citizen_dsn: str, citizens: int, *, seed: int = 42,
         only: Literal["all", "profiles"] = "all", progress: Progress | None = None,
         events_per_citizen: int = 5, today: date | None = None) -> SeedCounts:
    """Replace the seed data in both reference databases with ``citizens`` synthetic citizens.

    Same ``(seed, citizens)``, same data (user events and feedback: same data relative to
    ``today``, which defaults to today's UTC date). ``only="profiles"`` writes just the warehouse
    ``schemes`` and ``citizen_profiles`` and leaves the portal alone. ``progress(table, n)`` is
    called as rows are written, ``table`` being ``"connection.schema.table"``. Each database is
    seeded in one transaction; both are committed only after both are written.
    """
    if only not in ("all", "profiles"):
        raise ValueError(f"only must be 'all' or 'profiles', not {only!r}")
    if not 0 <= citizens <= _NID_SPACE or events_per_citizen < 0:
        raise ValueError(f"citizens must be 0..{_NID_SPACE} and events_per_citizen not negative")
    day = today if today is not None else datetime.now(UTC).date()
    plan = _Plan(seed, citizens, events_per_citizen, (day - _EPOCH).days * _DAY)
    started = time.perf_counter()
    counts: dict[str, int] = {}
    with connect(warehouse_dsn, purpose="seed") as wh:
        _seed_database(wh, "warehouse", _WAREHOUSE_ALL if only == "all" else _WAREHOUSE_PROFILES, plan,
                       progress, counts)
        if only == "all":
            with connect(citizen_dsn, purpose="seed") as cz:
                _seed_database(cz, "citizen", _CITIZEN_ALL, plan, progress, counts)
    return SeedCounts(rows=counts, seconds=time.perf_counter() - started)
