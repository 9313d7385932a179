"""The SQL of a CDC flow's rules: the event log, routed changes and the lifecycle guard.

Split from :mod:`civicsync.apply.cdc` (which decides *what* to write per key) so that each piece
stays small; everything here runs inside the caller's target transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from civicsync.capture.pgoutput import format_lsn
from civicsync.config.models import EventLog, Flow, Lifecycle, RouteChanges
from civicsync.db.catalog import column_types
from civicsync.errors import SchemaMismatchError
from civicsync.sqlnames import table_ident

Conn = psycopg.Connection[tuple[Any, ...]]
History = list[tuple[list[Any] | None, int]]
"""Every (target row, commit LSN) a key went through in a batch; None stands for a delete."""


def transitions(history: History, watched: int) -> list[tuple[int, list[Any], int]]:
    """The (seq, row, lsn) of each change of the watched value in a key's batch history.

    Seq 1 is compared with the target's current value in SQL (it may be no change at all); every
    later one is a change by construction. A delete in between ends the row: what follows is a new
    row, so its first value is a transition even if it equals the value before the delete."""
    out: list[tuple[int, list[Any], int]] = []
    last: Any = _NOTHING
    seq = 0
    for row, lsn in history:
        if row is None:
            last = _NOTHING
            seq += 1
            continue
        if last is not _NOTHING and row[watched] == last:
            continue
        last = row[watched]
        seq += 1
        out.append((seq, row, lsn))
    return out


_NOTHING = object()


def log_events(conn: Conn, flow: Flow, log: EventLog, columns: Sequence[str], key: Sequence[str],
               entries: Sequence[tuple[Sequence[Any], History]], target_types: dict[str, str]) -> None:
    """Append one event row per transition of ``log.on_change_of`` in each key's batch history
    (``entries``: target key values, history), before the batch's writes change the target."""
    watched = list(columns).index(log.on_change_of)
    stage = sql.Identifier("civicsync_events")
    cols = list(log.recorded)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (seq int, {} , {}) ON COMMIT DROP").format(
        stage, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(f"k_{k}")) for k in key),
        sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(f"e_{c}")) for c in cols)))
    sources = [None if src is None else list(columns).index(src) for src in log.recorded.values()]
    staged = 0
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(stage)) as copy:
        for tkey, history in entries:
            for seq, row, lsn in transitions(history, watched):
                copy.write_row([seq, *tkey, *(format_lsn(lsn) if i is None else row[i] for i in sources)])
                staged += 1
    if not staged:
        return
    events_types = column_types(conn, log.table)
    casts = sql.SQL(", ").join(
        sql.SQL("e.{}::{}").format(sql.Identifier(f"e_{c}"), sql.SQL(events_types[c])) for c in cols)
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{} = e.{}::{}").format(sql.Identifier(k), sql.Identifier(f"k_{k}"), sql.SQL(target_types[k]))
        for k in key)
    conn.execute(sql.SQL(
        "INSERT INTO {events} ({cols}) SELECT {casts} FROM {stage} e LEFT JOIN {target} t ON {match}"
        " WHERE e.seq > 1 OR t.{watched}::text IS DISTINCT FROM e.{ewatched} ON CONFLICT DO NOTHING").format(
        events=table_ident(log.table), cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols), casts=casts,
        stage=stage, target=table_ident(flow.target.table), match=match,
        watched=sql.Identifier(log.on_change_of),
        ewatched=sql.Identifier(f"e_{_event_column_of(log.columns, log.on_change_of)}")))


def _event_column_of(columns: dict[str, str], target_column: str) -> str:
    for event_col, source in columns.items():
        if source == target_column:
            return event_col
    raise SchemaMismatchError(f"event_log.columns must include the watched column {target_column!r}")


