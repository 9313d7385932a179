"""Replay a batch flow's dead letters: re-read the rejected keys' rows from the source now.

A batch dead letter holds the source key and the error, never the row. After the cause is fixed (the
source row corrected, or the flow's rules changed), a replay reads exactly those keys in one snapshot,
sends them through the flow's transform and merge (masking and conflict rules included) in one target
transaction, and marks each key replayed, or leaves it pending with one more attempt and the new error.
Rows gone from the source are marked replayed (nothing left to apply). Nothing else in the target moves:
no watermark, no handling of rows missing from the source, no count validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from civicsync.apply.merge import MergeResult, MergeWriter
from civicsync.config import LoadedConfig
from civicsync.config.models import Flow, TableDecl
from civicsync.db.catalog import column_types
from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.db.origin import origin_for, setup_origin
from civicsync.errors import FatalError, RowRejectedError
from civicsync.extract.source import begin_snapshot, stream_rows
from civicsync.transform.chain import RowTransform, build_transform

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class ReplayResult:
    """What a batch replay did."""

    replayed: int
    still_pending: int


@dataclass(frozen=True)
class KeyMerge:
    """What re-reading and merging a set of keys did. Keys are canonical JSON of the key dicts."""

    found: set[str]         # keys whose row the source still has
    failed: dict[str, str]  # key → why the flow's rules refuse its row
    merged: MergeResult


def canonical(key: Mapping[str, Any]) -> str:
    """A key dict as canonical JSON (values as text), to match keys from any origin."""
    return json.dumps({k: None if v is None else str(v) for k, v in key.items()}, sort_keys=True)


def matching(types: Mapping[str, str], keys: Sequence[Mapping[str, Any]]) -> sql.Composable:
    """A WHERE condition matching rows with any of ``keys`` (column → value, typed by ``types``)."""
    return sql.SQL(" OR ").join(
        sql.SQL("({})").format(sql.SQL(" AND ").join(
            sql.SQL("{} = {}::{}").format(sql.Identifier(k), sql.Literal(v), sql.SQL(types[k]))
            for k, v in key.items()))
        for key in keys)


def merge_source_keys(src: Conn, tgt: Conn, name: str, flow: Flow, target: TableDecl, transform: RowTransform,
                      keys: Sequence[Mapping[str, Any]]) -> KeyMerge:
    """Read the source rows matching ``keys`` (source column → value) in one snapshot now, send them
    through the flow's transform and merge them into the target, inside the caller's target transaction.

    Only those rows move: no watermark, no handling of rows missing from the source, no count
    validation. Rows the rules refuse are reported in ``failed``, not merged."""
    if not keys:
        return KeyMerge(set(), {}, MergeResult(0, 0, 0))
    columns = sorted({c for key in keys for c in key})
    begin_snapshot(src)
    types = column_types(src, flow.source.table)
    where = matching(types, keys)
    rows: list[tuple[str | None, ...]] = []
    failed: dict[str, str] = {}
    found: set[str] = set()
    positions = [transform.source_columns.index(c) for c in columns]
    for row in stream_rows(src, flow.source.table, transform.source_columns, where):
        key = canonical({c: row[i] for c, i in zip(columns, positions, strict=True)})
        found.add(key)
        try:
            out = transform(row)
        except RowRejectedError as exc:
            failed[key] = str(exc)
            continue
        if out is not None:
            rows.append(out)
    src.execute("ROLLBACK")
    writer = MergeWriter(tgt, name, flow, target, transform.target_columns)
    writer.create_stage()
    writer.stage_rows(rows)
    return KeyMerge(found, failed, writer.merge(None, handle_missing=False))


def replay_batch_dead_letters(config: LoadedConfig, name: str, ids: list[int] | None = None) -> ReplayResult:
    """Replay the pending dead letters of batch flow ``name`` (or only ``ids``)."""
    name = config.model.flow_name(name)
    flow = config.model.flows[name]
    if flow.kind != "batch":
        raise FatalError(f"flow {name} is a {flow.kind} flow; only batch flows replay here")
    conns = config.model.connections
    source = conns[flow.source.connection].tables[flow.source.table]
    target = conns[flow.target.connection].tables[flow.target.table]
    transform = build_transform(flow, source, config.secrets, datetime.now(UTC).isoformat(), dsn=config.dsn)
    with connect(config.dsn(flow.source.connection, "batch"), purpose=f"replay:{name}", autocommit=True,
                 label=flow.source.connection) as src, \
            connect(config.dsn(flow.target.connection, "batch"), purpose=f"replay:{name}",
                    label=flow.target.connection) as tgt, mapped_errors(f"replaying flow {name}"):
        setup_origin(tgt, origin_for(config, f"batch_{name}"))
        letters: list[tuple[int, dict[str, Any]]] = [(int(str(i)), dict(k)) for i, k in tgt.execute(  # type: ignore[call-overload]
            "SELECT dead_letter_id, row_key FROM civicsync.dead_letters WHERE flow = %s AND status = 'pending'"
            " AND (%s::bigint[] IS NULL OR dead_letter_id = ANY(%s)) ORDER BY dead_letter_id",
            (name, ids, ids)).fetchall()]
        if not letters:
            return ReplayResult(0, 0)
        by_key = {canonical(key): dead_id for dead_id, key in letters}
        merged = merge_source_keys(src, tgt, name, flow, target, transform, [key for _, key in letters])
        failed = {by_key[k]: error for k, error in merged.failed.items()}
        _mark(tgt, failed, [i for i in by_key.values() if i not in failed])
        tgt.commit()
        return ReplayResult(len(by_key) - len(failed), len(failed))


def _mark(conn: Any, failed: dict[int, str], done: list[int]) -> None:
    if done:
        conn.execute("UPDATE civicsync.dead_letters SET status = 'replayed', last_seen = clock_timestamp()"
                     " WHERE dead_letter_id = ANY(%s)", (done,))
    for dead_id, error in failed.items():
        conn.execute("UPDATE civicsync.dead_letters SET attempts = attempts + 1, error = %s,"
                     " last_seen = clock_timestamp() WHERE dead_letter_id = %s", (error, dead_id))
