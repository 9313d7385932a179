"""Vocabularies: a categorical value passes only if it is declared (in Python for row flows, in SQL
for aggregate dimensions; both compare the same way)."""

from __future__ import annotations

import re
from collections.abc import Callable

from psycopg import sql

from civicsync.config.masking import Vocabulary

# ASCII only on both sides, so that Python and PostgreSQL (under the "C" collation) agree exactly.
_SEPARATORS = " \t\n\r\f\v_-"
_SPACING = re.compile(f"[{re.escape(_SEPARATORS)}]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def vocabulary_key(value: str) -> str:
    """What two spellings of one entry share: no (ASCII) case, no surrounding spaces, one space for any
    run of spaces, '-' and '_' ('Payment-Delay ' and 'payment_delay' → 'payment delay')."""
    return _SPACING.sub(" ", value).strip(" ").translate(_ASCII_LOWER)


def vocabulary_function(spec: Vocabulary) -> Callable[[str], str]:
    """Value → the declared spelling of its vocabulary entry, or the default."""
    table = {vocabulary_key(v): v for v in spec.values}
    table.update({vocabulary_key(a): v for a, v in spec.aliases.items()})
    default = spec.default
    return lambda value: table.get(vocabulary_key(value), default)


def vocabulary_sql(value: sql.Composable, spec: Vocabulary) -> sql.Composable:
    """The SQL equivalent of :func:`vocabulary_function` over a text expression (NULL stays NULL)."""
    table = {vocabulary_key(v): v for v in spec.values}
    table.update({vocabulary_key(a): v for a, v in spec.aliases.items()})
    key = sql.SQL("lower(btrim(regexp_replace(({})::text COLLATE \"C\", {}, ' ', 'g'), ' ') COLLATE \"C\")").format(
        value, sql.Literal(f"[{_SEPARATORS}]+"))
    whens = sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(sql.Literal(k), sql.Literal(v))
                              for k, v in table.items())
    return sql.SQL("CASE WHEN {v} IS NULL THEN NULL ELSE CASE {k} {w} ELSE {d} END END").format(
        v=value, k=key, w=whens, d=sql.Literal(spec.default))