def route_changes(conn: Conn, flow: Flow, rc: RouteChanges, key: Sequence[str], staged_columns: list[str],
                  stage: sql.Identifier) -> None:
    """Insert a request row for each routed field whose staged value differs from the target's."""
    fields = [f for f in rc.fields if f in staged_columns]
    if not fields:
        return
    version = flow.conflicts.version.target if flow.conflicts else None
    when = sql.SQL("s.{}").format(sql.Identifier(version)) if version else sql.SQL("now()")
    # Only an edit newer than the target's row is a request; an older copy is just stale.
    newer = (sql.SQL("s.{v} > t.{v}").format(v=sql.Identifier(version)) if version else sql.SQL("true"))
    values = sql.SQL(", ").join(
        sql.SQL("({}, t.{}::text, s.{}::text)").format(sql.Literal(f), sql.Identifier(f), sql.Identifier(f))
        for f in fields)
    mapping = rc.key_mapping(key)
    req_keys = sql.SQL(", ").join(sql.Identifier(c) for c in mapping)
    # The request's key columns get the target row's key values (cast by assignment to their types).
    key_values = sql.SQL(", ").join(sql.Identifier("t", k) for k in mapping.values())
    match = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in key)
    same_request = sql.SQL(" AND ").join(
        sql.SQL("r.{}::text = t.{}::text").format(sql.Identifier(c), sql.Identifier(k)) for c, k in mapping.items())
    pending = (sql.SQL(" AND r.{} = {}").format(sql.Identifier(rc.status_column), sql.Literal(rc.pending_value))
               if rc.status_column is not None else sql.SQL(""))
    conn.execute(sql.SQL(
        "INSERT INTO {req} ({kc}, {fc}, {oc}, {nc}, {tc})"
        " SELECT {kv}, f.field, f.old, f.new, {when} FROM {stage} s JOIN {target} t ON {match}"
        " CROSS JOIN LATERAL (VALUES {values}) AS f(field, old, new)"
        " WHERE f.old IS DISTINCT FROM f.new AND {newer}"
        " AND NOT EXISTS (SELECT 1 FROM {req} r WHERE {same}"
        " AND r.{fc} = f.field AND r.{nc} IS NOT DISTINCT FROM f.new{pending})").format(
        req=table_ident(rc.table), kc=req_keys, fc=sql.Identifier(rc.field_column),
        oc=sql.Identifier(rc.old_column), nc=sql.Identifier(rc.new_column), tc=sql.Identifier(rc.time_column),
        kv=key_values, when=when, target=table_ident(flow.target.table), match=match,
        values=values, newer=newer, stage=stage, same=same_request, pending=pending))


def lifecycle_guard(lc: Lifecycle) -> sql.Composable:
    """The SQL twin of :func:`supersedes`: the staged row ``s`` replaces the target row ``t`` when
    ``t`` is not final and ``s`` is at the same stage or a later one (within a stage the latest
    source commit wins: the stream delivers in commit order)."""
    col = sql.Identifier(lc.column)
    ranks = lc.ranks()

    def rank(alias: str) -> sql.Composable:
        cases = sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(sql.Literal(k), sql.Literal(v)) for k, v in ranks.items())
        return sql.SQL("(CASE {}.{} {} ELSE 0 END)").format(sql.Identifier(alias), col, cases)

    final = sql.SQL(", ").join(sql.Literal(f) for f in lc.final) if lc.final else sql.SQL("NULL")
    return sql.SQL("({new} >= {old} AND coalesce(t.{col} NOT IN ({final}), true))").format(
        new=rank("s"), old=rank("t"), col=col, final=final)


def supersedes(lc: Lifecycle, ranks: dict[str, int], old: Any, new: Any) -> bool:
    """Does status ``new`` replace status ``old`` (the in-batch twin of :func:`lifecycle_guard`)?"""
    if isinstance(old, str) and old in lc.final:
        return False
    return _rank(ranks, new) >= _rank(ranks, old)


def _rank(ranks: dict[str, int], status: Any) -> int:
    return ranks.get(status, 0) if isinstance(status, str) else 0
