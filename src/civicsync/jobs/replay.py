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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from civicsync.apply.merge import MergeWriter
from civicsync.config import LoadedConfig
from civicsync.db.catalog import column_types
from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.db.origin import origin_for, setup_origin
from civicsync.errors import FatalError, RowRejectedError
from civicsync.extract.source import begin_snapshot, stream_rows
from civicsync.transform.chain import build_transform


@dataclass(frozen=True)
class ReplayResult:
    """What a batch replay did."""

    replayed: int
    still_pending: int


def replay_batch_dead_letters(config: LoadedConfig, name: str, ids: list[int] | None = None) -> ReplayResult:
    """Replay the pending dead letters of batch flow ``name`` (or only ``ids``)."""
    name = config.model.flow_name(name)
    flow = config.model.flows[name]
    if flow.kind != "batch":
        raise FatalError(f"flow {name} is a {flow.kind} flow; only batch flows replay here")
    conns = config.model.connections
    source = conns[flow.source.connection].tables[flow.source.table]
    target = conns[flow.target.connection].tables[flow.target.table]
    transform = build_transform(flow, source, config.secrets, datetime.now(UTC).isoformat())
    with connect(config.dsn(flow.source.connection), purpose=f"replay:{name}", autocommit=True,
                 label=flow.source.connection) as src, \
            connect(config.dsn(flow.target.connection), purpose=f"replay:{name}",
                    label=flow.target.connection) as tgt, mapped_errors(f"replaying flow {name}"):
        setup_origin(tgt, origin_for(config, f"batch_{name}"))
        letters: list[tuple[int, dict[str, Any]]] = [(int(str(i)), dict(k)) for i, k in tgt.execute(  # type: ignore[call-overload]
            "SELECT dead_letter_id, row_key FROM civicsync.dead_letters WHERE flow = %s AND status = 'pending'"
            " AND (%s::bigint[] IS NULL OR dead_letter_id = ANY(%s)) ORDER BY dead_letter_id",
            (name, ids, ids)).fetchall()]
        if not letters:
            return ReplayResult(0, 0)
        by_key = {json.dumps(key, sort_keys=True): dead_id for dead_id, key in letters}
        begin_snapshot(src)
        types = column_types(src, flow.source.table)
        where = sql.SQL(" OR ").join(
            sql.SQL("({})").format(sql.SQL(" AND ").join(
                sql.SQL("{} = {}::{}").format(sql.Identifier(k), sql.Literal(v), sql.SQL(types[k]))
                for k, v in key.items()))
            for _, key in letters)
        rows: list[tuple[str | None, ...]] = []
        failed: dict[int, str] = {}
        found: set[int] = set()
        for row in stream_rows(src, flow.source.table, transform.source_columns, where):
            dead_id = by_key[json.dumps(transform.key_of(row), sort_keys=True)]
            found.add(dead_id)
            try:
                out = transform(row)
            except RowRejectedError as exc:
                failed[dead_id] = str(exc)
                continue
            if out is not None:
                rows.append(out)
        src.execute("ROLLBACK")
        writer = MergeWriter(tgt, name, flow, target, transform.target_columns)
        writer.create_stage()
        writer.stage_rows(rows)
        writer.merge(None, handle_missing=False)
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
