"""A flow's rules compiled to SQL over its source table, so the source side of a comparison is derived
inside the source database instead of being shipped out.

The Python chain (:mod:`civicsync.transform.chain`) stays the one definition of what a flow derives;
this module mirrors it rule by rule, and ``tests/test_reconcile_compile.py`` checks with generated
values that both give the same target value for every rule compiled here. Every expression first
computes what the chain computes, on PostgreSQL's *text* of the source value (what the chain is fed),
and is cast to the target column's type last, which is what loading the chain's text output into
the target does. Text comparisons use the "C" collation (code point order, as Python compares).

Compiled: plain columns, constants (evaluated by the chain itself), templates without format specs,
value maps with or without default, the filters, ``required`` columns, and the masks ``keep_last``,
``band`` (on a numeric source column), ``drop``, ``vocabulary`` and, only with ``reconcile.hmac_in_source`` and
pgcrypto in the source, ``hmac``. Rows the chain would refuse (a value outside a map without
default, a NaN or unbanded number, a missing required value) are flagged, not dropped, so they show
up as candidates and the verify phase classifies them. Not compiled: ``redact`` (PostgreSQL's regular
expressions are not Python's), ``json`` masks, format specs in templates; a flow using one on a
compared column raises :class:`NotCompilable` and is compared through the chain instead.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from psycopg import sql

from civicsync.config.masking import VocabularyMask
from civicsync.config.models import BandMask, ColumnSpec, DropMask, Filter, HmacMask, KeepLastMask, MaskSpec
from civicsync.errors import RowRejectedError
from civicsync.reconcile.catalog import SourceCatalog
from civicsync.reconcile.plan import Plan
from civicsync.transform.columns import compile_column
from civicsync.transform.vocabulary import vocabulary_sql

NUMERIC_TYPES = frozenset({"smallint", "integer", "bigint", "real", "double precision", "numeric"})
C = sql.SQL(' COLLATE "C"')


class NotCompilable(Exception):
    """A rule has no exact SQL equivalent; the flow is compared through the Python chain instead."""


@dataclass(frozen=True)
class Derivation:
    """The flow's rules as SQL over the source table (alias ``s``)."""

    columns: Mapping[str, sql.Composable]  # target column → expression of the target column's type
    where: sql.Composable                  # the filters (and the caller's window)
    rejected: sql.Composable | None        # true for a row the chain would refuse
    settings: tuple[tuple[str, str], ...]  # session settings the expressions read (hmac keys, hex)


def is_numeric(type_name: str) -> bool:
    """Is a ``format_type`` name a number type?"""
    return type_name.split("(")[0] in NUMERIC_TYPES


def compile_rules(plan: Plan, catalog: SourceCatalog, secrets: Mapping[str, bytes],
                  window: sql.Composable | None = None) -> Derivation:
    """Compile the flow's filters and column rules. Raises NotCompilable."""
    compiler = _Compiler(plan, catalog, secrets)
    wanted = set(plan.staged)
    columns: dict[str, sql.Composable] = {}
    for name, spec in plan.flow.columns.items():
        if spec.run_time:
            continue
        try:
            text = compiler.text_of(name, spec)
        except NotCompilable:
            if name in wanted or _may_reject(spec, catalog):
                raise
            continue  # not compared, and it never refuses a row: no need to mirror it
        if name in wanted:
            columns[name] = compiler.typed(name, spec, text)
        if name in plan.flow.validate_.required:
            compiler.rejects.append(sql.SQL("({}) IS NULL").format(text))
    where = [_filter(f, catalog, compiler.rejects) for f in plan.flow.filters]
    if window is not None:
        where.append(window)
    rejected = sql.SQL(" OR ").join(sql.SQL("coalesce({}, false)").format(r) for r in compiler.rejects) \
        if compiler.rejects else None
    return Derivation(columns, sql.SQL(" AND ").join(where) if where else sql.SQL("true"), rejected,
                      tuple(compiler.settings))


def _may_reject(spec: ColumnSpec, catalog: SourceCatalog) -> bool:
    """Could the chain refuse a row because of this (uncompiled) column?"""
    if spec.map is not None and spec.default is None:
        return True
    mask = spec.mask
    if mask is None or mask.kind in ("redact", "hmac", "drop", "keep_last", "vocabulary"):
        return False
    if mask.kind == "json":
        # A json/jsonb column always holds valid JSON; anything else might not.
        return spec.from_ is None or catalog.source_types.get(spec.from_) not in ("json", "jsonb")
    return True


