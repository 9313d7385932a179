"""Replaying dead letters: re-apply a waiting key from the source's *current* row.

A dead letter holds the key and the error, never the row. A replay reads the key's row from the
source now (or finds it gone) and sends it through the flow's usual transform and apply, so it
converges the target to what the rules derive from the source today, including any later change
that waited behind the failure. Success marks the entry ``replayed`` and unblocks the key; failure
counts an attempt and schedules the next one with exponential backoff.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql

from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.config.models import Retry
from civicsync.db.catalog import column_types
from civicsync.db.errors import describe
from civicsync.deadletters.batch import matching
from civicsync.errors import CivicsyncError, RowRejectedError
from civicsync.errors import ReplayFailedError as ReplayFailedError  # re-exported: it lives in the one tree
from civicsync.events import ChangeEvent, Image, SourceInfo
from civicsync.extract.source import stream_query
from civicsync.retry import backoff_delays
from civicsync.sqlnames import table_ident

Conn = psycopg.Connection[tuple[Any, ...]]
BATCH = 100


class ReplayHost(Protocol):
    """What a replay needs from the CDC worker that holds the flows: its target session, its flows'
    appliers, a session on the source, and a way to let a converged key flow again."""

    flows: list[str]
    appliers: list[CdcFlowApplier]

    @property
    def target_connection(self) -> Conn: ...

    def source_reader(self) -> Conn: ...

    def unblock(self, flow: str, key: dict[str, Any]) -> None: ...


@dataclass
class ReplayCounts:
    """What a replay did: dead letters that converged, and those it tried that still fail."""

    replayed: int = 0
    failed: int = 0

    def __add__(self, other: ReplayCounts) -> ReplayCounts:
        return ReplayCounts(self.replayed + other.replayed, self.failed + other.failed)


def replay_due(worker: ReplayHost, retry: Retry, *, due_only: bool = True, ids: list[int] | None = None,
               limit: int | None = BATCH, stop: threading.Event | None = None) -> ReplayCounts:
    """Replay pending dead letters of the worker's flows (those due, or all; at most ``limit``); a
    failure schedules the next replay by ``retry`` (the config's ``retries.dead_letters``). A set
    ``stop`` ends the replay between two dead letters (the rest wait for the next one)."""
    conn = worker.target_connection
    rows = conn.execute(
        "SELECT dead_letter_id, flow, row_key, attempts, held FROM civicsync.dead_letters WHERE status = 'pending'"
        " AND flow = ANY(%s) AND (NOT %s OR next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp())"
        " AND (%s::bigint[] IS NULL OR dead_letter_id = ANY(%s)) ORDER BY lsn NULLS LAST, dead_letter_id LIMIT %s",
        (worker.flows, due_only, ids, ids, limit)).fetchall()
    conn.commit()
    appliers = {a.name: a for a in worker.appliers}
    counts = ReplayCounts()
    for dead_id, flow, key, attempts, held in rows:
        if stop is not None and stop.is_set():
            break
        applier = appliers[flow]
        try:
            with conn.transaction():
                _reapply(worker, applier, key, held or [])
            conn.execute("UPDATE civicsync.dead_letters SET status = 'replayed', held = NULL,"
                         " last_seen = clock_timestamp() WHERE dead_letter_id = %s", (dead_id,))
            worker.unblock(flow, key)
            counts.replayed += 1
        except (psycopg.Error, CivicsyncError) as exc:
            delays = backoff_delays(retry)
            delay = delays[min(attempts, len(delays) - 1)]
            conn.execute(
                "UPDATE civicsync.dead_letters SET attempts = attempts + 1, error = %s, last_seen = clock_timestamp(),"
                " next_attempt_at = clock_timestamp() + make_interval(secs => %s) WHERE dead_letter_id = %s",
                (_message(exc), delay, dead_id))
            counts.failed += 1
        conn.commit()
    return counts


def _message(exc: Exception) -> str:
    # Never the driver's text: it and its detail quote row values (personal data).
    return describe(exc) if isinstance(exc, psycopg.Error) else str(exc)


def letter_key(applier: CdcFlowApplier, key: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a dead letter's key a replay may look the source row up by: the declared key
    columns of the flow's source table (a top-N flow: its partition columns), nothing else.

    Older versions stored the whole row as the key of a table with REPLICA IDENTITY FULL; looking a
    row up by all its values finds nothing once any value changed, and "not found" would then delete
    a target row whose source row still exists. Extra columns are dropped; a key without every
    declared column cannot name a row and is refused."""
    columns = applier.cdc.top_n.partition_by if applier.cdc.top_n is not None else applier.source.key
    missing = [c for c in columns if c not in key]
    if missing:
        raise ReplayFailedError(f"the stored key lacks the key column(s) {', '.join(missing)} of "
                                f"{applier.flow.source.table}: it cannot name a row (discard it)")
    return {c: key[c] for c in columns}


def held_rows(applier: CdcFlowApplier, history: Sequence[tuple[Sequence[Any], int]]) -> list[dict[str, Any]]:
    """What a dead letter keeps of an event-log flow's transitions: per (output row, LSN) the LSN and
    the output values of the target key and the event-log columns, as the flow masked them."""
    keep = _held_columns(applier)
    return [{"lsn": lsn, "values": {c: _plain(row[applier.columns.index(c)]) for c in keep}}
            for row, lsn in history]


def history_of(applier: CdcFlowApplier, held: Sequence[Mapping[str, Any]]) -> list[tuple[list[Any], int]]:
    """The transitions a dead letter kept, as the applier's (row, LSN) history, in LSN order and once
    each (a batch retried after a part-way commit may have kept one twice)."""
    seen: set[str] = set()
    out: list[tuple[list[Any], int]] = []
    for entry in sorted(held, key=lambda e: int(e["lsn"])):
        text = json.dumps(entry, sort_keys=True)
        if text not in seen:
            seen.add(text)
            values = entry["values"]
            out.append(([values.get(c) for c in applier.columns], int(entry["lsn"])))
    return out


def _held_columns(applier: CdcFlowApplier) -> list[str]:
    log = applier.cdc.event_log
    assert log is not None
    wanted = [*applier.target.key, *log.columns.values()]
    return [c for c in dict.fromkeys(wanted) if c in applier.columns]


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else None  # UNCHANGED (TOAST) is not kept


def _reapply(worker: ReplayHost, applier: CdcFlowApplier, stored: dict[str, Any],
             held: Sequence[Mapping[str, Any]] = ()) -> None:
    conn = worker.target_connection
    key = letter_key(applier, stored)
    if applier.cdc.top_n is not None:
        outcome = FlowOutcome()
        values = tuple(key[c] for c in applier.cdc.top_n.partition_by)
        applier.recompute(conn, worker.source_reader(), {values}, outcome)
    else:
        events, gone = current_events(worker.source_reader(), applier, [key])
        if gone:
            raise RowRejectedError("gone", "the source row no longer exists and this flow ignores deletes")
        outcome = apply_events(conn, applier, events, history_of(applier, held) if held else [])
    if outcome.dead_letters:
        raise ReplayFailedError("; ".join(d.error for d in outcome.dead_letters))


def current_events(source: Conn, applier: CdcFlowApplier, lookups: Sequence[Mapping[str, Any]]
                   ) -> tuple[list[ChangeEvent], list[dict[str, Any]]]:
    """The source rows matching each lookup (source column → value) as they are now: read ('r') events
    in source-key order; a lookup nothing matches becomes a delete event keyed by the lookup, or, when
    the flow ignores deletes, is returned as gone. Only a lookup by exactly the declared key columns
    may become a delete (nothing else proves the row gone): any other lookup nothing matches is gone."""
    if not lookups:
        return [], []
    table = applier.flow.source.table
    types = column_types(source, table)
    where = matching(types, lookups)
    cols = list(applier.source.columns)
    # Through COPY: each value's output-function text, exactly what pgoutput sends (`::text` differs for some
    # types: a boolean casts to 'true' but is sent as 't').
    rows = list(stream_query(source, sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in cols), table_ident(table), where,
        sql.SQL(", ").join(sql.Identifier(k) for k in applier.source.key))))
    schema, name = table.split(".", 1)
    info = SourceInfo(source.info.dbname, schema, name, 0, 0, datetime.now(UTC))
    events: list[ChangeEvent] = []
    seen: set[str] = set()
    for row in rows:
        image: Image = dict(zip(cols, row, strict=True))
        events.append(ChangeEvent("r", None, image, info, {k: row[cols.index(k)] for k in applier.source.key}))
        seen.update(_matches(image, lookups))
    gone: list[dict[str, Any]] = []
    for lookup in lookups:
        if _lookup_text(lookup) in seen:
            continue
        if applier.cdc.deletes == "ignore" or sorted(lookup) != sorted(applier.source.key):
            gone.append(dict(lookup))
        else:
            events.append(ChangeEvent("d", dict(lookup), None, info, dict(lookup)))
    return events, gone


