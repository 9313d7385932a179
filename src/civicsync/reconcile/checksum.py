"""The checksum phase: find the few keys worth a closer look, reading each table about once.

Each side runs in its own REPEATABLE READ snapshot, both at the same time (one thread each). The key
space is cut into ranges of the leading target key column at quantiles sampled from the target
(``TABLESAMPLE``); ``width_bucket(key, boundaries)`` puts each row in its range, which works for any
ordered type. One aggregate scan per side yields ``count(*)`` and ``sum(hashtextextended(ROW(…)::text,
0))`` per range; equal tables end here. A range that disagrees is split again at quantiles of its own
rows (an index range scan) while it is large, and once small, both sides' ``(key, row hash)`` pairs are
fetched and compared: keys on one side only, or with different hashes, are the candidates. The
verify phase then decides each candidate through the Python chain, so a hash collision can hide a
difference (2⁻⁶⁴ per row) but never invent one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from civicsync.db.errors import mapped_errors
from civicsync.reconcile.plan import Key
from civicsync.reconcile.relations import Range
from civicsync.sqlnames import table_ident

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

ROWS_PER_RANGE = 1_000      # first cut: about this many target rows per range
MAX_RANGES = 4_096
LEAF_ROWS = 5_000           # a disagreeing range this small is compared key by key
FETCH_ROWS = 50_000         # key-by-key comparison: rows per query
SAMPLE_ROWS = 50_000        # quantiles of a big table come from a sample of about this many rows
TOO_DIFFERENT = 0.3         # past this share of disagreeing rows, comparing everything is cheaper


class TooDifferent(Exception):
    """So much differs that a key-by-key comparison of everything is the cheaper way."""


@dataclass
class Side:
    """One database in its own snapshot, producing the checksums of one relation."""

    conn: Conn
    relation: Callable[[Sequence[Range] | None], sql.Composable]
    columns: Sequence[str]   # what the row hash covers, in order (the key columns first)
    key: Sequence[str]
    lead: sql.Composable
    lead_type: str
    what: str

    def _row_hash(self) -> sql.Composable:
        return sql.SQL("hashtextextended(ROW({})::text, 0)").format(
            sql.SQL(", ").join(sql.Identifier("d", c) for c in self.columns))

    def checksums(self, bounds: Sequence[str], within: Range | None) -> dict[int, tuple[int, int]]:
        """count and hash sum per range (bucket number → (count, sum))."""
        bucket = sql.SQL("width_bucket({}, {}::text[]::{}[])").format(
            self.lead, sql.Literal(list(bounds)), sql.SQL(self.lead_type)) if bounds else sql.SQL("0")
        query = sql.SQL("SELECT {}, count(*), coalesce(sum({}), 0) FROM ({}) d GROUP BY 1").format(
            bucket, self._row_hash(), self.relation(None if within is None else [within]))
        with mapped_errors(self.what):
            return {int(b): (int(n), int(s)) for b, n, s in self.conn.execute(query)}

    def quantiles(self, within: Range | None, pieces: int) -> list[str]:
        """Boundaries cutting this side's rows in ``within`` into about ``pieces`` ranges."""
        query = sql.SQL("SELECT percentile_disc({}::float8[]) WITHIN GROUP (ORDER BY {})::text[] FROM ({}) d").format(
            sql.Literal(_fractions(pieces)), self.lead, self.relation(None if within is None else [within]))
        with mapped_errors(self.what):
            row = self.conn.execute(query).fetchone()
        return _distinct(row[0] if row and row[0] else [], within)

    def hashes(self, ranges: Sequence[Range]) -> dict[Key, int | None]:
        """key (as text) → row hash, for every row in ``ranges``; a key seen twice maps to None."""
        keys = sql.SQL(", ").join(sql.SQL("d.{}::text").format(sql.Identifier(c)) for c in self.key)
        query = sql.SQL("SELECT {}, {} FROM ({}) d").format(keys, self._row_hash(), self.relation(ranges))
        found: dict[Key, int | None] = {}
        with mapped_errors(self.what), self.conn.cursor() as cur:
            for *key, h in cur.execute(query):
                k = tuple(key)
                found[k] = None if k in found else int(h)
        return found


