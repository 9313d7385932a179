"""civicsync's own envelope round-trips every change event exactly (hypothesis), through the real broker
too; NULL and unchanged TOAST stay apart even when a value is the placeholder text; a key change is
delete + tombstone + create."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicsync.capture.pgoutput import UNCHANGED, Value
from civicsync.events import ChangeEvent, SourceInfo
from civicsync.kafka.envelope import PLACEHOLDER, EnvelopeError, Record, decode, encode
from civicsync.kafka.local import KafkaCluster
from fix_kafka import consume

# PostgreSQL text: any Unicode but NUL and lone surrogates; plus the awkward ones on purpose.
PG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20) \
    | st.sampled_from([PLACEHOLDER, "", "null", "NULL", '{"a": 1}', "1e-20", "-infinity", "0044-03-15 BC"])
VALUE: st.SearchStrategy[Value] = st.none() | PG_TEXT
NAMES = st.text("abcdefghij_", min_size=1, max_size=6)
TS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@st.composite
def events(draw: st.DrawFn) -> ChangeEvent:
    columns = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    key_cols = columns[: draw(st.integers(1, len(columns)))]
    op = draw(st.sampled_from(["c", "u", "d", "r"]))
    after = {c: draw(VALUE) for c in columns}
    for c in key_cols:
        after[c] = draw(PG_TEXT)  # key columns are never NULL
    if op == "u":  # only an update has unchanged TOAST values (never in the key)
        for c in columns[len(key_cols):]:
            if draw(st.booleans()):
                after[c] = UNCHANGED
    before = None
    if op in ("u", "d"):
        full = draw(st.booleans())
        before = {c: draw(VALUE) for c in columns} if full else {}
        for c in key_cols:
            before[c] = after[c] if op == "d" or not draw(st.booleans()) else draw(PG_TEXT)
    image = before if op == "d" else after
    assert image is not None
    source = SourceInfo(draw(NAMES), draw(NAMES), draw(NAMES), draw(st.integers(0, 2**63 - 1)),
                        draw(st.integers(0, 2**32)), draw(TS))
    types = {c: draw(st.integers(16, 2**31 - 1)) for c in columns if draw(st.booleans())}
    return ChangeEvent(op, before, None if op == "d" else after, source,  # type: ignore[arg-type]
                       {c: image[c] for c in key_cols}, types)  # type: ignore[misc]


def _key_changed(event: ChangeEvent) -> bool:
    return event.op == "u" and event.before is not None and {k: event.before[k] for k in event.key} != event.key


@settings(max_examples=400, deadline=None)
@given(event=events())
def test_every_event_round_trips_exactly(event: ChangeEvent) -> None:
    records = encode(event)
    decoded = [decode(r.key, r.value) for r in records]
    if _key_changed(event):
        assert event.before is not None
        delete, tombstone, create = decoded
        old_key = {k: event.before[k] for k in event.key}
        assert isinstance(delete, ChangeEvent) and isinstance(create, ChangeEvent) and tombstone is None
        assert (delete.op, delete.key, delete.before, delete.after) == ("d", old_key, event.before, None)
        assert (create.op, create.key, create.before, create.after) == ("c", event.key, None, event.after)
        assert delete.source == create.source == event.source
        assert records[0].key == records[1].key != records[2].key
    elif event.op == "d":
        assert decoded == [event, None] and records[0].key == records[1].key
    else:
        assert decoded == [event]


@settings(max_examples=200, deadline=None)
@given(event=events())
def test_the_value_is_a_debezium_envelope(event: ChangeEvent) -> None:
    record = encode(event)[0]
    assert record.value is not None
    value = json.loads(record.value)
    assert value["op"] in ("c", "u", "d", "r")
    assert {"before", "after", "source", "ts_ms"} <= set(value)
    source = value["source"]
    assert {"lsn", "txId", "ts_ms", "snapshot", "db", "schema", "table"} <= set(source)
    assert source["snapshot"] == ("true" if value["op"] == "r" else "false")
    # Debezium's consumers see its placeholder where a TOAST value is unchanged.
    for column in value["civicsync"]["unchanged"]:
        assert value["after"][column] == PLACEHOLDER


def test_null_unchanged_and_the_placeholder_text_stay_apart() -> None:
    source = SourceInfo("db", "public", "t", 1, 2, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=7))
    event = ChangeEvent("u", None, {"id": "1", "a": None, "b": UNCHANGED, "c": PLACEHOLDER}, source, {"id": "1"})
    (record,) = encode(event)
    back = decode(record.key, record.value)
    assert back is not None and back.after == {"id": "1", "a": None, "b": UNCHANGED, "c": PLACEHOLDER}
    assert back.source.ts == source.ts


def test_bad_records_get_a_clear_error_without_values() -> None:
    for value in (b"not json", b'{"op": "c"}', b'{"op": "x", "source": {"db": "", "schema": "", "table": "",'
                  b' "lsn": 1, "txId": 1, "ts_us": 1}}'):
        with pytest.raises(EnvelopeError):
            decode(b'{"id": "secret"}', value)
    bad_image = (b'{"op": "c", "after": {"a": 1}, "source": {"db": "", "schema": "", "table": "", "lsn": 1,'
                 b' "txId": 1, "ts_us": 1}}')
    with pytest.raises(EnvelopeError) as err:
        decode(b"{}", bad_image)
    assert "secret" not in str(err.value)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sample=st.lists(events(), min_size=20, max_size=60))
def test_round_trip_through_the_real_broker(kafka_broker: KafkaCluster, sample: list[ChangeEvent]) -> None:
    """Records go through Kafka and come back byte for byte and event for event, per-key in order."""
    topic = f"envelope_{secrets.token_hex(4)}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
    sent: list[Record] = [r for e in sample for r in encode(e)]
    for record in sent:
        producer.produce(topic, record.value, record.key)
    assert producer.flush(60) == 0
    got = consume(kafka_broker.bootstrap, topic, len(sent))
    assert len(got) == len(sent)
    by_key: dict[bytes, list[bytes | None]] = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(m.value())
    expected: dict[bytes, list[bytes | None]] = {}
    for r in sent:
        expected.setdefault(r.key, []).append(r.value)
    assert by_key == expected
    assert [decode(m.key(), m.value()) for m in got if m.key() == sent[0].key] == \
        [decode(r.key, r.value) for r in sent if r.key == sent[0].key]