def apply_events(conn: psycopg.Connection[Any], applier: CdcFlowApplier, events: Sequence[ChangeEvent],
                 before: Sequence[tuple[list[Any], int]] = ()) -> FlowOutcome:
    """Apply events as one batch of the event path (net effect per key, then write), in the caller's
    transaction. Nothing is written when any event breaks a rule (see the outcome's dead letters).
    ``before``: transitions of an event-log flow's key kept by its dead letter, logged ahead of these."""
    outcome = FlowOutcome()
    pending = applier.net_effect(list(events), set(), outcome)
    if before:
        for action in pending.values():
            if hasattr(action, "history"):
                action.history = [*before, *action.history]
    if not outcome.dead_letters:
        applier.write(conn, pending, outcome)
    return outcome


def _lookup_text(lookup: Mapping[str, Any]) -> str:
    return repr(sorted((k, None if v is None else str(v)) for k, v in lookup.items()))


def _matches(image: Mapping[str, Any], lookups: Sequence[Mapping[str, Any]]) -> set[str]:
    """The lookups a source row answers (by the text of its values)."""
    columns = {tuple(sorted(lookup)) for lookup in lookups}
    return {_lookup_text({c: image[c] for c in cols}) for cols in columns}


__all__ = [
    "ReplayCounts",
    "ReplayFailedError",
    "ReplayHost",
    "apply_events",
    "current_events",
    "held_rows",
    "history_of",
    "letter_key",
    "replay_due",
]
