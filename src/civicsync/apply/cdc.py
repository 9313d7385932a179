"""Apply a batch of change events for one CDC flow, inside the caller's target transaction.

The same transform chain as the batch path turns each event's row into the target row; the same
:class:`~civicsync.apply.merge.MergeWriter` stages and writes it. Per target key, the events of a
batch collapse to their net effect in commit order (a forward-only lifecycle keeps the most
advanced status instead of the last). Rule kinds on top of that, all declared in ``cdc:``:

- ``top_n``: a change to any row of a partition recomputes the whole partition from the source;
- ``route_changes``: fields the source may not write become request rows when they differ;
- ``event_log``: every change of one column's value becomes an event row (each transition in the
  batch, not only the net one);
- ``write: update_only`` with ``on_missing_target`` and ``deletes: ignore``.

Events that break a rule are dead-lettered by key (never their values) and, with every later event
of the same source key, wait for a replay; other keys flow on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql

from civicsync.apply.cdc_rules import History, lifecycle_guard, log_events, route_changes, supersedes
from civicsync.apply.merge import MergeWriter
from civicsync.capture.changes import key_of, old_key_of
from civicsync.capture.pgoutput import UNCHANGED, Relation, format_lsn
from civicsync.capture.replication import RowChange, Transaction
from civicsync.config import LoadedConfig
from civicsync.config.models import Cdc, Flow, TableDecl
from civicsync.config.references import template_fields
from civicsync.db.catalog import column_types
from civicsync.errors import RowRejectedError, SchemaMismatchError
from civicsync.events import ChangeEvent
from civicsync.extract.source import stream_query
from civicsync.sqlnames import idents, table_ident, texts
from civicsync.transform.chain import build_transform

Conn = psycopg.Connection[tuple[Any, ...]]
Key = tuple[str | None, ...]
LSN_COLUMN = "civicsync_lsn"


@dataclass(frozen=True)
class DeadLetter:
    """An event that could not be applied: which key, what happened, never the row's values."""

    flow: str
    source_key: dict[str, str | None]
    op: str
    lsn: int
    kind: str
    error: str


@dataclass
class FlowOutcome:
    """What applying one batch did for one flow."""

    events: int = 0
    written: int = 0
    deleted: int = 0
    skipped: int = 0
    conflicts: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass
class _Upsert:
    row: list[Any]                     # target values; UNCHANGED where the source did not send one
    lsn: int
    source_key: dict[str, str | None]
    history: History = field(default_factory=list)  # every (row, lsn) seen, for event_log
    moved_from: Key | None = None      # the key changed: unchanged values come from the old key's target row


@dataclass
class _Delete:
    lsn: int
    source_key: dict[str, str | None]
    history: History = field(default_factory=list)  # the key's transitions before it went (event_log)


