"""civicsync's control schema: run history, flow positions (watermarks) and dead letters.

Run records are written in their own short transactions (a failed run must still be recorded);
watermarks and dead letters are written inside the caller's data transaction so they commit
together with the rows they describe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from civicsync.errors import CheckpointRegressionError

# The unique index of civicsync.dead_letters (a hash of the key: a key of any length fits).
ON_KEY = "ON CONFLICT (flow, sha256(jsonb_send(row_key)))"

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class RunCounts:
    """Row counts of a finished run."""

    rows_read: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    rows_rejected: int = 0
    conflicts: int = 0


def start_run(conn: Conn, flow: str) -> int:
    """Record a run as started; returns its id (autocommit connection expected)."""
    row = conn.execute("INSERT INTO civicsync.runs (flow, status) VALUES (%s, 'running') RETURNING run_id",
                       (flow,)).fetchone()
    assert row is not None
    return int(row[0])


def finish_run(conn: Conn, run_id: int, *, ok: bool, attempts: int, counts: RunCounts,
               error: str | None = None) -> None:
    """Record a run's outcome."""
    conn.execute(
        "UPDATE civicsync.runs SET finished_at = clock_timestamp(), status = %s, attempts = %s, rows_read = %s,"
        " rows_written = %s, rows_deleted = %s, rows_rejected = %s, conflicts = %s, error = %s WHERE run_id = %s",
        ("succeeded" if ok else "failed", attempts, counts.rows_read, counts.rows_written, counts.rows_deleted,
         counts.rows_rejected, counts.conflicts, error, run_id),
    )


def read_watermark(conn: Conn, flow: str) -> str | None:
    """The flow's stored position, or None before its first run."""
    row = conn.execute("SELECT value FROM civicsync.watermarks WHERE flow = %s", (flow,)).fetchone()
    return None if row is None else str(row[0])


def write_watermark(conn: Conn, flow: str, value: str, run_id: int | None) -> None:
    """Store the flow's position (inside the data transaction)."""
    conn.execute(
        "INSERT INTO civicsync.watermarks (flow, value, run_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (flow) DO UPDATE SET value = excluded.value, run_id = excluded.run_id,"
        " updated_at = clock_timestamp()",
        (flow, value, run_id),
    )


def add_dead_letters(conn: Conn, flow: str, rejects: list[tuple[dict[str, Any], str, str]]) -> None:
    """Record rejected rows as (key, error kind, error); a key seen before counts another attempt."""
    if not rejects:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO civicsync.dead_letters (flow, row_key, error_kind, error) VALUES (%s, %s, %s, %s)"
            f" {ON_KEY} DO UPDATE SET error_kind = excluded.error_kind, error = excluded.error,"
            " attempts = civicsync.dead_letters.attempts + 1, last_seen = clock_timestamp(), status = 'pending'",
            [(flow, Jsonb(key), kind, error) for key, kind, error in rejects],
        )


@dataclass(frozen=True)
class RunRecord:
    """One row of civicsync.runs."""

    run_id: int
    flow: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    attempts: int
    rows_read: int
    rows_written: int
    rows_deleted: int
    rows_rejected: int
    conflicts: int
    error: str | None


def recent_runs(conn: Conn, flow: str | None = None, limit: int = 20) -> list[RunRecord]:
    """The latest runs, newest first."""
    rows = conn.execute(
        "SELECT run_id, flow, started_at, finished_at, status, attempts, rows_read, rows_written, rows_deleted,"
        " rows_rejected, conflicts, error FROM civicsync.runs WHERE %s::text IS NULL OR flow = %s"
        " ORDER BY run_id DESC LIMIT %s",
        (flow, flow, limit),
    ).fetchall()
    return [RunRecord(*r) for r in rows]


def read_position(conn: Conn, slot: str) -> int:
    """The LSN up to which a slot's changes are applied in this database (0 before the first)."""
    row = conn.execute("SELECT lsn FROM civicsync.cdc_positions WHERE slot = %s", (slot,)).fetchone()
    return 0 if row is None else int(row[0])