class _Compiler:
    def __init__(self, plan: Plan, catalog: SourceCatalog, secrets: Mapping[str, bytes]) -> None:
        self.plan = plan
        self.catalog = catalog
        self.secrets = secrets
        self.rejects: list[sql.Composable] = []
        self.settings: list[tuple[str, str]] = []

    def source_text(self, column: str) -> sql.Composable:
        return source_text(column, self.catalog)

    def typed(self, name: str, spec: ColumnSpec, text: sql.Composable) -> sql.Composable:
        """The target-typed value: the text cast to the target type (a same-typed plain copy as it is)."""
        ttype = self.catalog.target_types[name]
        if spec.from_ and spec.map is None and spec.mask is None \
                and self.catalog.source_types.get(spec.from_) == ttype:
            return sql.Identifier("s", spec.from_)
        return sql.SQL("({})::{}").format(text, sql.SQL(ttype))

    def text_of(self, name: str, spec: ColumnSpec) -> sql.Composable:
        """The column's value as the chain computes it (text or NULL)."""
        if spec.from_ is None and spec.template is None:
            return self._constant(name, spec)
        value = self.source_text(spec.from_) if spec.from_ else self._template(spec.template or "")
        value = self._mapped(spec, value)
        if spec.mask is not None:
            value = self._masked(spec.mask, spec, value)
        return sql.SQL("({})::text").format(value)

    def _constant(self, name: str, spec: ColumnSpec) -> sql.Composable:
        # The chain's own function, on no row at all: exactly its value, mapping and masking included.
        try:
            value = compile_column(name, spec, {}, self.secrets, "")(())
        except RowRejectedError:
            self.rejects.append(sql.SQL("true"))
            value = None
        return sql.SQL("{}::text").format(sql.Literal(value))

    def _template(self, template: str) -> sql.Composable:
        parts: list[sql.Composable] = []
        for literal, name, fmt, conversion in string.Formatter().parse(template):
            if literal:
                parts.append(sql.Literal(literal))
            if name is None:
                continue
            if fmt or conversion not in (None, "s") or name not in self.catalog.source_types:
                raise NotCompilable(f"template {template!r}: only plain {{column}} placeholders compile")
            parts.append(self.source_text(name))  # concat() reads NULL as '', as the chain does
        return sql.SQL("concat({})").format(sql.SQL(", ").join(parts)) if parts else sql.Literal("")

    def _mapped(self, spec: ColumnSpec, value: sql.Composable) -> sql.Composable:
        if spec.map is None:
            return value
        default = sql.Literal(spec.default)
        if not spec.map:
            return sql.SQL("CASE WHEN {v} IS NULL THEN NULL ELSE {d} END").format(v=value, d=default)
        whens = sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(sql.Literal(k), sql.Literal(v))
                                  for k, v in spec.map.items())
        if spec.default is None:
            keys = sql.SQL(", ").join(sql.Literal(k) for k in spec.map)
            self.rejects.append(sql.SQL("({v}) IS NOT NULL AND ({v}){c} <> ALL (ARRAY[{keys}]::text[])").format(
                v=value, c=C, keys=keys))
        return sql.SQL("CASE WHEN {v} IS NULL THEN NULL ELSE CASE ({v}){c} {whens} ELSE {d} END END").format(
            v=value, c=C, whens=whens, d=default)

    def _masked(self, mask: MaskSpec, spec: ColumnSpec, value: sql.Composable) -> sql.Composable:
        if isinstance(mask, KeepLastMask):
            return _keep_last(mask, value)
        if isinstance(mask, BandMask):
            return self._band(mask, spec, value)
        if isinstance(mask, DropMask):
            return sql.SQL("NULL")
        if isinstance(mask, HmacMask):
            return self._hmac(mask, value)
        if isinstance(mask, VocabularyMask):
            return vocabulary_sql(value, mask)
        raise NotCompilable(f"{mask.kind} masks have no exact SQL equivalent")

    def _band(self, mask: BandMask, spec: ColumnSpec, value: sql.Composable) -> sql.Composable:
        if spec.map is not None or spec.from_ is None or not is_numeric(self.catalog.source_types[spec.from_]):
            raise NotCompilable("band masks compile on numeric source columns only")
        number = sql.SQL("({})::numeric").format(value)
        whens: list[sql.Composable] = []
        catch_all: str | None = None
        highest: sql.Composable | None = None
        for band in mask.bands:
            if band.below is None:
                catch_all = band.label
                continue
            # Through repr, as the chain does: the bound is the number written in the config.
            highest = sql.SQL("{}::numeric").format(sql.Literal(str(Decimal(repr(band.below)))))
            whens.append(sql.SQL("WHEN {} < {} THEN {}").format(number, highest, sql.Literal(band.label)))
        # NaN sorts above every number in PostgreSQL; the chain refuses it.
        nan = sql.SQL("{} = 'NaN'::numeric").format(number)
        refused = nan if catch_all is not None or highest is None else sql.SQL("({} OR {} >= {})").format(
            nan, number, highest)
        self.rejects.append(sql.SQL("({}) IS NOT NULL AND {}").format(value, refused))
        return sql.SQL("CASE WHEN {v} IS NULL OR {nan} THEN NULL {whens} ELSE {rest} END").format(
            v=value, nan=nan, whens=sql.SQL(" ").join(whens), rest=sql.Literal(catch_all))

    def _hmac(self, mask: HmacMask, value: sql.Composable) -> sql.Composable:
        function = self.catalog.hmac_function
        if not self.plan.flow.reconcile.hmac_in_source or function is None:
            raise NotCompilable("hmac masks compile only with reconcile.hmac_in_source and pgcrypto in the source")
        # The key goes to the source as a session setting, set apart from the (possibly logged) scan.
        setting = f"civicsync.hmac_{len(self.settings)}"
        self.settings.append((setting, self.secrets[mask.secret].hex()))
        digest = sql.SQL("encode({f}(convert_to({v}, 'UTF8'), decode(current_setting({s}), 'hex'), 'sha256'), 'hex')"
                         ).format(f=sql.SQL(function), v=value, s=sql.Literal(setting))
        return sql.SQL("{p} || substr({d}, 1, {n})").format(p=sql.Literal(mask.prefix), d=digest,
                                                            n=sql.Literal(mask.length))


