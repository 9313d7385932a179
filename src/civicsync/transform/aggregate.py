"""The aggregation rule kind: a declared GROUP BY, run inside the source database.

Only group values and aggregates leave the source, so identifiers used for counting (citizen_id,
session_id) never reach the target. Days are UTC days; a run covers complete days only.
"""

from __future__ import annotations

from psycopg import sql

from civicsync.config.models import Aggregate, Dimension, Flow
from civicsync.sqlnames import table_ident
from civicsync.transform.vocabulary import vocabulary_sql


def output_columns(agg: Aggregate) -> tuple[str, ...]:
    """Target columns produced, in query order: time bucket, dimensions, measures."""
    return (agg.time.target, *agg.dimensions, *agg.measures)


def _column(agg: Aggregate, ref: str) -> sql.Identifier:
    if "." in ref:
        alias, col = ref.split(".", 1)
        return sql.Identifier(alias, col)
    return sql.Identifier("s", ref)


def _measure(agg: Aggregate, name: str) -> sql.Composable:
    m = agg.measures[name]
    if m.fn == "count":
        return sql.SQL("count(*)")
    cols = [_column(agg, c) for c in m.columns]
    if m.fn == "count_distinct" and len(cols) > 1:
        # A composite key: distinct whole keys; like count(DISTINCT x), a key with a NULL part is no key.
        return sql.SQL("count(DISTINCT ROW({})) FILTER (WHERE {})").format(
            sql.SQL(", ").join(cols), sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols))
    if m.fn == "count_distinct":
        return sql.SQL("count(DISTINCT {})").format(cols[0])
    return sql.SQL("{}({})").format(sql.SQL(m.fn), cols[0])


def _dimension(agg: Aggregate, dim: Dimension) -> sql.Composable:
    """A grouping value: the column, NULL as the default, and, with a vocabulary, any value it does not
    declare as the vocabulary's default (free text never becomes a group)."""
    col: sql.Composable = _column(agg, dim.column)
    if dim.default is not None:
        col = sql.SQL("COALESCE({}::text, {})").format(col, sql.Literal(dim.default))
    if dim.vocabulary is not None:
        col = vocabulary_sql(col, dim.vocabulary)
    return col


def aggregate_query(flow: Flow, lower: str | None, upper: str) -> sql.Composable:
    """SELECT the aggregates of the days in [lower, upper) (lower None: from the beginning)."""
    agg = flow.aggregate
    assert agg is not None
    ts = sql.Identifier("s", agg.time.column)
    bucket = sql.SQL("({} AT TIME ZONE 'UTC')::date").format(ts)
    dims = [_dimension(agg, dim) for dim in agg.dimensions.values()]
    select = sql.SQL(", ").join([bucket, *dims, *(_measure(agg, m) for m in agg.measures)])
    source = sql.SQL("{} s").format(table_ident(flow.source.table))
    if agg.join is not None:
        match = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("s", a), sql.Identifier(agg.join.alias, b))
            for a, b in agg.join.match.items()
        )
        source = source + sql.SQL(" LEFT JOIN {} {} ON {}").format(
            table_ident(agg.join.table), sql.Identifier(agg.join.alias), match)
    window = sql.SQL("{} < ({}::date AT TIME ZONE 'UTC')").format(ts, sql.Literal(upper))
    if lower is not None:
        window = sql.SQL("{} >= ({}::date AT TIME ZONE 'UTC') AND {}").format(ts, sql.Literal(lower), window)
    groups = sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(dims) + 2))
    return sql.SQL("SELECT {} FROM {} WHERE {} GROUP BY {}").format(select, source, window, groups)
