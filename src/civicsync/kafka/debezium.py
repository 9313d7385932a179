"""Debezium's PostgreSQL change events (Kafka Connect JSON with schemas) as civicsync change events.

Debezium turns each PostgreSQL value into a typed Connect value: dates become day counts,
timestamps microseconds, numerics unscaled integers in base64, bytea base64, and so on. This module
turns them back into the exact text the source server prints (:mod:`civicsync.kafka.pgtext`), so
a Debezium source feeds the same transform and apply code as civicsync's own capture.

The connector must run with the settings of :func:`civicsync.kafka.connect.debezium_postgres_config`:
``column.propagate.source.type`` (each column's PostgreSQL type travels in the schema; without it
``bytea`` and ``bit(1)`` are indistinguishable from text and booleans), ``decimal.handling.mode=precise``,
``binary.handling.mode=bytes`` and ``interval.handling.mode=string``. Values Debezium has already
lost (docs/kafka.md lists them) cannot be brought back; a few that it replaces with fixed
sentinels (infinite dates and timestamps) are.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.postgres import types as pg_types

from civicsync.capture.pgoutput import UNCHANGED, Value
from civicsync.errors import FatalError
from civicsync.events import ChangeEvent, Image, SourceInfo
from civicsync.kafka import pgtext

PLACEHOLDER = "__debezium_unavailable_value"  # Debezium's unavailable.value.placeholder default
_SOURCE_TYPE = "__debezium.source.column.type"
_GEOMETRIC = {"LINE", "LSEG", "BOX", "PATH", "POLYGON", "CIRCLE"}

# Debezium replaces infinite dates/timestamps with the JDBC driver's sentinels (observed with 3.6.1).
# Dates: snapshot (JDBC) and streaming use different ones; all lie far outside PostgreSQL's date range.
_DATE_SENTINELS = {-622191234: "infinity", -625821272: "-infinity",        # snapshot, and arrays
                   -2147472692: "infinity", -2147472691: "-infinity"}      # streaming
_MILLIS_SENTINELS = {9223372036825200: "infinity", -9223372036832400: "-infinity"}
_MICROS_SENTINELS = {9223372036825200000: "infinity", -9223372036832400000: "-infinity"}


class DebeziumDecodeError(FatalError, ValueError):
    """A Debezium message is not what this decoder understands (no values in the message text)."""


@dataclass(frozen=True)
class Truncated:
    """A Debezium ``t`` event: the table was truncated."""

    source: SourceInfo


Schema = Mapping[str, Any]


def _unscaled(b64: str) -> int:
    return int.from_bytes(base64.b64decode(b64), "big", signed=True)


def _date(value: int, _s: Schema) -> str:
    return _DATE_SENTINELS.get(value) or pgtext.date_text(value)


def _timestamp(scale: int, sentinels: Mapping[int, str]) -> Callable[[int, Schema], str]:
    def decode(value: int, _s: Schema) -> str:
        """A timestamp in ``scale``-microsecond units (or a sentinel) as text."""
        return sentinels.get(value) or pgtext.timestamp_text(value * scale)
    return decode


def _decimal(value: str, schema: Schema) -> str:
    params = schema.get("parameters", {})
    scale = int(params.get("scale", 0))
    if params.get(_SOURCE_TYPE, "").upper() == "MONEY":
        return pgtext.money_text(_unscaled(value), scale)
    return pgtext.numeric_text(_unscaled(value), scale)


def _variable_decimal(value: Mapping[str, Any], _s: Schema) -> str:
    return pgtext.numeric_text(_unscaled(value["value"]), int(value["scale"]))


def _bits(value: str, schema: Schema) -> str:
    params = schema.get("parameters", {})
    fixed = params.get(_SOURCE_TYPE, "BIT").upper() == "BIT"
    length = int(params["length"]) if fixed and "length" in params else None
    return pgtext.bits_text(base64.b64decode(value), length)


def _point(value: Mapping[str, Any], _s: Schema) -> str:
    return f"({pgtext.float_text(value['x'])},{pgtext.float_text(value['y'])})"


def _micro_duration(value: int, _s: Schema) -> str:
    # interval.handling.mode=numeric: months were already folded into microseconds (lossy).
    return pgtext.interval_text(0, 0, value)


_BY_NAME: dict[str, Callable[[Any, Schema], str]] = {
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.Time": lambda v, _s: pgtext.time_text(v * 1000),
    "org.apache.kafka.connect.data.Time": lambda v, _s: pgtext.time_text(v * 1000),
    "io.debezium.time.MicroTime": lambda v, _s: pgtext.time_text(v),
    "io.debezium.time.NanoTime": lambda v, _s: pgtext.time_text(v // 1000),
    "io.debezium.time.Timestamp": _timestamp(1000, _MILLIS_SENTINELS),
    "org.apache.kafka.connect.data.Timestamp": _timestamp(1000, _MILLIS_SENTINELS),
    "io.debezium.time.MicroTimestamp": _timestamp(1, _MICROS_SENTINELS),
    "io.debezium.time.NanoTimestamp": lambda v, _s: pgtext.timestamp_text(v // 1000),
    "io.debezium.time.ZonedTimestamp": lambda v, _s: pgtext.iso_timestamptz_text(v),
    "io.debezium.time.ZonedTime": lambda v, _s: pgtext.iso_timetz_text(v),
    "io.debezium.time.Interval": lambda v, _s: pgtext.iso_interval_text(v),
    "io.debezium.time.MicroDuration": _micro_duration,
    "org.apache.kafka.connect.data.Decimal": _decimal,
    "io.debezium.data.VariableScaleDecimal": _variable_decimal,
    "io.debezium.data.Bits": _bits,
    "io.debezium.data.geometry.Point": _point,
}


def _bytes(value: str, schema: Schema) -> str:
    data = base64.b64decode(value)
    source_type = schema.get("parameters", {}).get(_SOURCE_TYPE, "").upper()
    if source_type in ("BYTEA", ""):
        return pgtext.bytea_text(data)
    # include.unknown.datatypes: Debezium sends the JDBC driver's text of the value as bytes.
    text = data.decode()
    return pgtext.geometric_text(text) if source_type in _GEOMETRIC else text


def _plain(value: Any, schema: Schema) -> str:
    kind = schema["type"]
    if kind == "boolean":
        if schema.get("parameters", {}).get(_SOURCE_TYPE, "").upper() == "BIT":
            return "1" if value else "0"  # bit(1) arrives as a boolean
        return "t" if value else "f"
    if kind in ("float", "double"):
        return pgtext.float_text(value, single=kind == "float")
    if kind == "bytes":
        return _bytes(value, schema)
    if kind in ("int8", "int16", "int32", "int64"):
        return str(int(value))
    if kind == "string":
        return str(value)
    raise DebeziumDecodeError(f"a Connect value of type {kind!r} is not a column value this decoder knows")


def _is_placeholder(value: Any, schema: Schema) -> bool:
    if schema["type"] == "bytes" and isinstance(value, str):
        return value == _PLACEHOLDER_B64
    if isinstance(value, list):
        # A numeric array's unchanged TOAST value arrives as the placeholder's bytes, one per element.
        return value == _PLACEHOLDER_CODES or (
            len(value) == 1 and _is_placeholder(value[0], schema.get("items", {"type": "string"})))
    return isinstance(value, str) and value == PLACEHOLDER


_PLACEHOLDER_B64 = base64.b64encode(PLACEHOLDER.encode()).decode()
_PLACEHOLDER_CODES = list(PLACEHOLDER.encode())


def decode_value(value: Any, schema: Schema) -> Value:
    """One column value as PostgreSQL text (None for NULL, UNCHANGED for an unchanged TOAST value)."""
    if value is None:
        return None
    if _is_placeholder(value, schema):
        return UNCHANGED
    name = schema.get("name")
    try:
        if schema["type"] == "array":
            items = schema.get("items", {"type": "string"})
            return pgtext.array_text([_element(v, items) for v in value])
        if name in _BY_NAME:
            return _BY_NAME[name](value, schema)
        return _plain(value, schema)
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, DebeziumDecodeError):
            raise
        # The message is about the schema, never the value (it may be personal data).
        raise DebeziumDecodeError(f"cannot decode a {schema['type']} value named {name!r}: "
                                  f"{type(exc).__name__}") from None


def _element(value: Any, items: Schema) -> str | None:
    decoded = decode_value(value, items)
    return decoded if isinstance(decoded, str) or decoded is None else None


def _image(payload: Mapping[str, Any] | None, schema: Schema | None) -> Image | None:
    if payload is None:
        return None
    fields = {f["field"]: f for f in (schema or {}).get("fields", [])}
    return {col: decode_value(v, fields.get(col, {"type": "string"})) for col, v in payload.items()}


def _field(schema: Schema, name: str) -> Schema | None:
    fields: list[Schema] = schema.get("fields", [])
    return next((f for f in fields if f.get("field") == name), None)


def column_types(value_schema: Schema | None) -> dict[str, int]:
    """Column → PostgreSQL type OID, from the propagated source types (built-in types only)."""
    after = _field(value_schema or {}, "after") or _field(value_schema or {}, "before") or {}
    oids: dict[str, int] = {}
    for f in after.get("fields", []):
        source_type = f.get("parameters", {}).get(_SOURCE_TYPE, "").lower()
        array = source_type.startswith("_")
        info = pg_types.get(source_type.lstrip("_")) if source_type else None
        if info is not None:
            oids[f["field"]] = info.array_oid if array else info.oid
    return oids


def source_info(source: Mapping[str, Any]) -> SourceInfo:
    """Debezium's ``source`` block. ``lsn`` is the event's own LSN (Debezium gives no commit LSN)."""
    micros = source.get("ts_us") or source.get("ts_ms", 0) * 1000
    return SourceInfo(db=source.get("db", ""), schema=source.get("schema", ""), table=source.get("table", ""),
                      lsn=int(source.get("lsn") or 0), tx_id=int(source.get("txId") or 0),
                      ts=datetime.fromtimestamp(micros / 1_000_000, UTC))


def decode_message(key: bytes | None, value: bytes | None, *,
                   replica_identity_full: bool = False) -> ChangeEvent | Truncated | None:
    """One Debezium Kafka message as a change event, a :class:`Truncated`, or None (a tombstone).

    Without ``replica_identity_full`` the ``before`` image of a delete keeps only the key columns:
    Debezium fills the others with nulls that mean "unknown", not NULL.
    """
    if value is None:
        return None
    try:
        envelope = json.loads(value)
        payload, schema = envelope["payload"], envelope.get("schema") or {}
        key_payload = json.loads(key)["payload"] if key else None
        op = payload["op"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DebeziumDecodeError(f"not a Debezium JSON-with-schema message ({type(exc).__name__})") from None
    source = source_info(payload.get("source") or {})
    if op == "t":
        return Truncated(source)
    if op not in ("c", "u", "d", "r"):
        raise DebeziumDecodeError(f"unknown Debezium op {op!r}")
    before = _image(payload.get("before"), _field(schema, "before"))
    after = _image(payload.get("after"), _field(schema, "after"))
    key_names = list(key_payload) if isinstance(key_payload, dict) else []
    row = after if after is not None else before
    if row is None:
        raise DebeziumDecodeError(f"a Debezium {op!r} event without before or after")
    if before is not None and op == "d" and not replica_identity_full and key_names:
        before = {k: before[k] for k in key_names if k in before}
    event_key = {k: (v if isinstance(v := row.get(k), str) else None) for k in key_names}
    return ChangeEvent(op, before, after, source, event_key, column_types(schema))
