"""COPY rows into a temporary stage table, validate them, then merge into the target in one statement.

The merge is one ``INSERT … ON CONFLICT (key) DO UPDATE`` whose SET clause is generated from the
flow's conflict policy (:mod:`civicsync.apply.conflicts` settles the staged rows first), with a
``WHERE … IS DISTINCT FROM`` guard so unchanged rows are not rewritten (re-runs write nothing,
and no WAL is produced for no-ops). Everything
happens inside the caller's transaction: the caller commits rows, conflicts, dead letters and the
flow's position together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from civicsync.apply.conflicts import ConflictResolver
from civicsync.config.models import Flow, SetValues, TableDecl
from civicsync.sqlnames import idents, table_ident, texts


@dataclass(frozen=True)
class MergeResult:
    """What one merge changed in the target."""

    written: int
    deleted: int
    conflicts: int


@dataclass(frozen=True)
class Scope:
    """Limits on_missing handling to target rows with ``column >= lower`` (aggregation windows)."""

    column: str
    lower: str | None


class MergeWriter:
    """Stages rows for one target table and merges them according to the flow's rules."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        flow_name: str,
        flow: Flow,
        target: TableDecl,
        columns: Sequence[str],
        *,
        write_columns: Sequence[str] | None = None,
        extra_stage_columns: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._conn = conn
        self._flow_name = flow_name
        self._flow = flow
        self._target = target
        self._table = table_ident(flow.target.table)
        self._columns = tuple(columns)
        # Staged columns that are not written (e.g. fields routed to change requests instead).
        self._write = tuple(write_columns) if write_columns is not None else self._columns
        self._extra = tuple(extra_stage_columns)
        self._key = tuple(target.key)
        # One stage per column set, reused within a transaction (emptied, not dropped and made
        # again): creating temp tables over and over bloats the catalog of a long transaction.
        digest = hashlib.md5(repr((flow.target.table, self._columns, self._extra)).encode()).hexdigest()[:12]
        self._stage = sql.Identifier(f"civicsync_stage_{digest}")
        self._direct = False
        self._staged = 0
        # Only fields carrying source data have owners; constants and run times are bookkeeping.
        governed = tuple(c for c in self._columns
                         if c in flow.columns and (flow.columns[c].from_ or flow.columns[c].template))
        self._resolver = None if flow.conflicts is None else ConflictResolver(
            conn, flow_name, flow.conflicts, self._table, self._key, governed, self._stage)

    # ------------------------------------------------------------------ staging

    def create_stage(self, *, direct_if_empty: bool = False) -> None:
        """A temp table with the target's column types (plus any extra columns), dropped at commit.

        ``direct_if_empty``: when the target table is empty (a first load), lock it and load into
        it directly instead: validation then reads the target's new rows, still inside the same
        transaction, and a refusal still rolls everything back. This skips writing every row twice.
        """
        if direct_if_empty and not self._extra and self._write == self._columns:
            self._conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self._table))
            row = self._conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(self._table)).fetchone()
            if row and row[0]:
                self._direct = True
                self._stage = self._table
                if self._resolver is not None:
                    self._resolver.direct_load(self._table)
                return
        row = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                 (f"pg_temp.{self._stage.as_string()}",)).fetchone()
        if row and row[0]:
            self._conn.execute(sql.SQL("DELETE FROM {}").format(self._stage))
            return
        self._conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                self._stage, idents(self._columns), self._table
            )
        )
        for name, sql_type in self._extra:
            self._conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                self._stage, sql.Identifier(name), sql.SQL(sql_type)))

    @property
    def stage(self) -> sql.Identifier:
        """The table the rows are staged in (the target itself when loading directly)."""
        return self._stage

    def stage_rows(self, rows: Iterable[Sequence[str | None]]) -> int:
        """Copy ``rows`` (staged columns, then extra columns) into the stage; returns how many."""
        n = 0
        names = [*self._columns, *(name for name, _ in self._extra)]
        with self._conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(self._stage, idents(names))
        ) as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
        self._staged += n
        return n

    # ------------------------------------------------------------------ validation

    def validate(self, *, scope: Scope | None = None) -> list[str]:
        """The reasons the staged data must not be committed (empty list: go ahead)."""
        rules = self._flow.validate_
        failures: list[str] = []
        staged = self._scalar(sql.SQL("SELECT count(*) FROM {}").format(self._stage))
        if staged < rules.min_rows:
            failures.append(f"{staged} rows staged, at least {rules.min_rows} required")
        # Loading directly, the target's primary key has already refused any repeated key.
        dupes = 0 if self._direct else self._scalar(
            sql.SQL("SELECT count(*) - count(DISTINCT ({})) FROM {}").format(idents(self._key), self._stage)
        )
        if dupes:
            failures.append(f"{dupes} staged rows repeat a key of {self._flow.target.table}")
        for ref in rules.references:
            orphans = self._scalar(
                sql.SQL("SELECT count(*) FROM {stage} s WHERE s.{col} IS NOT NULL AND NOT EXISTS "
                        "(SELECT 1 FROM {ref} r WHERE r.{rcol} = s.{col})").format(
                    stage=self._stage, col=sql.Identifier(ref.column), ref=table_ident(ref.table),
                    rcol=sql.Identifier(ref.ref_column))
            )
            if orphans:
                failures.append(f"{orphans} rows have a {ref.column} missing from {ref.table}.{ref.ref_column}")
        if rules.max_missing_ratio is not None and self._flow.on_missing != "keep" and not self._direct:
            failures += self._vanishing(rules.max_missing_ratio, scope)
        return failures

    def _vanishing(self, ratio: float, scope: Scope | None) -> list[str]:
        """Refuse when more than ``ratio`` of the target rows still live would newly vanish. A row that
        vanished in an earlier run (already in the on_missing state, e.g. CLOSED) is neither live nor
        new: counting it again would make the limit a lifetime budget that, once spent, stops the flow
        for good."""
        gone = self._already_gone_sql()
        live = self._scalar(sql.SQL("SELECT count(*) FROM {} t WHERE {} AND NOT ({} AND {})").format(
            self._table, self._scope_sql(scope), self._missing_sql(), gone))
        missing = self._scalar(sql.SQL("SELECT count(*) FROM {} t WHERE {} AND {} AND NOT {}").format(
            self._table, self._missing_sql(), self._scope_sql(scope), gone))
        if live and missing / live > ratio:
            return [f"{missing} of {live} live target rows are no longer in the source "
                    f"(newly vanishing in this run; more than {ratio:.0%} allowed)"]
        return []

    def _already_gone_sql(self) -> sql.Composable:
        """Is the target row ``t`` already in the on_missing state? (Deleted rows are not there at all.)"""
        on_missing = self._flow.on_missing
        if not isinstance(on_missing, SetValues):
            return sql.SQL("false")
        return sql.SQL("ROW({}) IS NOT DISTINCT FROM ROW({})").format(
            texts(sql.Identifier("t", c) for c in on_missing.set),
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Literal(_text(v))) for v in on_missing.set.values()))

    def _scalar(self, query: sql.Composed) -> int:
        row = self._conn.execute(query).fetchone()
        return int(str(row[0])) if row and row[0] is not None else 0

    # ------------------------------------------------------------------ merge

    def merge(self, run_id: int | None, *, scope: Scope | None = None, update_only: bool = False,
              guard: sql.Composable | None = None, handle_missing: bool = True) -> MergeResult:
        """Record conflicts, write the staged rows, then handle rows missing from the source.

        ``update_only`` never inserts (rows missing from the target are left to the caller, see
        :meth:`missing_in_target`); ``guard`` is an extra condition over ``t`` (target) and
        ``s`` (staged row) that an update must meet (e.g. a forward-only lifecycle)."""
        if self._direct:
            # The rows are in the target already, and it was empty: nothing to decide or remove.
            if self._resolver is not None:
                self._resolver.save_bases()
            return MergeResult(written=self._staged, deleted=0, conflicts=0)
        conflicts = self._resolver.resolve(run_id) if self._resolver else 0
        written = self._update(guard) if update_only else self._upsert()
        if self._resolver is not None:
            self._resolver.save_bases()
        # A partial load (a replay of some keys) says nothing about the rows it did not stage.
        deleted = self._apply_missing(scope) if handle_missing else 0
        return MergeResult(written=written, deleted=deleted, conflicts=conflicts)

    def missing_in_target(self) -> list[dict[str, object]]:
        """Staged keys the target does not have."""
        cur = self._conn.execute(sql.SQL(
            "SELECT {keys} FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})").format(
            keys=idents(self._key, prefix="s"), stage=self._stage, table=self._table, match=self._key_match("t", "s")))
        return [dict(zip(self._key, row, strict=True)) for row in cur.fetchall()]

    def delete_keys(self, keys: Iterable[Sequence[str | None]]) -> int:
        """Delete the target rows with these keys (values in key-column order)."""
        keys = list(keys)
        if not keys:
            return 0
        gone = sql.Identifier("civicsync_gone")
        self._conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(gone))
        self._conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            gone, idents(self._key), self._table))
        with self._conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(gone)) as copy:
            for key in keys:
                copy.write_row(key)
        cur = self._conn.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE {}").format(
            self._table, gone, self._key_match("t", "s")))
        return max(cur.rowcount, 0)

    def _key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in self._key
        )

    def _new_value(self, column: str, new: str = "excluded") -> sql.Composable:
        """The value a column gets on update (conflict decisions are already in the stage)."""
        if self._resolver is not None:
            return self._resolver.new_value(column, new)
        return sql.Identifier(new, column)

    def _compared(self, updatable: Sequence[str]) -> list[str]:
        # run_time columns (synced_at) change every run; they must not make a row look changed.
        volatile = {c for c, spec in self._flow.columns.items() if spec.run_time}
        return [c for c in updatable if c not in volatile] or list(updatable)

    def _update(self, guard: sql.Composable | None) -> int:
        updatable = [c for c in self._write if c not in self._key]
        if not updatable:
            return 0
        compared = self._compared(updatable)
        query = sql.SQL(
            "UPDATE {table} t SET ({cols}) = ROW({vals}) FROM {stage} s WHERE {match} AND {guard}"
            " AND ROW({old}) IS DISTINCT FROM ROW({new})").format(
            table=self._table, cols=idents(updatable), vals=sql.SQL(", ").join(
                self._new_value(c, "s") for c in updatable),
            stage=self._stage, match=self._key_match("t", "s"), guard=guard if guard is not None else sql.SQL("true"),
            old=texts(sql.Identifier("t", c) for c in compared),
            new=texts(self._new_value(c, "s") for c in compared))
        return max(self._conn.execute(query).rowcount, 0)

    def _overlaps_target(self) -> bool:
        """Does any staged key already exist in the target?"""
        if self._resolver is not None and self._resolver.existing >= 0:
            return self._resolver.existing > 0
        row = self._conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} t JOIN {} s ON {})").format(
            self._table, self._stage, self._key_match("t", "s"))).fetchone()
        return bool(row and row[0])

    def _upsert(self) -> int:
        updatable = [c for c in self._write if c not in self._key]
        if not self._overlaps_target():
            # A first load of these keys: a plain insert in key order is about twice as fast as
            # INSERT … ON CONFLICT (the flow's lock keeps other runs of it out meanwhile).
            cur = self._conn.execute(sql.SQL("INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ORDER BY {key}")
                                     .format(table=self._table, cols=idents(self._write), stage=self._stage,
                                             key=idents(self._key)))
            return max(cur.rowcount, 0)
        insert = sql.SQL("INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {stage} ").format(
            table=self._table, cols=idents(self._write), stage=self._stage)
        if not updatable:
            query = insert + sql.SQL("ON CONFLICT ({}) DO NOTHING").format(idents(self._key))
        else:
            compared = self._compared(updatable)
            query = insert + sql.SQL(
                "ON CONFLICT ({key}) DO UPDATE SET ({cols}) = ROW({vals}) WHERE ROW({old}) IS DISTINCT FROM ROW({new})"
            ).format(
                key=idents(self._key), cols=idents(updatable),
                vals=sql.SQL(", ").join(self._new_value(c) for c in updatable),
                old=texts(sql.Identifier("t", c) for c in compared),
                new=texts(self._new_value(c) for c in compared))
        cur = self._conn.execute(query)
        return max(cur.rowcount, 0)

    # ------------------------------------------------------------------ rows gone from the source

    def _missing_sql(self) -> sql.Composable:
        return sql.SQL("NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(self._stage, self._key_match("s", "t"))

    @staticmethod
    def _scope_sql(scope: Scope | None) -> sql.Composable:
        if scope is None or scope.lower is None:
            return sql.SQL("true")
        return sql.SQL("{} >= {}").format(sql.Identifier("t", scope.column), sql.Literal(scope.lower))

    def _apply_missing(self, scope: Scope | None) -> int:
        on_missing = self._flow.on_missing
        if on_missing == "keep":
            return 0
        where = sql.SQL("{} AND {}").format(self._missing_sql(), self._scope_sql(scope))
        if on_missing == "delete":
            query = sql.SQL("DELETE FROM {} t WHERE {}").format(self._table, where)
        else:
            assert isinstance(on_missing, SetValues)
            cols = list(on_missing.set)
            vals = sql.SQL(", ").join(sql.Literal(v) for v in on_missing.set.values())
            query = sql.SQL("UPDATE {} t SET ({}) = ROW({}) WHERE {} AND ({}) IS DISTINCT FROM ({})").format(
                self._table, idents(cols), vals, where, idents(cols, prefix="t"), vals)
        return max(self._conn.execute(query).rowcount, 0)


def _text(value: str | int | float | bool | None) -> str | None:
    """A config constant as PostgreSQL writes it (true/false, not Python's True/False)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)
