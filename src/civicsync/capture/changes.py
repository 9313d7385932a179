"""Row changes of the replication stream as change events (the capture side of civicsync.events).

Turns pgoutput's :class:`~civicsync.capture.replication.RowChange` into the engine's
:class:`~civicsync.events.ChangeEvent`, and finds each change's source key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from civicsync.capture.replication import RowChange, Transaction
from civicsync.events import ChangeEvent, Image, SourceInfo, Value


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
