"""The change event, shaped like Debezium's envelope (op, before, after, source), so a Kafka path can
carry civicsync's or Debezium's events (the codec is civicsync.kafka.envelope).

``op`` is ``c`` (insert), ``u`` (update), ``d`` (delete) or ``r`` (read: initial snapshot).
``before``/``after`` map column names to PostgreSQL text values; an unchanged TOASTed column is
:data:`UNCHANGED` (the server did not send it; the target keeps its
value). ``before`` holds only the key columns unless the table has REPLICA IDENTITY FULL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
from psycopg.adapt import Transformer
from psycopg.pq import Format


class _Unchanged:
    """Marker for an unchanged TOASTed column (the server did not send its value)."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
Value = str | None | _Unchanged  # a column's value: PostgreSQL text, NULL, or unchanged TOAST


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it ('16/B374D848')."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


Op = Literal["c", "u", "d", "r"]
Image = dict[str, Value]


@dataclass(frozen=True)
class SourceInfo:
    """Where and when a change happened (Debezium's ``source`` block)."""

    db: str
    schema: str
    table: str
    lsn: int            # commit LSN of the source transaction
    tx_id: int
    ts: datetime        # source commit time



@dataclass(frozen=True)
class ChangeEvent:
    """One row change in Debezium's envelope."""

    op: Op
    before: Image | None
    after: Image | None
    source: SourceInfo
    key: dict[str, str | None]
    column_types: Mapping[str, int] = field(default_factory=dict)  # column → type OID (Relation message)

    def typed(self, image: Image | None) -> dict[str, Any] | None:
        """``before`` or ``after`` with each value loaded to its Python type by the column's type
        OID (psycopg's loaders: int, Decimal, datetime, dict, list, UUID, ranges, ...). A value
        Python cannot hold (infinite dates, BC years), an unknown type (enums) or an unchanged
        TOAST marker stays as it came: text or UNCHANGED."""
        if image is None:
            return None
        return {k: _load(self.column_types.get(k), v) for k, v in image.items()}

    @property
    def table(self) -> str:
        return f"{self.source.schema}.{self.source.table}"

    def describe(self) -> str:
        return f"{self.op} {self.table} {self.key} at {format_lsn(self.source.lsn)}"


_TRANSFORMER = Transformer()


def _load(oid: int | None, value: Value) -> Any:
    if oid is None or not isinstance(value, str):
        return value
    try:
        return _TRANSFORMER.get_loader(oid, Format.TEXT).load(value.encode())
    except (psycopg.DataError, ValueError, OverflowError):
        return value
