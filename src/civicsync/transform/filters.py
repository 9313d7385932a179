"""Row filters: ``column op value`` rules compiled to predicates over a source row.

Values are PostgreSQL's text form (what COPY and pgoutput deliver), so equality compares text
('t'/'f' for booleans, ISO dates). Ordering operators compare numerically when the configured
value is a number, else as text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from civicsync.config.models import Filter
from civicsync.errors import RowRejectedError

Row = Sequence[str | None]
Predicate = Callable[[Row], bool]

_ORDER: dict[str, Callable[[object, object], bool]] = {
    "gt": lambda a, b: a > b,  # type: ignore[operator]
    "gte": lambda a, b: a >= b,  # type: ignore[operator]
    "lt": lambda a, b: a < b,  # type: ignore[operator]
    "lte": lambda a, b: a <= b,  # type: ignore[operator]
}


def _as_text(value: str | int | float | None) -> str | None:
    if isinstance(value, bool):
        return "t" if value else "f"
    return None if value is None else str(value)


def compile_filter(flt: Filter, index: int) -> Predicate:
    """A predicate for one filter; ``index`` is the filter column's position in the row."""
    op = flt.op
    if op == "is_null":
        return lambda row: row[index] is None
    if op == "not_null":
        return lambda row: row[index] is not None
    if op in ("in", "not_in"):
        allowed = frozenset(_as_text(v) for v in flt.values or [])
        if op == "in":
            return lambda row: row[index] in allowed
        return lambda row: row[index] is not None and row[index] not in allowed
    if op in ("eq", "ne"):
        wanted = _as_text(flt.value)
        if op == "eq":
            return lambda row: row[index] == wanted
        return lambda row: row[index] is not None and row[index] != wanted
    return _ordering(flt, index)


def _ordering(flt: Filter, index: int) -> Predicate:
    compare = _ORDER[flt.op]
    if isinstance(flt.value, int | float) and not isinstance(flt.value, bool):
        bound = Decimal(str(flt.value))

        def numeric(row: Row) -> bool:
            value = row[index]
            if value is None:
                return False
            try:
                return compare(Decimal(value), bound)
            except InvalidOperation:
                raise RowRejectedError(
                    "filter", f"column {flt.column} is not a number, cannot apply filter {flt.op}"
                ) from None

        return numeric
    text_bound = str(flt.value)
    return lambda row: row[index] is not None and compare(row[index], text_bound)
