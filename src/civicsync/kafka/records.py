"""A flow's masked records: the target rows its transform made, in civicsync's envelope, and back.

``civicsync capture`` runs each change through the flow's own applier (the same transform, filters
and masking as the direct path) and publishes the resulting target-row action, never the source
row: the bus carries only what the target may hold. The record key is the target key; ``after``
is the target row as PostgreSQL text; ``source.lsn`` is the source transaction's commit LSN (the
event-log tables dedupe on it, so a replay adds no event row twice); ``source.schema/table`` name
the *target* table. A key change arrives as a delete of the old key (plus tombstone) and a create
whose ``before`` holds the old target key (it tells the consumer where unsent TOAST values are).

``apply --group`` decodes records back into the applier's pending actions and writes them with
:meth:`CdcFlowApplier.write`, the direct path's write.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg.adapt import PyFormat, Transformer

from civicsync.apply.cdc import CdcFlowApplier, _Delete, _Upsert
from civicsync.capture.pgoutput import UNCHANGED
from civicsync.events import ChangeEvent, Op, SourceInfo
from civicsync.kafka.envelope import Record, encode

_DUMP = Transformer()
Key = tuple[str | None, ...]


def text_of(value: Any) -> Any:
    """A transformed value as PostgreSQL text (None and UNCHANGED stay)."""
    if value is None or value is UNCHANGED or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    dumped = _DUMP.get_dumper(value, PyFormat.TEXT).dump(value)
    return bytes(dumped).decode() if dumped is not None else None


def _key_dict(applier: CdcFlowApplier, tkey: Sequence[Any]) -> dict[str, str | None]:
    return {k: text_of(v) for k, v in zip(applier.target.key, tkey, strict=True)}


def action_records(applier: CdcFlowApplier, pending: dict[Key, _Upsert | _Delete], op: str, db: str,
                   tx_id: int, ts: datetime) -> list[Record]:
    """The records of one source change's net effect on a flow (deletes first, as ``write`` does)."""
    schema, table = applier.flow.target.table.split(".", 1)
    records: list[Record] = []
    ordered = sorted(pending.items(), key=lambda item: not isinstance(item[1], _Delete))
    for tkey, action in ordered:
        key = _key_dict(applier, tkey)
        info = SourceInfo(db, schema, table, action.lsn, tx_id, ts)
        if isinstance(action, _Delete):
            records += encode(ChangeEvent("d", dict(key), None, info, key))
            continue
        after = {c: text_of(v) for c, v in zip(applier.columns, action.row, strict=True)}
        before = _key_dict(applier, action.moved_from) if action.moved_from is not None else None
        event_op: Op = "u" if op == "u" and before is None else "c"
        # A moved row's "before" is only the old target key (not a full row): one record, no delete.
        records += encode(ChangeEvent(event_op, None, after, info, key), tombstones=False)
        if before is not None:
            records[-1] = Record(records[-1].key, _with_before(records[-1].value, before))
    return records


def _with_before(value: bytes | None, before: dict[str, str | None]) -> bytes | None:
    if value is None:
        return None
    envelope = json.loads(value)
    envelope["civicsync"]["moved_from"] = before
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def moved_from(value: bytes | None) -> dict[str, str | None] | None:
    """The old target key of a create that moved a row (None otherwise)."""
    if value is None:
        return None
    found = (json.loads(value).get("civicsync") or {}).get("moved_from")
    return found if isinstance(found, dict) else None


def partition_of(key_values: Sequence[str | None], partitions: int) -> int:
    """The partition of a record: a stable hash of the partition columns' text (same values, same
    partition, in every process and across restarts)."""
    raw = json.dumps(list(key_values), ensure_ascii=False, separators=(",", ":")).encode()
    return zlib.crc32(raw) % partitions


def collapse(applier: CdcFlowApplier, pending: dict[Key, _Upsert | _Delete], event: ChangeEvent,
             old_key: dict[str, str | None] | None) -> None:
    """Fold one decoded record into ``pending`` in offset order, as the direct path folds a batch:
    unsent values keep what the batch knew, a lifecycle keeps its most advanced status, an event
    log keeps every transition."""
    logged = applier.cdc.event_log is not None
    tkey: Key = tuple(event.key.get(k) for k in applier.target.key)
    previous = pending.get(tkey)
    lsn = event.source.lsn
    if event.op == "d" or event.after is None:
        history = [*(previous.history if previous else []), (None, lsn)] if logged else []
        pending[tkey] = _Delete(lsn, dict(event.key), history)
        return
    row: list[Any] = [event.after.get(c) for c in applier.columns]
    moved = tuple(old_key.get(k) for k in applier.target.key) if old_key else None
    if isinstance(previous, _Upsert):
        if UNCHANGED in row:
            row = [prev if new is UNCHANGED else new for new, prev in zip(row, previous.row, strict=True)]
        history = [*previous.history, (row, lsn)] if logged else previous.history
        if not applier._supersedes(previous.row, row):  # the direct path's own rule
            pending[tkey] = replace(previous, history=history)
            return
        moved = previous.moved_from if UNCHANGED in row else None
    else:
        history = [*(previous.history if previous else []), (row, lsn)] if logged else []
    pending[tkey] = _Upsert(row, lsn, dict(event.key), history, moved if UNCHANGED in row else None)
