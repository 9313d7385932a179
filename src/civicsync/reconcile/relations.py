"""The two relations a range checksum compares: the rows the flow derives, computed inside the source
database, and the target's rows, as the same columns of the same types, restricted to ranges of the
leading target key column.

Each relation yields the target key columns, then the compared columns a per-row hash can decide:
``exact`` columns as values and ``newest_wins`` columns as the int4 hash the three-way merge keeps
(``hashtext(value::text)``). On the source that hash is computed from the derived value; on the
target it is read from ``civicsync.field_base``: after every sync the base holds the hash of the source
value synced, whoever won, so "the source changed since the last sync" is exactly a mismatch, and a
portal edit alone (the target's own business) is not. Version and ``target_wins`` columns are left to
the verify phase (an inequality is not a hash). The source relation also carries a flag for rows the
chain would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from civicsync.reconcile.compile import Derivation
from civicsync.reconcile.plan import Plan
from civicsync.sqlnames import table_ident
from civicsync.transform.aggregate import aggregate_query, output_columns

REJECTED = "civicsync_rejected"


@dataclass(frozen=True)
class Range:
    """Leading-key values in [lo, hi), as text of the target column's type (None: unbounded)."""

    lo: str | None = None
    hi: str | None = None


class Relations:
    """SQL for both sides of a checksum, over any set of key ranges."""

    def __init__(self, plan: Plan, target_types: dict[str, str], collatable: bool,
                 derivation: Derivation | None, layout: Sequence[str], upper_day: str | None) -> None:
        self.plan = plan
        self.types = target_types
        self.derivation = derivation
        self.upper_day = upper_day
        self.lead = plan.key[0]
        self.lead_type = target_types[self.lead]
        self.collate = sql.SQL(' COLLATE "C"') if collatable else sql.SQL("")
        hashable = [c for c in plan.compared if c.role in ("exact", "base")]
        # A newest_wins field compares through its base only if the bases track it; else by value.
        self.base = {c.column: layout.index(c.column) + 1 for c in hashable if c.role == "base" and c.column in layout}
        self.columns = [*plan.key, *(c.column for c in hashable)]
        self.flagged = derivation is not None and derivation.rejected is not None
        self.names = [*self.columns, *([REJECTED] if self.flagged else [])]

    # ------------------------------------------------------------------ ranges

    def lead_of(self, alias: str) -> sql.Composable:
        """The leading key of a relation's row, collated as the ranges compare it."""
        return sql.SQL("{}{}").format(sql.Identifier(alias, self.lead), self.collate)

    def within(self, expr: sql.Composable, ranges: Sequence[Range] | None) -> sql.Composable:
        """``expr`` lies in one of ``ranges`` (None: no restriction)."""
        if ranges is None:
            return sql.SQL("true")
        parts = []
        for r in ranges:
            bounds = [sql.SQL("{}{} {} {}::{}").format(expr, self.collate, sql.SQL(op), sql.Literal(v),
                                                         sql.SQL(self.lead_type))
                      for op, v in ((">=", r.lo), ("<", r.hi)) if v is not None]
            parts.append(sql.SQL("({})").format(sql.SQL(" AND ").join(bounds)) if bounds else sql.SQL("true"))
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")

    # ------------------------------------------------------------------ target

    def target(self, ranges: Sequence[Range] | None) -> sql.Composable:
        """The target's rows in ``ranges``, as the hashed columns."""
        cols = [sql.SQL("t.{} AS {}").format(sql.Identifier(c), sql.Identifier(c)) if c not in self.base else
                sql.SQL("b.hashes[{}] AS {}").format(sql.Literal(self.base[c]), sql.Identifier(c))
                for c in self.columns]
        if self.flagged:
            cols.append(sql.SQL("false AS {}").format(sql.Identifier(REJECTED)))
        join: sql.Composable = sql.SQL("")
        if self.base:
            key = self.plan.key
            row_key = (sql.SQL('t.{}::text COLLATE "C"').format(sql.Identifier(key[0])) if len(key) == 1 else
                       sql.SQL('jsonb_build_array({})::text COLLATE "C"').format(
                           sql.SQL(", ").join(sql.Identifier("t", k) for k in key)))
            join = sql.SQL(" LEFT JOIN civicsync.field_base b ON b.flow = {} AND b.row_key = {}").format(
                sql.Literal(self.plan.name), row_key)
        where = self.within(sql.Identifier("t", self.lead), ranges)
        if self.upper_day is not None:
            where = sql.SQL("{} AND t.{} < {}::date").format(where, sql.Identifier(self.lead),
                                                            sql.Literal(self.upper_day))
        return sql.SQL("SELECT {} FROM {} t{} WHERE {}").format(
            sql.SQL(", ").join(cols), table_ident(self.plan.flow.target.table), join, where)

    # ------------------------------------------------------------------ source

    def source(self, ranges: Sequence[Range] | None) -> sql.Composable:
        """The rows the flow derives in ``ranges``, as the hashed columns."""
        cols = [sql.SQL("d.{}").format(sql.Identifier(c)) if c not in self.base else
                sql.SQL("hashtext(d.{}::text) AS {}").format(sql.Identifier(c), sql.Identifier(c))
                for c in self.names]
        if self.plan.unit == "day":
            return sql.SQL("SELECT {} FROM ({}) d").format(sql.SQL(", ").join(cols), self._aggregates(ranges))
        inner, outer = self._split(ranges)
        derived = self._top_n(inner) if self.plan.unit == "partition" else self._plain(inner)
        return sql.SQL("SELECT {} FROM ({}) d WHERE {}").format(sql.SQL(", ").join(cols), derived, outer)

    def _split(self, ranges: Sequence[Range] | None) -> tuple[sql.Composable, sql.Composable]:
        """Range conditions inside the derivation (on the source column, so its index serves) when the
        leading key is a same-typed copy of a source column, else on the derived value."""
        assert self.derivation is not None
        src = self.plan.source_of.get(self.lead)
        top = self.plan.flow.cdc.top_n if self.plan.flow.cdc else None
        if top is not None and self.lead not in top.partition_by:
            src = None  # a range must not cut a partition before it is ranked
        if src is not None and self.derivation.columns.get(self.lead) == sql.Identifier("s", src):
            return self.within(sql.Identifier("s", src), ranges), sql.SQL("true")
        return sql.SQL("true"), self.within(sql.Identifier("d", self.lead), ranges)

    def _select_list(self) -> sql.Composable:
        assert self.derivation is not None
        cols = [sql.SQL("{} AS {}").format(self.derivation.columns[c], sql.Identifier(c))
                for c in self.plan.staged if c in self.derivation.columns]
        return sql.SQL(", ").join(cols)

    def _plain(self, inner: sql.Composable) -> sql.Composable:
        assert self.derivation is not None
        flag = sql.SQL(", {} AS {}").format(self.derivation.rejected, sql.Identifier(REJECTED)) \
            if self.derivation.rejected is not None else sql.SQL("")
        return sql.SQL("SELECT {}{} FROM {} s WHERE {} AND {}").format(
            self._select_list(), flag, table_ident(self.plan.flow.source.table), self.derivation.where, inner)

    def _top_n(self, inner: sql.Composable) -> sql.Composable:
        """The first n rows per partition, ranked as the event path ranks them (refused rows take no rank)."""
        assert self.derivation is not None and self.plan.flow.cdc is not None
        top = self.plan.flow.cdc.top_n
        assert top is not None
        order = sql.SQL(", ").join(sql.SQL("s.{} {}").format(sql.Identifier(o.column),
                                                            sql.SQL("DESC" if o.desc else "ASC"))
                                   for o in top.order_by)
        refused = sql.SQL("NOT ({})").format(self.derivation.rejected) if self.derivation.rejected else sql.SQL("true")
        flag = sql.SQL(", false AS {}").format(sql.Identifier(REJECTED)) if self.flagged else sql.SQL("")
        ranked = sql.SQL(
            "SELECT {cols}, (row_number() OVER (PARTITION BY {part} ORDER BY {order}))::{rtype} AS {rank}{flag}"
            " FROM {table} s WHERE {where} AND {refused} AND {inner}").format(
            cols=self._select_list(), part=sql.SQL(", ").join(sql.Identifier("s", p) for p in top.partition_by),
            order=order, rtype=sql.SQL(self.types[top.rank_column]), rank=sql.Identifier(top.rank_column),
            flag=flag, table=table_ident(self.plan.flow.source.table), where=self.derivation.where,
            refused=refused, inner=inner)
        return sql.SQL("SELECT * FROM ({}) r WHERE r.{} <= {}").format(
            ranked, sql.Identifier(top.rank_column), sql.Literal(top.n))

    def _aggregates(self, ranges: Sequence[Range] | None) -> sql.Composable:
        """The batch path's own aggregate query, per range of days, cast to the target's types."""
        agg = self.plan.flow.aggregate
        assert agg is not None and self.upper_day is not None
        names = output_columns(agg)
        aliases = [sql.Identifier(f"c{i}") for i in range(len(names))]
        cast = sql.SQL(", ").join(sql.SQL("a.{}::{} AS {}").format(a, sql.SQL(self.types[n]), sql.Identifier(n))
                                  for a, n in zip(aliases, names, strict=True))
        parts = []
        for r in ranges if ranges is not None else [Range()]:
            upper = self.upper_day if r.hi is None else min(r.hi, self.upper_day)
            if r.lo is not None and r.lo >= upper:
                continue
            parts.append(sql.SQL("SELECT {} FROM ({}) a({})").format(
                cast, aggregate_query(self.plan.flow, r.lo, upper), sql.SQL(", ").join(aliases)))
        if not parts:  # every range lies past the window: an empty relation of the right shape
            return sql.SQL("SELECT * FROM ({}) e WHERE false").format(self._aggregates(None))
        return sql.SQL(" UNION ALL ").join(parts)
