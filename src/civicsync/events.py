"""The change event: Debezium's envelope, so a Kafka path can carry civicsync's or Debezium's events.

``op`` is ``c`` (insert), ``u`` (update), ``d`` (delete) or ``r`` (read: initial snapshot).
``before``/``after`` map column names to PostgreSQL text values; an unchanged TOASTed column is
:data:`~civicsync.capture.pgoutput.UNCHANGED` (the server did not send it; the target keeps its
value). ``before`` holds only the key columns unless the table has REPLICA IDENTITY FULL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.adapt import Transformer
from psycopg.pq import Format

from civicsync.capture.pgoutput import UNCHANGED, Value, format_lsn
from civicsync.capture.replication import RowChange, Transaction

Op = Literal["c", "u", "d", "r"]
Image = dict[str, Value]


@dataclass(frozen=True)
class SourceInfo:
    """Where and when a change happened (Debezium's ``source`` block)."""

    db: str
    schema: str
    table: str
    lsn: int            # commit LSN of the source transaction
    tx_id: int
    ts: datetime        # source commit time

    def as_dict(self) -> dict[str, Any]:
        return {"connector": "civicsync", "db": self.db, "schema": self.schema, "table": self.table,
                "lsn": self.lsn, "txId": self.tx_id, "ts_ms": int(self.ts.timestamp() * 1000)}


@dataclass(frozen=True)
class ChangeEvent:
    """One row change in Debezium's envelope."""

    op: Op
    before: Image | None
    after: Image | None
    source: SourceInfo
    key: dict[str, str | None]
    column_types: Mapping[str, int] = field(default_factory=dict)  # column → type OID (Relation message)

    def typed(self, image: Image | None) -> dict[str, Any] | None:
        """``before`` or ``after`` with each value loaded to its Python type by the column's type
        OID (psycopg's loaders: int, Decimal, datetime, dict, list, UUID, ranges, ...). A value
        Python cannot hold (infinite dates, BC years), an unknown type (enums) or an unchanged
        TOAST marker stays as it came: text or UNCHANGED."""
        if image is None:
            return None
        return {k: _load(self.column_types.get(k), v) for k, v in image.items()}

    @property
    def table(self) -> str:
        return f"{self.source.schema}.{self.source.table}"

    def envelope(self) -> dict[str, Any]:
        """The Debezium-format value (unchanged TOAST values are Debezium's placeholder string)."""
        def plain(image: Image | None) -> dict[str, Any] | None:
            if image is None:
                return None
            return {k: ("__debezium_unavailable_value" if v is UNCHANGED else v) for k, v in image.items()}

        return {"before": plain(self.before), "after": plain(self.after), "op": self.op,
                "source": self.source.as_dict(), "ts_ms": int(self.source.ts.timestamp() * 1000)}

    def describe(self) -> str:
        return f"{self.op} {self.table} {self.key} at {format_lsn(self.source.lsn)}"


_TRANSFORMER = Transformer()


def _load(oid: int | None, value: Value) -> Any:
    if oid is None or not isinstance(value, str):
        return value
    try:
        return _TRANSFORMER.get_loader(oid, Format.TEXT).load(value.encode())
    except (psycopg.DataError, ValueError, OverflowError):
        return value


def _image(names: tuple[str, ...], values: tuple[Value, ...] | None, key_only: bool,
           key: tuple[str, ...]) -> Image | None:
    if values is None:
        return None
    image = dict(zip(names, values, strict=True))
    if key_only:
        # pgoutput sends NULLs for non-key columns of a key-only image; they are unknown, not NULL.
        return {k: image[k] for k in key}
    return image


def events_of(txn: Transaction, db: str, keys: Mapping[str, Sequence[str]] | None = None) -> list[ChangeEvent]:
    """The row changes of a transaction as change events, in commit order. ``keys``: each table's
    declared key (``schema.table`` → columns, see :func:`key_of`)."""
    sources: dict[int, SourceInfo] = {}  # one per relation of the transaction, not one per event
    events = []
    for change in txn.changes:
        rel = change.relation
        source = sources.get(id(rel))
        if source is None:
            source = sources[id(rel)] = SourceInfo(db, rel.schema, rel.table, txn.commit_lsn, txn.xid,
                                                   txn.commit_time)
        events.append(_event(change, source, (keys or {}).get(rel.qualified_name)))
    return events


def event_of(change: RowChange, txn: Transaction, db: str, key: Sequence[str] | None = None) -> ChangeEvent:
    """One row change as a change event; ``key``: the table's declared key (see :func:`key_of`)."""
    rel = change.relation
    return _event(change, SourceInfo(db, rel.schema, rel.table, txn.commit_lsn, txn.xid, txn.commit_time), key)


def _event(change: RowChange, source: SourceInfo, key: Sequence[str] | None) -> ChangeEvent:
    rel = change.relation
    names, key_cols = rel.column_names, rel.key_names  # derived once per relation
    before = _image(names, change.before, change.before_is_key_only, key_cols)
    after = _image(names, change.after, False, key_cols)
    return ChangeEvent(change.op, before, after, source, key_of(change, key), rel.column_types)


def key_columns(change: RowChange, declared: Sequence[str] | None) -> Sequence[str]:
    """The columns that identify a change's row: the table's declared key (the config's
    ``TableDecl.key``), else the replica identity's columns. Never the whole row: with REPLICA
    IDENTITY FULL pgoutput flags every column as part of the identity. A delete's key-only old row
    holds only the identity's columns; if the declared key is not among them, the identity's are used."""
    if declared is None:
        return change.relation.key_names
    if change.after is None and change.before_is_key_only and not set(declared) <= set(change.relation.key_names):
        return change.relation.key_names
    return declared


def key_of(change: RowChange, declared: Sequence[str] | None = None) -> dict[str, str | None]:
    """The source key of a row change (from the new row, or the old one of a delete), by
    :func:`key_columns`: pass the table's declared key."""
    values = change.after if change.after is not None else change.before
    assert values is not None
    position = change.relation.position
    return {k: (v if isinstance(v := values[position[k]], str) else None) for k in key_columns(change, declared)}


def old_key_of(change: RowChange, declared: Sequence[str] | None = None) -> dict[str, str | None] | None:
    """The source key of an update's old row, when the stream sent one (a changed key, or REPLICA
    IDENTITY FULL) and it differs from the new row's key; else None."""
    if change.before is None or change.after is None:
        return None
    position = change.relation.position
    columns = key_columns(change, declared)
    if change.before_is_key_only and not set(columns) <= set(change.relation.key_names):
        return None
    old = {k: (v if isinstance(v := change.before[position[k]], str) else None) for k in columns}
    return old if old != key_of(change, declared) else None