def write_position(conn: Conn, slot: str, lsn: int, commit_time: datetime | None) -> None:
    """Store a slot's position (inside the data transaction it covers). The checkpoint only moves
    forward: a position below the stored one is refused (:class:`CheckpointRegressionError`), so a
    bug can never make the next start re-apply, or skip, what this database already holds."""
    stored = conn.execute(
        "INSERT INTO civicsync.cdc_positions (slot, lsn, commit_time) VALUES (%s, %s, %s)"
        " ON CONFLICT (slot) DO UPDATE SET lsn = excluded.lsn, commit_time = excluded.commit_time,"
        " updated_at = clock_timestamp() WHERE civicsync.cdc_positions.lsn <= excluded.lsn RETURNING lsn",
        (slot, lsn, commit_time),
    ).fetchone()
    if stored is None:
        raise CheckpointRegressionError(slot, lsn, read_position(conn, slot))


CdcLetter = tuple[str, dict[str, Any], str, int, str, str, float, list[dict[str, Any]] | None]


def add_cdc_dead_letters(conn: Conn, letters: list[CdcLetter]) -> None:
    """Record change events that could not be applied: (flow, source key, op, lsn, kind, error,
    seconds until the first retry, held transitions or None). One entry per (flow, key): a later
    failure of the same key keeps the entry's first position, counts an attempt and adds its held
    transitions to those the pending entry already keeps."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO civicsync.dead_letters (flow, row_key, op, lsn, error_kind, error, next_attempt_at, held)"
            " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp() + make_interval(secs => %s), %s)"
            f" {ON_KEY} DO UPDATE SET op = excluded.op,"
            " lsn = CASE WHEN civicsync.dead_letters.status = 'pending' THEN civicsync.dead_letters.lsn"
            " ELSE excluded.lsn END,"
            " error_kind = CASE WHEN excluded.error_kind = 'blocked' AND civicsync.dead_letters.status = 'pending'"
            " THEN civicsync.dead_letters.error_kind ELSE excluded.error_kind END,"
            " error = CASE WHEN excluded.error_kind = 'blocked' AND civicsync.dead_letters.status = 'pending'"
            " THEN civicsync.dead_letters.error ELSE excluded.error END,"
            " attempts = civicsync.dead_letters.attempts + 1, last_seen = clock_timestamp(), status = 'pending',"
            " held = CASE WHEN civicsync.dead_letters.status = 'pending' AND civicsync.dead_letters.held IS NOT NULL"
            " THEN civicsync.dead_letters.held || coalesce(excluded.held, '[]') ELSE excluded.held END,"
            " next_attempt_at = coalesce(civicsync.dead_letters.next_attempt_at, excluded.next_attempt_at)",
            [(flow, Jsonb(key), op, lsn, kind, error, delay, None if held is None else Jsonb(held))
             for flow, key, op, lsn, kind, error, delay, held in letters],
        )


def pending_keys(conn: Conn, flows: list[str]) -> set[tuple[str, str]]:
    """(flow, key as canonical JSON) of every pending dead letter of these flows: keys that wait."""
    rows = conn.execute(
        "SELECT flow, row_key::text FROM civicsync.dead_letters WHERE status = 'pending' AND flow = ANY(%s)",
        (flows,)).fetchall()
    return {(str(f), json.dumps(json.loads(str(k)), sort_keys=True)) for f, k in rows}


def narrow_dead_letter_keys(conn: Conn, flow: str, columns: list[str]) -> int:
    """Cut the stored keys of ``flow``'s dead letters down to ``columns`` (its declared key).

    Older versions stored a table's whole row as the key under REPLICA IDENTITY FULL: personal data
    in the control schema, and a key a replay cannot look up safely. Where two entries narrow to the
    same key, a pending one (else the one seen last) stands for both. Returns how many entries were
    rewritten or merged."""
    rows = conn.execute(
        "SELECT dead_letter_id FROM civicsync.dead_letters WHERE flow = %s AND row_key ?& %s::text[]"
        " AND row_key - %s::text[] <> '{}'::jsonb ORDER BY status = 'pending' DESC, last_seen DESC",
        (flow, columns, columns)).fetchall()
    for (dead_id,) in rows:
        try:
            with conn.transaction():
                conn.execute(
                    "UPDATE civicsync.dead_letters SET row_key = (SELECT jsonb_object_agg(k, row_key -> k)"
                    " FROM unnest(%s::text[]) k) WHERE dead_letter_id = %s", (columns, dead_id))
        except psycopg.errors.UniqueViolation:
            conn.execute("DELETE FROM civicsync.dead_letters WHERE dead_letter_id = %s", (dead_id,))
    return len(rows)
