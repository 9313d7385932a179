"""What the flow derives from the source *now*, through the flow's own code: the authority.

Plain flows send source rows through the flow's :class:`~civicsync.transform.chain.RowTransform`;
top-N flows rank each partition's transformed rows as the event path does (rows ordered by the
partition and the flow's ``order_by``, refused rows taking no rank); aggregate flows run the batch
path's own aggregate query. When several source rows derive one key under a forward-only lifecycle,
they are folded in source-key order (the order the event path's commits are taken to follow) with the
apply path's own :func:`~civicsync.apply.cdc_rules.supersedes`: the row the event path ends at,
whatever its batching. Rows are read for a set of units (keys, partitions or days) or, for the
full method, all of them, streamed so memory stays flat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import sql

from civicsync.apply.cdc_rules import supersedes
from civicsync.config import LoadedConfig
from civicsync.config.models import Lifecycle
from civicsync.errors import RowRejectedError
from civicsync.extract.source import stream_query
from civicsync.reconcile.plan import Key, Plan
from civicsync.sqlnames import idents, table_ident
from civicsync.transform.aggregate import aggregate_query, output_columns
from civicsync.transform.chain import build_transform
from civicsync.transform.columns import compile_column

Conn = psycopg.Connection[tuple[Any, ...]]
UNITS_PER_QUERY = 1_000


def values_of(rows: Sequence[Key], types: Sequence[str]) -> sql.Composable:
    """``VALUES (…), …`` of text values cast to ``types`` (for ``(columns) IN (VALUES …)``)."""
    return sql.SQL("VALUES {}").format(sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(t)) for v, t in zip(row, types, strict=True)))
        for row in rows))


@dataclass
class Derived:
    """Counts and refusals gathered while the derived rows stream."""

    source_rows: int = 0
    rejected: list[Key] = field(default_factory=list)


class Deriver:
    """Derives the flow's target rows (``plan.staged`` columns, then a sequence number) from the source."""

    def __init__(self, config: LoadedConfig, plan: Plan, source_types: Mapping[str, str],
                 window: sql.Composable | None, upper_day: str | None) -> None:
        self.plan = plan
        self.source_types = source_types
        self.window = window if window is not None else sql.SQL("true")
        self.upper_day = upper_day
        if plan.flow.aggregate is not None:
            names = output_columns(plan.flow.aggregate)
            self._index = [names.index(c) for c in plan.staged]
            return
        self.transform = build_transform(plan.flow, plan.source, config.secrets, run_time="", dsn=config.dsn)
        targets = self.transform.target_columns
        # The rank column of a top-N flow comes last, after the transformed columns.
        self._index = [targets.index(c) if c in targets else len(targets) for c in plan.staged]
        positions = {c: i for i, c in enumerate(self.transform.source_columns)}
        self._key_fns = [compile_column(k, plan.flow.columns[k], positions, config.secrets, "")
                         for k in plan.key if k in plan.flow.columns]
        lifecycle = plan.flow.cdc.lifecycle if plan.flow.cdc and plan.multi_row else None
        self._fold = None if lifecycle is None else _Fold(
            lifecycle, [targets.index(k) for k in plan.key], targets.index(lifecycle.column))

    def rows(self, src: Conn, units: Sequence[Key] | None, out: Derived) -> Iterator[list[str | None]]:
        """The derived rows of ``units`` (None: everything), read from ``src`` now."""
        if self.plan.unit == "day":
            yield from self._aggregates(src, units, out)
            return
        if units is None:
            yield from self._derive(src, None, out)
            return
        for i in range(0, len(units), UNITS_PER_QUERY):
            yield from self._derive(src, units[i:i + UNITS_PER_QUERY], out)

    # ------------------------------------------------------------------ chain flows

    def _query(self, units: Sequence[Key] | None) -> sql.Composable:
        cols = self.transform.source_columns
        where = self.window
        if units is not None:
            lookup = [self.plan.source_of[c] for c in self.plan.lookup]
            where = sql.SQL("{} AND ({}) IN ({})").format(
                where, idents(lookup, prefix="s"), values_of(units, [self.source_types[c] for c in lookup]))
        top = self.plan.flow.cdc.top_n if self.plan.flow.cdc else None
        order = [sql.Identifier("s", c) for c in self.plan.source.key] if top is None else [
            *(sql.Identifier("s", p) for p in top.partition_by),
            *(sql.SQL("s.{} {}").format(sql.Identifier(o.column), sql.SQL("DESC" if o.desc else "ASC"))
              for o in top.order_by)]
        return sql.SQL("SELECT {} FROM {} s WHERE {} ORDER BY {}").format(
            idents(cols, prefix="s"), table_ident(self.plan.flow.source.table), where, sql.SQL(", ").join(order))

    def _derive(self, src: Conn, units: Sequence[Key] | None, out: Derived) -> Iterator[list[str | None]]:
        if self._fold is None:
            yield from self._chain(src, units, out)
            return
        # Units are read whole per query (by their lookup columns), so no key's rows span two folds.
        ends: dict[Key, tuple[str | None, list[str | None]]] = {}
        for values, row in self._chain(src, units, out, raw=True):
            self._fold.step(ends, values, row)
        for _, row in ends.values():
            yield row

    def _chain(self, src: Conn, units: Sequence[Key] | None, out: Derived, raw: bool = False) -> Iterator[Any]:
        """The derived rows in source order (with ``raw``: each with the chain's full output row)."""
        top = self.plan.flow.cdc.top_n if self.plan.flow.cdc else None
        partition = [self.transform.source_columns.index(p) for p in top.partition_by] if top else []
        ranks: dict[tuple[str | None, ...], int] = {}
        for row in stream_query(src, self._query(units)):
            out.source_rows += 1
            try:
                derived = self.transform(row)
            except RowRejectedError:
                self._refused(row, out)
                continue
            if derived is None:
                continue
            values: list[str | None] = list(derived)
            if top is not None:
                part = tuple(row[i] for i in partition)
                ranks[part] = rank = ranks.get(part, 0) + 1
                if rank > top.n:
                    continue
                values.append(str(rank))
            staged = [*(values[i] for i in self._index), str(out.source_rows)]
            yield (values, staged) if raw else staged

    def _refused(self, row: Sequence[str | None], out: Derived) -> None:
        """Note the target key of a row the chain refuses (if the key itself can be derived)."""
        # If not even its key can be derived, the dead letters have it (by source key).
        with contextlib.suppress(RowRejectedError):
            out.rejected.append(tuple(fn(row) for fn in self._key_fns))

    # ------------------------------------------------------------------ aggregates

    def _aggregates(self, src: Conn, days: Sequence[Key] | None, out: Derived) -> Iterator[list[str | None]]:
        assert self.upper_day is not None
        windows = [(None, self.upper_day)] if days is None else [
            (str(d[0]), (date.fromisoformat(str(d[0])) + timedelta(days=1)).isoformat())
            for d in days if d[0] is not None and str(d[0]) < self.upper_day]
        for lower, upper in windows:
            for row in stream_query(src, aggregate_query(self.plan.flow, lower, upper)):
                out.source_rows += 1
                yield [*(row[i] for i in self._index), str(out.source_rows)]


class _Fold:
    """Several source rows of one key under a forward-only lifecycle: each row in turn replaces the
    key's current one when the apply path's rule says its status supersedes (the first one always
    does), exactly as the event path applies them one commit at a time."""

    def __init__(self, lifecycle: Lifecycle, key: Sequence[int], status: int) -> None:
        self.lifecycle, self.ranks = lifecycle, lifecycle.ranks()
        self.key, self.status = list(key), status

    def step(self, ends: dict[Key, tuple[str | None, list[str | None]]], values: Sequence[str | None],
             row: list[str | None]) -> None:
        """Fold one derived row (``values``: the chain's output, ``row``: the staged row) into ``ends``."""
        key = tuple(values[i] for i in self.key)
        held = ends.get(key)
        if held is None or supersedes(self.lifecycle, self.ranks, held[0], values[self.status]):
            ends[key] = (values[self.status], row)
