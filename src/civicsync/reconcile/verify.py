"""The verify phase: decide candidate units with the flow's own code and the flow's own rules.

The source rows of the units are read now and derived through the Python chain (the authority, see
:mod:`civicsync.reconcile.derive`), copied into a temporary table of the target's column types inside
the target database, and compared there with the target's rows by key, in SQL, with the decisions the
apply path itself makes:

- ``exact`` columns differ when ``IS DISTINCT FROM`` (typed, as the merge's own no-op guard);
- ``newest_wins`` columns (``base``) differ only when the merge would write the source value: the
  same three-way test as :class:`~civicsync.apply.conflicts.ConflictResolver`, against the same
  ``civicsync.field_base`` hashes and version columns;
- the version column differs when the target's is older (the merge keeps the greater);
- ``target_wins`` columns differ when the target's is NULL and the source's is not;
- a forward-only lifecycle gates the whole row with the event path's own guard
  (:func:`~civicsync.apply.cdc_rules.lifecycle_guard`): the row differs only if the derived row (the
  fold of the key's source rows, see :mod:`~civicsync.reconcile.derive`) would replace the target's,
  i.e. the target's status is not final and the derived stage is the same or a later one. A target
  legitimately ahead (or final) is not a difference; one left behind within a stage is.

Missing and extra rows are then kept or dropped by the plan's policies. Only keys and column names
leave this module, never values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from civicsync.apply.cdc_rules import lifecycle_guard
from civicsync.config.models import SetValues
from civicsync.reconcile.derive import UNITS_PER_QUERY, Derived, Deriver, values_of
from civicsync.reconcile.plan import Compared, Key, Plan
from civicsync.sqlnames import idents, table_ident

Conn = psycopg.Connection[tuple[Any, ...]]
STAGE = sql.Identifier("civicsync_rc_stage")
UNITS = sql.Identifier("civicsync_rc_units")
SEQ = "civicsync_seq"
MAX_KEPT = 100_000  # differences held (and stored, and repaired) per run; the counts stay exact


@dataclass(frozen=True)
class Difference:
    """One key that differs: its class, the differing columns, and fingerprints of the derived row and
    of the target's row (the same difference seen twice with the same rows on both sides has settled;
    if either row moved in between, it was still in flight)."""

    kind: str
    key: Key
    columns: tuple[str, ...] = ()
    fingerprint: tuple[int | None, int | None] = (None, None)


@dataclass
class Verdict:
    """What one verify round found."""

    differences: list[Difference] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    source_rows: int = 0
    target_rows: int = 0
    lsn: int = 0  # the source's WAL position when it was read
    moved: set[Key] = field(default_factory=set)  # units whose source rows changed while they were compared


class Verifier:
    """Compares derived rows with the target's, key by key, in the target database."""

    def __init__(self, plan: Plan, deriver: Deriver, layout: Sequence[str], upper_day: str | None) -> None:
        self.plan = plan
        self.deriver = deriver
        self.layout = list(layout)
        self.upper_day = upper_day

    def verify(self, src: Conn, tgt: Conn, units: Sequence[Key] | None,
               wait: Callable[[int], None] | None = None) -> Verdict:
        """Derive ``units`` (None: everything) from the source now and compare them with the target.
        ``wait(lsn)`` runs between the two reads (to let the event path apply what the source had)."""
        derived = Derived()
        verdict = Verdict()
        versioned = wait is not None and units is not None and self.plan.unit != "day"
        try:
            with _read_only(src):
                self._stage(tgt, units, self.deriver.rows(src, units, derived))
                # Read after the snapshot's rows: every commit they show lies before this WAL position.
                row = src.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
                verdict.lsn = int(row[0]) if row else 0
                before = self._versions(src, units) if versioned and units else {}
            if wait is not None:
                wait(verdict.lsn)
            verdict.source_rows = derived.source_rows
            rejected = set(derived.rejected)
            for key in sorted(rejected, key=str):
                self._keep(verdict, Difference("rejected", key))
            for diff in self._classify(tgt, units is not None):
                if diff.key not in rejected:
                    self._keep(verdict, diff)
            if units is None:
                verdict.target_rows = self._count_target(tgt)
            if versioned and verdict.differences:
                # Read the source again after the target: a unit whose rows moved since the first read may
                # have been compared with a target that already holds (or no longer holds) the change.
                touched = sorted({self.plan.unit_of(d.key) for d in verdict.differences}, key=str)
                after = self._versions(src, touched)
                verdict.moved = {u for u in touched if before.get(u) != after.get(u)}
        finally:
            tgt.rollback()  # the temporary tables go with it; nothing else was written
        return verdict

    def _versions(self, src: Conn, units: Sequence[Key]) -> dict[Key, str]:
        """unit → the row versions (xmin) of its source rows, whatever the filters say."""
        lookup = [self.plan.source_of[c] for c in self.plan.lookup]
        types = [self.deriver.source_types[c] for c in lookup]
        found: dict[Key, str] = {}
        for i in range(0, len(units), UNITS_PER_QUERY):
            for *unit, versions in src.execute(sql.SQL(
                    "SELECT {texts}, string_agg(s.xmin::text, ',' ORDER BY s.xmin::text) FROM {table} s"
                    " WHERE ({cols}) IN ({values}) GROUP BY {cols}").format(
                    texts=sql.SQL(", ").join(sql.SQL("s.{}::text").format(sql.Identifier(c)) for c in lookup),
                    cols=idents(lookup, prefix="s"), table=table_ident(self.plan.flow.source.table),
                    values=values_of(units[i:i + UNITS_PER_QUERY], types))):
                found[tuple(None if v is None else str(v) for v in unit)] = str(versions)
        return found

    @staticmethod
    def _keep(verdict: Verdict, diff: Difference) -> None:
        verdict.counts[diff.kind] = verdict.counts.get(diff.kind, 0) + 1
        if len(verdict.differences) < MAX_KEPT:
            verdict.differences.append(diff)

    # ------------------------------------------------------------------ staging

    def _stage(self, tgt: Conn, units: Sequence[Key] | None, rows: Iterator[list[str | None]]) -> None:
        table = table_ident(self.plan.flow.target.table)
        tgt.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            STAGE, idents(self.plan.staged), table))
        tgt.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint").format(STAGE, sql.Identifier(SEQ)))
        _copy(tgt, STAGE, [*self.plan.staged, SEQ], rows)
        if units is not None:
            tgt.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                UNITS, idents(self.plan.lookup), table))
            _copy(tgt, UNITS, self.plan.lookup, iter(units))
        tgt.execute(sql.SQL("ANALYZE {}").format(STAGE))

    def _count_target(self, tgt: Conn) -> int:
        row = tgt.execute(sql.SQL("SELECT count(*) FROM {} t0 WHERE {}").format(
            table_ident(self.plan.flow.target.table), self._restriction(False))).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ comparing

    def _classify(self, tgt: Conn, restricted: bool) -> Iterator[Difference]:
        n = len(self.plan.key)
        with tgt.cursor(name="civicsync_rc_classify") as cur:
            cur.itersize = 10_000
            for row in cur.execute(self._query(restricted)):
                key, (kind, columns, derived, held, expected) = tuple(row[:n]), row[n:]
                if self._counts(kind, bool(expected)):
                    yield Difference(kind, key, tuple(columns), (derived, held))

    def _counts(self, kind: str, expected: bool) -> bool:
        """Does this class of difference count under the flow's rules?"""
        if kind == "missing":
            return self.plan.missing != "ignored"
        if kind == "extra":
            return self.plan.extras == "difference" or (self.plan.extras == "unless_set" and not expected)
        return True

    def _query(self, restricted: bool) -> sql.Composed:
        plan = self.plan
        k0 = sql.Identifier(plan.key[0])
        join = ("JOIN" if plan.missing == "ignored" else "LEFT JOIN") if plan.extras == "ignored" else "FULL JOIN"
        keys = sql.SQL(", ").join(sql.SQL("coalesce(s.{k}::text, t.{k}::text)").format(k=sql.Identifier(k))
                                  for k in plan.key)
        kind = sql.SQL("CASE WHEN t.{k} IS NULL THEN 'missing' WHEN s.{k} IS NULL THEN 'extra' ELSE 'different' END"
                       ).format(k=k0)
        differs = [(c.column, self._differs(c)) for c in plan.compared]
        columns = sql.SQL("CASE WHEN s.{k} IS NULL OR t.{k} IS NULL THEN '{{}}'::text[] ELSE {a} END").format(
            k=k0, a=sql.SQL("array_remove(ARRAY[{}]::text[], NULL)").format(sql.SQL(", ").join(
                sql.SQL("CASE WHEN {} THEN {} END").format(d, sql.Literal(c)) for c, d in differs))
            if differs else sql.SQL("'{}'::text[]"))
        any_differs = sql.SQL(" OR ").join(d for _, d in differs) if differs else sql.SQL("false")
        fingerprint = sql.SQL(", ").join(
            sql.SQL("CASE WHEN {a}.{k} IS NULL THEN NULL ELSE hashtextextended(ROW({cols})::text, 0) END").format(
                a=sql.Identifier(alias), k=k0, cols=idents(plan.staged, prefix=alias)) for alias in ("s", "t"))
        return sql.SQL(
            "SELECT {keys}, {kind}, {columns}, {fingerprint}, {expected}"
            " FROM {stage} s {join} (SELECT t0.* FROM {target} t0 WHERE {restrict}) t ON {match}{base}"
            " WHERE s.{k0} IS NULL OR t.{k0} IS NULL OR ({gate} AND ({any}))").format(
            keys=keys, kind=kind, columns=columns, fingerprint=fingerprint, expected=self._expected_extra(),
            stage=self._stage_rows(), join=sql.SQL(join), target=table_ident(plan.flow.target.table),
            restrict=self._restriction(restricted), match=sql.SQL(" AND ").join(
                sql.SQL("s.{k} = t.{k}").format(k=sql.Identifier(k)) for k in plan.key),
            base=self._base_join(), k0=k0, gate=self._gate(), any=any_differs)

    def _stage_rows(self) -> sql.Composable:
        """The staged rows; when several source rows derive one key, the last read (a lifecycle's rows
        were already folded to one per key by the deriver)."""
        if not self.plan.multi_row:
            return STAGE
        keys = idents(self.plan.key)
        return sql.SQL("(SELECT DISTINCT ON ({keys}) * FROM {stage} ORDER BY {keys}, {seq} DESC)").format(
            keys=keys, stage=STAGE, seq=sql.Identifier(SEQ))

    def _restriction(self, restricted: bool) -> sql.Composable:
        parts: list[sql.Composable] = []
        if restricted:
            parts.append(sql.SQL("({}) IN (SELECT {} FROM {})").format(
                idents(self.plan.lookup, prefix="t0"), idents(self.plan.lookup), UNITS))
        if self.upper_day is not None:
            parts.append(sql.SQL("t0.{} < {}::date").format(sql.Identifier(self.plan.key[0]),
                                                            sql.Literal(self.upper_day)))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def _expected_extra(self) -> sql.Composable:
        on_missing = self.plan.flow.on_missing
        if not isinstance(on_missing, SetValues):
            return sql.SQL("false")
        return sql.SQL("({}) IS NOT DISTINCT FROM ({})").format(
            idents(on_missing.set, prefix="t"), sql.SQL(", ").join(sql.Literal(v) for v in on_missing.set.values()))

    # ------------------------------------------------------------------ the apply path's decisions

    def _differs(self, c: Compared) -> sql.Composable:
        t, s = sql.Identifier("t", c.column), sql.Identifier("s", c.column)
        if c.role == "version":
            return sql.SQL("coalesce({t} < {s}, {t} IS NULL AND {s} IS NOT NULL)").format(t=t, s=s)
        if c.role == "target_wins":
            return sql.SQL("({t} IS NULL AND {s} IS NOT NULL)").format(t=t, s=s)
        if c.role == "exact":
            return sql.SQL("({t} IS DISTINCT FROM {s})").format(t=t, s=s)
        return sql.SQL("({t} IS DISTINCT FROM {s} AND NOT coalesce({keeps}, false))").format(
            t=t, s=s, keeps=self._keeps_target(c.column))

    def _keeps_target(self, column: str) -> sql.Composable:
        """Would the three-way merge keep the target's value (ConflictResolver's rule)?"""
        version = self.plan.version
        assert version is not None
        t, s = sql.Identifier("t", column), sql.Identifier("s", column)
        newer = sql.SQL("coalesce(t.{v} > s.{v}, false)").format(v=sql.Identifier(version))
        without_base = sql.SQL("({} IS NOT NULL AND {})").format(t, newer)
        if column not in self.layout:
            return without_base
        base = sql.SQL("b.hashes[{}]").format(sql.Literal(self.layout.index(column) + 1))
        return sql.SQL("CASE WHEN b.hashes IS NOT NULL THEN hashtext({s}::text) IS NOT DISTINCT FROM {b}"
                       " OR (hashtext({t}::text) IS DISTINCT FROM {b} AND {newer}) ELSE {nb} END").format(
            s=s, t=t, b=base, newer=newer, nb=without_base)

    def _base_join(self) -> sql.Composable:
        if not any(c.role == "base" and c.column in self.layout for c in self.plan.compared):
            return sql.SQL("")
        key = self.plan.key
        row_key = (sql.SQL('t.{}::text COLLATE "C"').format(sql.Identifier(key[0])) if len(key) == 1 else
                   sql.SQL('jsonb_build_array({})::text COLLATE "C"').format(idents(key, prefix="t")))
        return sql.SQL(" LEFT JOIN civicsync.field_base b ON b.flow = {} AND b.row_key = {}").format(
            sql.Literal(self.plan.name), row_key)

    def _gate(self) -> sql.Composable:
        """A forward-only lifecycle writes a row only when the event path's guard lets it."""
        lifecycle = self.plan.flow.cdc.lifecycle if self.plan.flow.cdc else None
        return sql.SQL("true") if lifecycle is None else lifecycle_guard(lifecycle)


def _copy(conn: Conn, table: sql.Identifier, columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> None:
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, idents(columns))) as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _read_only(conn: Conn) -> Iterator[None]:
    """One REPEATABLE READ snapshot for a read (the source, in autocommit mode otherwise)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("ROLLBACK")
