"""civicsync's own Kafka records: a Debezium-compatible JSON envelope that round-trips exactly.

A record's **key** is a JSON object of the key columns; its **value** is Debezium's envelope in
schemaless JSON (what Debezium writes with ``value.converter.schemas.enable=false``)::

    {"op": "u",                                      # c insert, u update, d delete, r snapshot read
     "before": {"id": "7"}, "after": {"id": "7", "name": "Ann", "photo": "__debezium_unavailable_value"},
     "source": {"connector": "civicsync", "version": "1", "db": "smart_citizen", "schema": "public",
                "table": "profiles", "lsn": 23861344, "txId": 7311, "ts_ms": 1764680000123,
                "ts_us": 1764680000123456, "snapshot": "false"},
     "ts_ms": 1764680000123,
     "civicsync": {"unchanged": ["photo"], "types": {"id": 23, "name": 25, "photo": 17}}}

**Values.** Every column value is the PostgreSQL text of the value as a JSON string (exactly what
the source server prints, so every type round-trips: numerics keep their scale, timestamps their
era and infinities); SQL NULL is JSON ``null``. An unchanged TOASTed value (the server did not send
it; the target keeps what it has) carries Debezium's placeholder string *and* is named in
``civicsync.unchanged``: the list, not the string, is what decodes it, so a real value that happens
to equal the placeholder text stays that value. ``civicsync.types`` holds each column's type OID.

**Records of one change.** A delete is followed by a tombstone (a null value under the same key,
so compaction can drop the key). An update that changes the key is a delete of the old key, its
tombstone, and a create under the new key, as Debezium does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from civicsync.capture.pgoutput import UNCHANGED
from civicsync.errors import FatalError
from civicsync.events import ChangeEvent, Image, SourceInfo

PLACEHOLDER = "__debezium_unavailable_value"
ENVELOPE_VERSION = "1"


class EnvelopeError(FatalError, ValueError):
    """A record is not a civicsync envelope (the message never quotes values)."""


@dataclass(frozen=True)
class Record:
    """One Kafka record: key and value bytes (value None for a tombstone)."""

    key: bytes
    value: bytes | None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _plain(image: Image | None) -> dict[str, str | None] | None:
    if image is None:
        return None
    return {k: (PLACEHOLDER if v is UNCHANGED else v) for k, v in image.items()}  # type: ignore[misc]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _source(source: SourceInfo, op: str) -> dict[str, Any]:
    micros = _micros(source.ts)
    return {"connector": "civicsync", "version": ENVELOPE_VERSION, "db": source.db, "schema": source.schema,
            "table": source.table, "lsn": source.lsn, "txId": source.tx_id, "ts_ms": micros // 1000,
            "ts_us": micros, "snapshot": "true" if op == "r" else "false"}


def _value(event: ChangeEvent, op: str, before: Image | None, after: Image | None) -> bytes:
    unchanged = sorted(k for k, v in (after or {}).items() if v is UNCHANGED)
    source = _source(event.source, op)
    return _dumps({"op": op, "before": _plain(before), "after": _plain(after), "source": source,
                   "ts_ms": source["ts_ms"],
                   "civicsync": {"unchanged": unchanged, "types": dict(event.column_types)}})


def _key_of(image: Image, key_names: list[str]) -> dict[str, str | None]:
    return {k: (v if isinstance(v, str) else None) for k in key_names if (v := image.get(k)) is not UNCHANGED}


def encode(event: ChangeEvent, tombstones: bool = True) -> list[Record]:
    """The records of one change event, in the order they must be produced (same partition: same key)."""
    key = _dumps(event.key)
    if event.op == "d":
        records = [Record(key, _value(event, "d", event.before, None))]
        return [*records, Record(key, None)] if tombstones else records
    if event.op == "u" and event.before is not None:
        old_key = _key_of(event.before, list(event.key))
        if set(old_key) == set(event.key) and old_key != event.key:
            old = _dumps(old_key)
            records = [Record(old, _value(event, "d", event.before, None))]
            if tombstones:
                records.append(Record(old, None))
            return [*records, Record(key, _value(event, "c", None, event.after))]
    return [Record(key, _value(event, event.op, event.before, event.after))]


def _image(raw: Any, unchanged: set[str]) -> Image | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not all(v is None or isinstance(v, str) for v in raw.values()):
        raise EnvelopeError("an image must map column names to text or null")
    return {k: (UNCHANGED if k in unchanged else v) for k, v in raw.items()}


def decode(key: bytes | None, value: bytes | None) -> ChangeEvent | None:
    """A record back as the change event it was made from; None for a tombstone."""
    if value is None:
        return None
    try:
        envelope = json.loads(value)
        op, source, ext = envelope["op"], envelope["source"], envelope.get("civicsync") or {}
        event_key = json.loads(key) if key else {}
        unchanged = set(ext.get("unchanged", []))
        info = SourceInfo(db=source["db"], schema=source["schema"], table=source["table"], lsn=int(source["lsn"]),
                          tx_id=int(source["txId"]),
                          ts=_EPOCH + timedelta(microseconds=int(source["ts_us"])))
        types = {str(k): int(v) for k, v in (ext.get("types") or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"not a civicsync envelope ({type(exc).__name__})") from None
    if op not in ("c", "u", "d", "r"):
        raise EnvelopeError(f"unknown op {str(op)[:3]!r}")
    if not isinstance(event_key, dict):
        raise EnvelopeError("a record key must be a JSON object of key columns")
    return ChangeEvent(op, _image(envelope.get("before"), set()), _image(envelope.get("after"), unchanged),
                       info, event_key, types)