def _keep_last(mask: KeepLastMask, value: sql.Composable) -> sql.Composable:
    core = sql.SQL("replace(replace({}, ' ', ''), '-', '')").format(value)
    char, n = sql.Literal(mask.mask_char), mask.n
    last = sql.SQL("right({}, {})").format(core, sql.Literal(n))
    if mask.template is None:
        short: sql.Composable = sql.SQL("repeat({}, length({}))").format(char, core)
        long: sql.Composable = sql.SQL("repeat({}, length({}) - {}) || {}").format(char, core, sql.Literal(n), last)
    else:
        short = sql.Literal(mask.template.replace("{last}", mask.mask_char * n))
        long = sql.SQL("replace({}, '{{last}}', {})").format(sql.Literal(mask.template), last)
    return sql.SQL("CASE WHEN {v} IS NULL THEN NULL WHEN length({core}) <= {n} THEN {short} ELSE {long} END").format(
        v=value, core=core, n=sql.Literal(n), short=short, long=long)


def source_text(column: str, catalog: SourceCatalog) -> sql.Composable:
    """A source column's value as the chain receives it: its type's output function's text."""
    col = sql.Identifier("s", column)
    function = catalog.output_functions.get(column)
    if function is None:
        return sql.SQL("{}::text").format(col)
    return sql.SQL("textin({}({}))").format(sql.SQL(function), col)


def _filter(flt: Filter, catalog: SourceCatalog, rejects: list[sql.Composable]) -> sql.Composable:
    """A filter as the chain applies it: on the value's text (NULL never passes, except is_null). A numeric
    comparison the chain cannot make (NaN) refuses the row: it passes here, flagged in ``rejects``."""
    col = sql.Identifier("s", flt.column)
    text = sql.SQL("({}){}").format(source_text(flt.column, catalog), C)
    op = flt.op
    if op in ("is_null", "not_null"):
        return sql.SQL("{} IS {}NULL").format(col, sql.SQL("" if op == "is_null" else "NOT "))
    if op in ("in", "not_in"):
        values = sql.SQL(", ").join(sql.Literal(_as_text(v)) for v in flt.values or [])
        return sql.SQL("coalesce({} {} (ARRAY[{}]::text[]), false)").format(
            text, sql.SQL("= ANY" if op == "in" else "<> ALL"), values)
    symbol = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    if op not in ("eq", "ne") and isinstance(flt.value, int | float) and not isinstance(flt.value, bool):
        # The chain compares numerically (and refuses a non-number): compile only on number columns.
        if not is_numeric(catalog.source_types[flt.column]):
            raise NotCompilable(f"filter {flt.column} {op} a number, on a column that is not numeric")
        number = sql.SQL("({})::numeric").format(source_text(flt.column, catalog))
        nan = sql.SQL("{} = 'NaN'::numeric").format(number)
        rejects.append(nan)
        return sql.SQL("coalesce({n} {op} {b}::numeric OR {nan}, false)").format(
            n=number, op=sql.SQL(symbol), b=sql.Literal(str(Decimal(str(flt.value)))), nan=nan)
    return sql.SQL("coalesce({} {} {}, false)").format(text, sql.SQL(symbol), sql.Literal(_as_text(flt.value)))


def _as_text(value: str | int | float | None) -> str | None:
    # As civicsync.transform.filters: a boolean is PostgreSQL's 't'/'f', anything else its str().
    if isinstance(value, bool):
        return "t" if value else "f"
    return None if value is None else str(value)

