"""Replaying dead letters: re-apply a waiting key from the source's *current* row.

A dead letter holds the key and the error, never the row. A replay reads the key's row from the
source now (or finds it gone) and sends it through the flow's usual transform and apply, so it
converges the target to what the rules derive from the source today, including any later change
that waited behind the failure. Success marks the entry ``replayed`` and unblocks the key; failure
counts an attempt and schedules the next one with exponential backoff.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.apply.sqlnames import table_ident
from civicsync.config.models import Retry
from civicsync.db.catalog import column_types
from civicsync.errors import CivicsyncError, RowRejectedError
from civicsync.events import ChangeEvent, SourceInfo
from civicsync.jobs.retry import backoff_delays

if TYPE_CHECKING:
    from civicsync.runtime.cdc import CdcWorker

BATCH = 100
# Backoff between retries of one dead letter: 1 s, 2 s, 4 s, ... capped at 5 minutes.
DLQ_RETRY = Retry(attempts=12, initial_delay=1.0, max_delay=300.0, multiplier=2.0)


class ReplayFailedError(CivicsyncError):
    """The key still cannot be applied."""


def replay_due(worker: CdcWorker, *, due_only: bool = True, ids: list[int] | None = None) -> int:
    """Replay pending dead letters of the worker's flows; returns how many converged."""
    conn = worker.target_connection
    rows = conn.execute(
        "SELECT dead_letter_id, flow, row_key, attempts FROM civicsync.dead_letters WHERE status = 'pending'"
        " AND flow = ANY(%s) AND (NOT %s OR next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp())"
        " AND (%s::bigint[] IS NULL OR dead_letter_id = ANY(%s)) ORDER BY lsn NULLS LAST, dead_letter_id LIMIT %s",
        (worker.flows, due_only, ids, ids, BATCH)).fetchall()
    conn.commit()
    appliers = {a.name: a for a in worker.appliers}
    fixed = 0
    for dead_id, flow, key, attempts in rows:
        applier = appliers[flow]
        try:
            with conn.transaction():
                _reapply(worker, applier, key)
            conn.execute("UPDATE civicsync.dead_letters SET status = 'replayed', last_seen = clock_timestamp()"
                         " WHERE dead_letter_id = %s", (dead_id,))
            worker.unblock(flow, key)
            fixed += 1
        except (psycopg.Error, CivicsyncError) as exc:
            delays = backoff_delays(DLQ_RETRY)
            delay = delays[min(attempts, len(delays) - 1)]
            conn.execute(
                "UPDATE civicsync.dead_letters SET attempts = attempts + 1, error = %s, last_seen = clock_timestamp(),"
                " next_attempt_at = clock_timestamp() + make_interval(secs => %s) WHERE dead_letter_id = %s",
                (_message(exc), delay, dead_id))
        conn.commit()
    return fixed


def _message(exc: Exception) -> str:
    if isinstance(exc, psycopg.Error):
        # Only the primary message: details can quote row values (personal data).
        return f"{exc.diag.message_primary or type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    return str(exc)


def _reapply(worker: CdcWorker, applier: CdcFlowApplier, key: dict[str, Any]) -> None:
    conn = worker.target_connection
    outcome = FlowOutcome()
    if applier.cdc.top_n is not None:
        values = tuple(key.get(c) for c in applier.cdc.top_n.partition_by)
        applier.recompute(conn, worker.source_reader(), {values}, outcome)
    else:
        event = _current_event(worker, applier, key)
        pending = applier.net_effect([event], set(), outcome)
        if not outcome.dead_letters:
            applier.write(conn, pending, outcome)
    if outcome.dead_letters:
        raise ReplayFailedError("; ".join(d.error for d in outcome.dead_letters))


def _current_event(worker: CdcWorker, applier: CdcFlowApplier, key: dict[str, Any]) -> ChangeEvent:
    """The key's source row as it is now: a read ('r') event, or a delete if it is gone."""
    source = worker.source_reader()
    table = applier.flow.source.table
    types = column_types(source, table)
    where = sql.SQL(" AND ").join(
        sql.SQL("{} = {}::{}").format(sql.Identifier(k), sql.Literal(v), sql.SQL(types[k])) for k, v in key.items())
    cols = list(applier.source.columns)
    row = source.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols),
        table_ident(table), where)).fetchone()
    schema, name = table.split(".", 1)
    info = SourceInfo(source.info.dbname, schema, name, 0, 0, datetime.now(UTC))
    if row is None:
        if applier.cdc.deletes == "ignore":
            raise RowRejectedError("gone", "the source row no longer exists and this flow ignores deletes")
        return ChangeEvent("d", dict(key), None, info, dict(key))
    return ChangeEvent("r", None, dict(zip(cols, row, strict=True)), info, dict(key))


__all__ = ["ReplayFailedError", "replay_due"]