class CdcFlowApplier:
    """Applies change events of one flow's source table to its target table."""

    def __init__(self, config: LoadedConfig, name: str) -> None:
        self.name = name
        self.flow: Flow = config.model.flows[name]
        assert self.flow.cdc is not None
        self.cdc: Cdc = self.flow.cdc
        conns = config.model.connections
        self.source: TableDecl = conns[self.flow.source.connection].tables[self.flow.source.table]
        self.target: TableDecl = conns[self.flow.target.connection].tables[self.flow.target.table]
        self.transform = build_transform(self.flow, self.source, config.secrets, run_time="", dsn=config.dsn)
        self.columns = list(self.transform.target_columns)
        if self.cdc.top_n is not None:
            self.columns.append(self.cdc.top_n.rank_column)
        self._key_idx = [self.columns.index(k) for k in self.target.key]
        # target column → the source columns it is computed from (for unchanged TOAST values)
        self._depends = {c: _sources_of(self.flow, c) for c in self.transform.target_columns}
        routed = set(self.cdc.route_changes.fields) if self.cdc.route_changes else set()
        self.write_columns = [c for c in self.columns if c not in routed]
        self._ranks = self.cdc.lifecycle.ranks() if self.cdc.lifecycle else {}
        self._logged = self.cdc.event_log is not None  # only an event log needs every transition
        self._lifecycle_idx = self.columns.index(self.cdc.lifecycle.column) if self.cdc.lifecycle else -1
        self._top_n = self.cdc.top_n is not None
        self._tuple_readers: dict[int, tuple[Relation, Callable[[Any], Sequence[Any]]]] = {}
        self._types: dict[str, str] | None = None
        self._source_types: dict[str, str] | None = None

    # ------------------------------------------------------------------ events → net effect per key

    def _target_key_from_source_key(self, source_key: dict[str, str | None]) -> Key | None:
        key: list[str | None] = []
        for col in self.target.key:
            spec = self.flow.columns.get(col)
            if spec is None or spec.from_ is None or spec.from_ not in source_key:
                return None
            key.append(source_key[spec.from_])
        return tuple(key)

    def _transform(self, raw: Sequence[Any]) -> list[Any] | None:
        # Unchanged TOAST values are rare: only pay for tracking them when one is there.
        unchanged = ({c for c, v in zip(self.transform.source_columns, raw, strict=True) if v is UNCHANGED}
                     if UNCHANGED in raw else set())
        out = self.transform([None if v is UNCHANGED else v for v in raw] if unchanged else raw)
        if out is None:
            return None
        row: list[Any] = list(out)
        if unchanged:
            for i, col in enumerate(self.transform.target_columns):
                if self._depends[col] & unchanged:
                    row[i] = UNCHANGED
        if self._top_n:
            row.append(None)
        return row

    def _supersedes(self, old: list[Any], new: list[Any]) -> bool:
        """May ``new`` replace ``old`` within a batch? Always, unless a lifecycle says no."""
        lc = self.cdc.lifecycle
        if lc is None:
            return True
        return supersedes(lc, self._ranks, old[self._lifecycle_idx], new[self._lifecycle_idx])

    def _declared_key(self, image: dict[str, Any] | None, key: dict[str, str | None]) -> dict[str, str | None]:
        """An event's key reduced to the source table's declared key (an event built from a REPLICA
        IDENTITY FULL stream may carry the whole row as its key)."""
        declared = self.source.key
        if all(k in key for k in declared):
            return key if len(key) == len(declared) else {k: key[k] for k in declared}
        if image is not None and all(k in image for k in declared):
            return {k: (v if isinstance(v := image[k], str) else None) for k in declared}
        return key  # the replica identity's columns (the declared key is not in a key-only old row)

    def _event_item(self, e: ChangeEvent, read: Callable[[Any], Sequence[Any]]) -> _Item:
        key = self._declared_key(e.after if e.after is not None else e.before, e.key)
        old = self._declared_key(e.before, {}) if e.op == "u" and e.before is not None else None
        return e.op, e.after, read, key, e.source.lsn, e.table, old if old and old != key else None

    def net_effect(self, events: Sequence[ChangeEvent], blocked: set[str],
                   outcome: FlowOutcome) -> dict[Key, _Upsert | _Delete]:
        """Collapse the batch to one action per target key, dead-lettering what breaks a rule."""
        read = _reader(self.transform.source_columns)
        return self._net((self._event_item(e, read) for e in events), blocked, outcome)

    def net_effect_of_changes(self, changes: Sequence[tuple[RowChange, Transaction]], blocked: set[str],
                              outcome: FlowOutcome) -> dict[Key, _Upsert | _Delete]:
        """:meth:`net_effect` straight from the stream's row changes (values in the relation's column
        order), without building an envelope per change: the applier picks its source columns by
        position, worked out once per relation."""
        def items() -> Iterator[_Item]:
            rel: Relation | None = None
            read: Callable[[Any], Sequence[Any]] = _reader(())
            key: Sequence[str] = self.source.key
            for change, txn in changes:
                if change.relation is not rel:
                    rel = change.relation
                    read = self._tuple_reader(rel)
                    # A declared key column the stream lacks (renamed, dropped) is reported by the reader
                    # as a schema mismatch; the key falls back to the identity's columns meanwhile.
                    key = self.source.key if all(k in rel.position for k in self.source.key) else rel.key_names
                old = old_key_of(change, key) if change.before is not None and change.op == "u" else None
                yield (change.op, change.after, read, key_of(change, key), txn.commit_lsn, rel.qualified_name,
                       old)
        return self._net(items(), blocked, outcome)

    def _tuple_reader(self, rel: Relation) -> Callable[[Any], Sequence[Any]]:
        cached = self._tuple_readers.get(id(rel))
        if cached is not None and cached[0] is rel:
            return cached[1]
        missing = [c for c in self.transform.source_columns if c not in rel.position]
        read: Callable[[Any], Sequence[Any]]
        if missing:
            def read(values: Any, column: str = missing[0]) -> Sequence[Any]:
                raise KeyError(column)
        else:
            read = _reader([rel.position[c] for c in self.transform.source_columns])
        self._tuple_readers = {id(rel): (rel, read)}  # the current relation only (a schema change replaces it)
        return read

    def _net(self, items: Iterable[_Item], blocked: set[str], outcome: FlowOutcome) -> dict[Key, _Upsert | _Delete]:
        pending: dict[Key, _Upsert | _Delete] = {}
        for op, after, read, key, lsn, table, old_key in items:
            outcome.events += 1
            skey = json.dumps(key, sort_keys=True) if blocked else ""
            if blocked and skey in blocked:
                outcome.dead_letters.append(DeadLetter(self.name, key, op, lsn, "blocked",
                                                       "waiting behind an earlier failure of the same key"))
                continue
            try:
                if op == "d" or after is None:
                    row = None
                else:
                    try:
                        raw = read(after)
                    except KeyError as exc:
                        raise SchemaMismatchError(
                            f"flow {self.name}: {table} has no column {exc.args[0]!r} in the change stream; "
                            "the config declares it (was the column renamed or dropped?)") from None
                    row = self._transform(raw)
                self._collapse(row, key, lsn, table, pending, outcome, old_key)
            except RowRejectedError as exc:
                blocked.add(json.dumps(key, sort_keys=True))  # later events of this key wait too
                outcome.dead_letters.append(DeadLetter(self.name, key, op, lsn, exc.kind, str(exc)))
        return pending

    def _collapse(self, row: list[Any] | None, key: dict[str, str | None], lsn: int, table: str,
                  pending: dict[Key, _Upsert | _Delete], outcome: FlowOutcome,
                  old_key: dict[str, str | None] | None = None) -> None:
        # A changed key moves the row (upsert flows): the old key goes, the new one is written.
        moved_from = self._target_key_from_source_key(old_key) if old_key and self.cdc.write == "upsert" else None
        if row is None:  # a delete, or a row the filters no longer keep
            if self.cdc.deletes == "ignore":
                outcome.skipped += 1
                return
            for source_key in (old_key, key) if moved_from is not None else (key,):
                tkey = self._target_key_from_source_key(source_key or {})
                if tkey is None:
                    raise RowRejectedError("key", f"cannot derive the target key of {table} {source_key}")
                self._remove(tkey, source_key or {}, lsn, pending)
            return
        tkey = tuple(row[i] for i in self._key_idx)
        if moved_from is not None and moved_from != tkey:
            self._move(row, key, lsn, tkey, moved_from, old_key or {}, pending)
            return
        previous = pending.get(tkey)
        logged = self._logged
        if isinstance(previous, _Upsert):
            # Values the source did not resend (TOAST) keep what this batch already knew.
            if UNCHANGED in row:
                row = [prev if new is UNCHANGED else new for new, prev in zip(row, previous.row, strict=True)]
            history = [*previous.history, (row, lsn)] if logged else previous.history
            if not self._supersedes(previous.row, row):
                pending[tkey] = replace(previous, history=history)
                return
            pending[tkey] = _Upsert(row, lsn, key, history, previous.moved_from if UNCHANGED in row else None)
        else:  # new in this batch, or back after a delete in this batch (its history goes on)
            history = [*(previous.history if previous else []), (row, lsn)] if logged else []
            pending[tkey] = _Upsert(row, lsn, key, history)

    def _remove(self, tkey: Key, key: dict[str, str | None], lsn: int, pending: dict[Key, _Upsert | _Delete]) -> None:
        """The key's row goes; the transitions it went through in this batch still reach the event log."""
        previous = pending.get(tkey)
        history: History = [*(previous.history if previous else []), (None, lsn)] if self._logged else []
        pending[tkey] = _Delete(lsn, key, history)

    def _move(self, row: list[Any], key: dict[str, str | None], lsn: int, tkey: Key, moved_from: Key,
              old_key: dict[str, str | None], pending: dict[Key, _Upsert | _Delete]) -> None:
        old = pending.pop(moved_from, None)
        if isinstance(old, _Upsert) and UNCHANGED in row:
            row = [prev if new is UNCHANGED else new for new, prev in zip(row, old.row, strict=True)]
        still = (old.moved_from if isinstance(old, _Upsert) and old.moved_from else moved_from)
        previous = pending.get(tkey)
        history = [*(previous.history if previous else []), (row, lsn)] if self._logged else []
        # The new key before the old one's delete: isolated key by key, the row is filled first.
        pending[tkey] = _Upsert(row, lsn, key, history, still if UNCHANGED in row else None)
        if self.cdc.deletes == "apply":
            old_history: History = [*(old.history if old else []), (None, lsn)] if self._logged else []
            pending[moved_from] = _Delete(lsn, old_key, old_history)
        elif old is not None:
            pending[moved_from] = old

    # ------------------------------------------------------------------ writing

    def write(self, conn: Conn, pending: dict[Key, _Upsert | _Delete], outcome: FlowOutcome) -> None:
        """Write the net effect to the target (inside the caller's transaction)."""
        upserts = [a for a in pending.values() if isinstance(a, _Upsert)]
        moved = [u for u in upserts if u.moved_from is not None and UNCHANGED in u.row]
        if moved:
            upserts = [u for u in upserts if id(u) not in self._fill_moved(conn, moved, outcome)]
        deletes = [(k, a) for k, a in pending.items() if isinstance(a, _Delete)]
        if deletes:
            if self.cdc.event_log is not None:
                self._log_events(conn, [(k, d.history) for k, d in deletes])
            # Deletes first: a moved row's old key goes before its new key is written.
            writer = MergeWriter(conn, self.name, self.flow, self.target, self.columns)
            outcome.deleted += writer.delete_keys([k for k, _ in deletes])
        whole = [u for u in upserts if UNCHANGED not in u.row]
        partial = [u for u in upserts if UNCHANGED in u.row]
        if whole:
            self._write_rows(conn, whole, self.write_columns, outcome)
        # Rows with unchanged TOAST values: update only the columns that were sent.
        by_columns: dict[tuple[str, ...], list[_Upsert]] = {}
        for u in partial:
            sent = tuple(c for c, v in zip(self.columns, u.row, strict=True) if v is not UNCHANGED)
            by_columns.setdefault(sent, []).append(u)
        for sent, group in by_columns.items():
            self._write_rows(conn, group, [c for c in self.write_columns if c in sent], outcome, only=sent)

    def _fill_moved(self, conn: Conn, moved: list[_Upsert], outcome: FlowOutcome) -> set[int]:
        """Take the unchanged (unsent) values of rows whose key changed from the old key's target row.
        A row the target does not have waits in the dead letters (its replay re-reads the source);
        returns the ids of those."""
        types = self._target_types(conn)
        waiting: set[int] = set()
        for u in moved:
            assert u.moved_from is not None
            missing = [c for c, v in zip(self.columns, u.row, strict=True) if v is UNCHANGED]
            found = conn.execute(sql.SQL("SELECT {} FROM {} t WHERE {}").format(
                texts(sql.Identifier("t", c) for c in missing), table_ident(self.flow.target.table),
                sql.SQL(" AND ").join(sql.SQL("t.{} = %s::{}").format(sql.Identifier(k), sql.SQL(types[k]))
                                      for k in self.target.key)), u.moved_from).fetchone()
            if found is None:
                waiting.add(id(u))
                outcome.dead_letters.append(DeadLetter(
                    self.name, u.source_key, "u", u.lsn, "unchanged_unavailable",
                    f"the key changed and the old row of {self.flow.target.table} is not there to give the "
                    "values the source did not resend; will re-read the source"))
                continue
            values = dict(zip(missing, found, strict=True))
            u.row = [values[c] if v is UNCHANGED else v for c, v in zip(self.columns, u.row, strict=True)]
        return waiting

    def _write_rows(self, conn: Conn, rows: list[_Upsert], write_columns: list[str], outcome: FlowOutcome,
                    only: tuple[str, ...] | None = None) -> None:
        staged_columns = list(only) if only is not None else self.columns
        idx = [self.columns.index(c) for c in staged_columns]
        extra = [(LSN_COLUMN, "pg_lsn")] if self.cdc.event_log else []
        writer = MergeWriter(conn, self.name, self.flow, self.target, staged_columns,
                             write_columns=write_columns, extra_stage_columns=extra)
        writer.create_stage()
        writer.stage_rows([*(u.row[i] for i in idx), *([format_lsn(u.lsn)] if extra else [])] for u in rows)
        if self.cdc.event_log is not None:
            self._log_events(conn, [(tuple(u.row[i] for i in self._key_idx), u.history) for u in rows])
        if self.cdc.route_changes is not None:
            route_changes(conn, self.flow, self.cdc.route_changes, self.target.key, staged_columns, writer.stage)
        update_only = self.cdc.write == "update_only" or only is not None
        if update_only:
            missing = writer.missing_in_target()
            if missing and self.cdc.on_missing_target == "dead_letter" and only is None:
                by_key = {tuple(str(v) if v is not None else None for v in m.values()): m for m in missing}
                for u in rows:
                    if tuple(u.row[i] for i in self._key_idx) in by_key:
                        outcome.dead_letters.append(DeadLetter(
                            self.name, u.source_key, "u", u.lsn, "missing_target",
                            f"{self.flow.target.table} has no row {dict(zip(self.target.key, u.row, strict=False))}"
                            " yet; will retry"))
            else:
                outcome.skipped += len(missing)
        result = writer.merge(None, update_only=update_only, guard=self._lifecycle_guard())
        outcome.written += result.written
        outcome.conflicts += result.conflicts

    def _lifecycle_guard(self) -> sql.Composable | None:
        return lifecycle_guard(self.cdc.lifecycle) if self.cdc.lifecycle is not None else None

    def _log_events(self, conn: Conn, entries: Sequence[tuple[Sequence[Any], History]]) -> None:
        assert self.cdc.event_log is not None
        log_events(conn, self.flow, self.cdc.event_log, self.columns, self.target.key, entries,
                   self._target_types(conn))

    def _target_types(self, conn: Conn) -> dict[str, str]:
        if self._types is None:
            self._types = column_types(conn, self.flow.target.table)
        return self._types

    def truncate_target(self, conn: Conn) -> None:
        """The source table was truncated and this flow propagates it: empty the target table."""
        conn.execute(sql.SQL("DELETE FROM {}").format(table_ident(self.flow.target.table)))

    # ------------------------------------------------------------------ top-N partitions

    def partitions_of(self, events: Sequence[ChangeEvent]) -> set[Key]:
        """Every partition a batch touches (old and new values of the partition columns)."""
        top = self.cdc.top_n
        assert top is not None
        found: set[Key] = set()
        for event in events:
            for image in (event.before, event.after):
                if image is None:
                    continue
                if any(c not in image for c in top.partition_by):
                    raise SchemaMismatchError(
                        f"flow {self.name}: {event.table} sends key-only old rows, but top_n needs the "
                        f"partition columns of deleted and updated rows: ALTER TABLE {event.table} "
                        "REPLICA IDENTITY FULL")
                found.add(tuple(image[c] for c in top.partition_by))  # type: ignore[misc]
        return found

    def recompute(self, conn: Conn, source: Conn, partitions: set[Key], outcome: FlowOutcome) -> None:
        """Rebuild the target rows of ``partitions`` from the source's current rows."""
        top = self.cdc.top_n
        assert top is not None
        if not partitions:
            return
        if self._source_types is None:
            self._source_types = column_types(source, self.flow.source.table)
        types = [self._source_types[c] for c in top.partition_by]
        part_cols = sql.SQL(", ").join(sql.Identifier(c) for c in top.partition_by)
        # One typed array literal per partition column (COPY takes no parameters), not a literal per
        # value: the partition columns' indexes still serve the look-up.
        ordered = sorted(partitions, key=lambda p: tuple(str(v) for v in p))
        wanted = sql.SQL("SELECT * FROM unnest({})").format(sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Literal([p[i] for p in ordered]), sql.SQL(t)) for i, t in enumerate(types)))
        order = sql.SQL(", ").join(
            [*(sql.Identifier(c) for c in top.partition_by),
             *(sql.SQL("{} {}").format(sql.Identifier(o.column), sql.SQL("DESC" if o.desc else "ASC"))
               for o in top.order_by)])
        query = sql.SQL("SELECT {cols} FROM {table} WHERE ({pcols}) IN ({wanted}) ORDER BY {order}").format(
            cols=idents(self.transform.source_columns), table=table_ident(self.flow.source.table),
            pcols=part_cols, wanted=wanted, order=order)
        pidx = [self.transform.source_columns.index(c) for c in top.partition_by]
        ranked: list[list[Any]] = []
        counts: dict[Key, int] = {}
        for src_row in stream_query(source, query):
            try:
                out = self.transform(src_row)
            except RowRejectedError as exc:
                key = self.transform.key_of(src_row)
                outcome.dead_letters.append(DeadLetter(self.name, key, "r", 0, exc.kind, str(exc)))
                continue
            if out is None:
                continue
            part = tuple(src_row[i] for i in pidx)
            counts[part] = counts.get(part, 0) + 1
            if counts[part] <= top.n:
                ranked.append([*out, str(counts[part])])
        writer = MergeWriter(conn, self.name, self.flow, self.target, self.columns)
        writer.create_stage()
        writer.stage_rows(ranked)
        tpart = sql.SQL(", ").join(sql.Identifier("t", c) for c in top.target_partition)
        cur = conn.execute(sql.SQL(
            "DELETE FROM {table} t WHERE ({tpart}) IN ({wanted})"
            " AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {match})").format(
            table=table_ident(self.flow.target.table), tpart=tpart, wanted=wanted, stage=writer.stage,
            match=sql.SQL(" AND ").join(sql.SQL("s.{k} = t.{k}").format(k=sql.Identifier(k))
                                        for k in self.target.key)))
        outcome.deleted += max(cur.rowcount, 0)
        outcome.written += writer.merge(None).written


_Item = tuple[str, Any, Callable[[Any], Sequence[Any]], dict[str, str | None], int, str,
              dict[str, str | None] | None]
"""(op, new image or tuple, reads the source columns out of it, source key, commit LSN, table, the
old source key of an update that changed it)"""


def _reader(fields: Sequence[Any]) -> Callable[[Any], Sequence[Any]]:
    """Picks ``fields`` (names of an image, or positions of a tuple) out of a row, in that order."""
    if len(fields) == 1:
        (only,) = fields
        return lambda values: (values[only],)
    if not fields:
        return lambda values: ()
    return itemgetter(*fields)


def _sources_of(flow: Flow, column: str) -> set[str]:
    spec = flow.columns[column]
    if spec.from_ is not None:
        return {spec.from_}
    if spec.template is not None:
        return set(template_fields(spec.template))
    return set()