def sample_bounds(conn: Conn, table: str, lead: str, collate: sql.Composable, what: str) -> list[str]:
    """Boundaries cutting a table into ranges of about ROWS_PER_RANGE rows: quantiles of its leading key
    column, from a block sample when the table is big (its size is the planner's estimate)."""
    with mapped_errors(what):
        row = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                           (table,)).fetchone()
        estimate = int(row[0]) if row and row[0] is not None else -1
        # Never analyzed (-1): a guess; ranges that turn out big are split when they disagree.
        pieces = 64 if estimate < 0 else max(1, min(MAX_RANGES, estimate // ROWS_PER_RANGE))
        sample: sql.Composable = sql.SQL("")
        if estimate > 2 * SAMPLE_ROWS:
            sample = sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(round(100 * SAMPLE_ROWS / estimate, 4)))
        query = sql.SQL("SELECT percentile_disc({}::float8[]) WITHIN GROUP (ORDER BY t.{}{})::text[]"
                        " FROM {} t{}").format(sql.Literal(_fractions(pieces)), sql.Identifier(lead), collate,
                                               table_ident(table), sample)
        row = conn.execute(query).fetchone()
    return _distinct(row[0] if row and row[0] else [], None)


def _fractions(pieces: int) -> list[float]:
    return [i / pieces for i in range(1, max(pieces, 1))]


def _distinct(values: Sequence[str], within: Range | None) -> list[str]:
    """Sorted boundaries without repeats, and none at the range's own lower end."""
    out: list[str] = []
    for v in values:
        if v is not None and (not out or v != out[-1]) and (within is None or v != within.lo):
            out.append(v)
    return out


def ranges_of(bounds: Sequence[str], within: Range | None) -> Callable[[int], Range]:
    """Bucket number (as width_bucket numbers them) → the range it covers, inside ``within``."""
    outer = within or Range()

    def of(bucket: int) -> Range:
        lo = outer.lo if bucket == 0 else bounds[bucket - 1]
        hi = outer.hi if bucket >= len(bounds) else bounds[bucket]
        return Range(lo, hi)

    return of


@dataclass
class Outcome:
    """What the checksum phase found."""

    source_rows: int = 0
    target_rows: int = 0
    ranges: int = 0
    candidates: set[Key] = field(default_factory=set)


class Comparison:
    """Drives both sides through the phase; every step runs on both databases at once."""

    def __init__(self, source: Side, target: Side,
                 progress: Callable[[str, int, int | None], None] | None = None) -> None:
        self.source, self.target = source, target
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="reconcile")
        self.progress = progress or (lambda phase, done, total: None)

    def _both(self, fn: Callable[..., T], *args: Any) -> tuple[T, T]:
        a = self.pool.submit(fn, self.source, *args)
        b = self.pool.submit(fn, self.target, *args)
        return a.result(), b.result()

    def run(self, bounds: list[str]) -> Outcome:
        """Compare everything; raises TooDifferent when checking key by key would cost more."""
        try:
            return self._run(bounds)
        finally:
            self.pool.shutdown()

    def _run(self, bounds: list[str]) -> Outcome:
        src, tgt = self._both(Side.checksums, bounds, None)
        out = Outcome(sum(n for n, _ in src.values()), sum(n for n, _ in tgt.values()), len(bounds) + 1)
        self.progress("checksum", 1, 1)
        pending = _disagreeing(src, tgt, ranges_of(bounds, None))
        differing = sum(size for _, size in pending)
        total = max(out.source_rows, out.target_rows)
        if total > 10 * LEAF_ROWS and differing > TOO_DIFFERENT * total:
            raise TooDifferent(f"{differing:,} of {total:,} rows lie in ranges that disagree")
        while pending:
            small = [r for r, size in pending if size <= LEAF_ROWS]
            big = [(r, size) for r, size in pending if size > LEAF_ROWS]
            self._compare_keys(small, out)
            pending = []
            for r, size in big:
                pending += self._split(r, size, out)
        return out

    def _split(self, r: Range, size: int, out: Outcome) -> list[tuple[Range, int]]:
        """Cut a big disagreeing range at its own quantiles and keep the parts that disagree."""
        # Parts small enough to compare key by key next time.
        pieces = min(MAX_RANGES, math.ceil(size / LEAF_ROWS))
        bounds = self.target.quantiles(r, pieces) or self.source.quantiles(r, pieces)
        if not bounds:
            self._compare_keys([r], out)  # one key value holds all of it: nothing to split on
            return []
        src, tgt = self._both(Side.checksums, bounds, r)
        out.ranges += len(bounds) + 1
        return _disagreeing(src, tgt, ranges_of(bounds, r))

    def _compare_keys(self, ranges: list[Range], out: Outcome) -> None:
        for chunk in _chunks(ranges, max(1, FETCH_ROWS // LEAF_ROWS)):
            src, tgt = self._both(Side.hashes, chunk)
            for key in src.keys() | tgt.keys():
                h = src.get(key)
                if h is None or h != tgt.get(key):
                    out.candidates.add(key)
            self.progress("drill-down", len(out.candidates), None)


def _disagreeing(src: dict[int, tuple[int, int]], tgt: dict[int, tuple[int, int]],
                 range_of: Callable[[int], Range]) -> list[tuple[Range, int]]:
    return [(range_of(b), max(src.get(b, (0, 0))[0], tgt.get(b, (0, 0))[0]))
            for b in sorted(src.keys() | tgt.keys()) if src.get(b) != tgt.get(b)]


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@contextmanager
def snapshot(conn: Conn) -> Iterator[Conn]:
    """A REPEATABLE READ, READ ONLY transaction for the whole phase, ended (rolled back) after it."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.execute("ROLLBACK")
