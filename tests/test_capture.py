"""Capture from a real slot: decoding, transaction framing, TOAST, truncate, origins, reconnects."""

from __future__ import annotations

import psycopg
import pytest

from civicsync.capture.pgoutput import UNCHANGED, DecodeError, decode, format_lsn, parse_lsn
from civicsync.capture.replication import HEARTBEAT_PREFIX, ReplicationStream, emit_heartbeat
from civicsync.capture.slots import CaptureSetupError, check_name, slot_info
from fix_capture import Source, drain
from fix_cdc import wait_for


def test_transactions_are_framed_and_decoded(source: Source) -> None:
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (1, 'a', NULL, 1.50), (2, 'b', NULL, NULL)")
            conn.execute("INSERT INTO other VALUES (1)")  # not published
        conn.execute("UPDATE items SET name = 'a2' WHERE id = 1")
        conn.execute("DELETE FROM items WHERE id = 2")
    first, second, third = drain(stream, 3)
    stream.close()
    assert [(c.op, c.after) for c in first.changes] == [("c", ("1", "a", None, "1.50")), ("c", ("2", "b", None, None))]
    assert first.changes[0].relation.qualified_name == "public.items"
    assert [c.name for c in first.changes[0].relation.columns if c.is_key] == ["id"]
    assert first.end_lsn > first.commit_lsn >= 0 and second.commit_lsn > first.commit_lsn
    assert [(c.op, c.after) for c in second.changes] == [("u", ("1", "a2", None, "1.50"))]
    [delete] = third.changes
    assert delete.op == "d" and delete.before_is_key_only and delete.before == ("2", None, None, None)


def test_unchanged_toast_is_a_marker_not_a_value(source: Source) -> None:
    big = "x" * 100_000  # stored out of line (TOAST)
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        conn.execute("ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL")
        conn.execute("INSERT INTO items VALUES (1, 'a', %s, 1)", (big,))
        conn.execute("UPDATE items SET name = 'b' WHERE id = 1")
    insert, update = drain(stream, 2)
    stream.close()
    assert insert.changes[0].after == ("1", "a", big, "1")
    assert update.changes[0].after == ("1", "b", UNCHANGED, "1")


def test_truncate_and_heartbeat_and_origin(source: Source) -> None:
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        conn.execute("INSERT INTO items VALUES (1, 'a', NULL, 1)")
        conn.execute("TRUNCATE items")
        emit_heartbeat(conn)
        conn.execute("SELECT pg_replication_origin_create('civicsync_test_origin')")
        try:
            with conn.transaction():
                conn.execute("SELECT pg_replication_origin_session_setup('civicsync_test_origin')")
                conn.execute("INSERT INTO items VALUES (9, 'echo', NULL, 1)")
            conn.execute("SELECT pg_replication_origin_session_reset()")
        finally:
            conn.execute("SELECT pg_replication_origin_drop('civicsync_test_origin')")
    _, truncate, heartbeat, echoed = drain(stream, 4)
    stream.close()
    assert [(r.qualified_name, cascade) for r, cascade in truncate.truncated] == [("public.items", False)]
    assert heartbeat.is_heartbeat_only and heartbeat.messages[0].prefix == HEARTBEAT_PREFIX
    assert echoed.origin == "civicsync_test_origin" and echoed.changes[0].after == ("9", "echo", None, "1")


def consume(stream: ReplicationStream, count: int, seen: list[str]) -> None:
    """Poll and acknowledge each transaction as an applier does after its commit."""
    for _ in range(count):
        txn = stream.poll(20)
        assert txn is not None, f"stream ended early after {len(seen)} rows"
        seen += [str(c.after[0]) for c in txn.changes if c.after]
        stream.acknowledge(txn.end_lsn)


def test_walsender_terminated_mid_stream_reconnects_without_loss(source: Source) -> None:
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    seen: list[str] = []
    with source.connect() as conn:
        for i in range(1, 51):
            conn.execute("INSERT INTO items VALUES (%s, 'x', NULL, 1)", (i,))
        consume(stream, 20, seen)
        killed = conn.execute("SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots"
                              " WHERE slot_name = %s", (source.slot,)).fetchone()
        assert killed == (1,)
        for i in range(51, 101):
            conn.execute("INSERT INTO items VALUES (%s, 'x', NULL, 1)", (i,))
    consume(stream, 80, seen)
    stream.close()
    assert stream.reconnects >= 1
    assert seen == [str(i) for i in range(1, 101)]  # nothing lost, nothing twice, in order


def test_unacknowledged_transactions_are_resent_after_a_reconnect(source: Source) -> None:
    """At-least-once at the stream level: what was not acknowledged comes again (the applier's
    stored position makes it exactly-once in effect)."""
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        conn.execute("INSERT INTO items VALUES (1, 'a', NULL, 1)")
        [first] = drain(stream, 1)
        conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
                     (source.slot,))
        [again] = drain(stream, 1)
    stream.close()
    assert (again.end_lsn, again.changes) == (first.end_lsn, first.changes)


def test_acknowledged_position_survives_a_new_stream(source: Source) -> None:
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        conn.execute("INSERT INTO items VALUES (1, 'a', NULL, 1)")
        conn.execute("INSERT INTO items VALUES (2, 'b', NULL, 1)")
        first, _ = drain(stream, 2)
        stream.acknowledge(first.end_lsn)  # the second one is not acknowledged
        stream.close()
        again = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
        [resent] = drain(again, 1)
        again.close()
        assert resent.changes[0].after == ("2", "b", None, "1")
        wait_for(lambda: (info := slot_info(conn, source.slot)) is not None
                 and info.confirmed_flush_lsn == format_lsn(first.end_lsn), what="the confirmed position")


def test_idle_slot_advances_with_heartbeats(source: Source) -> None:
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        before = slot_info(conn, source.slot)
        conn.execute("INSERT INTO other SELECT generate_series(1, 1000)")  # unpublished churn
        emit_heartbeat(conn)
        [beat] = drain(stream, 1)
        stream.acknowledge(beat.end_lsn)
        assert before is not None
        # The walsender applies feedback asynchronously: poll for it.
        wait_for(lambda: parse_lsn((slot_info(conn, source.slot) or before).confirmed_flush_lsn or "0/0")
                 > parse_lsn(before.confirmed_flush_lsn or "0/0"), what="the slot to advance")
        stream.close()


def test_lsn_text_round_trip_and_bad_messages() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(DecodeError):
        decode(b"Z")
    with pytest.raises(DecodeError):
        decode(b"B\x00\x00")
    with pytest.raises(CaptureSetupError):
        check_name("Bad-Name", "slot")


def test_wal_level_check(source: Source) -> None:
    from civicsync.capture.slots import check_wal_level

    with psycopg.connect(source.dsn) as conn:
        check_wal_level(conn)  # the test server runs with wal_level=logical


def test_events_carry_the_debezium_envelope_and_typed_values(source: Source) -> None:
    import datetime as dt
    from decimal import Decimal

    from civicsync.capture.changes import events_of

    with source.connect() as conn:
        conn.execute("CREATE TABLE typed (id int PRIMARY KEY, n numeric, ts timestamptz, j jsonb, a int[],"
                     " d date, u uuid)")
        conn.execute(f"ALTER PUBLICATION {source.publication} ADD TABLE typed")
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        conn.execute("INSERT INTO typed VALUES (1, 1.50, '2026-01-02 03:04:05+00', '{\"a\": [1]}', '{1,2}',"
                     " 'infinity', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')")
    [txn] = drain(stream, 1)
    stream.close()
    [event] = events_of(txn, source.dbname)
    assert event.op == "c" and event.before is None and event.after is not None and event.after["n"] == "1.50"
    assert event.source.table == "typed" and event.source.lsn == txn.commit_lsn
    assert event.key == {"id": "1"}
    typed = event.typed(event.after)
    assert typed is not None
    assert typed["id"] == 1 and typed["n"] == Decimal("1.50") and typed["j"] == {"a": [1]} and typed["a"] == [1, 2]
    assert typed["ts"] == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert typed["d"] == "infinity"  # Python has no infinite date: it stays text
    assert str(typed["u"]) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def test_decoder_on_crafted_messages() -> None:
    import struct

    from civicsync.capture.pgoutput import Insert

    tuple_data = struct.pack("!h", 3) + b"t" + struct.pack("!i", 5) + "héll".encode() + b"n" + b"u"
    msg = decode(b"I" + struct.pack("!I", 42) + b"N" + tuple_data)
    assert msg == Insert(42, ("héll", None, UNCHANGED))
    with pytest.raises(DecodeError, match="truncated"):
        decode(b"I" + struct.pack("!I", 42) + b"N" + tuple_data[:-4])
    with pytest.raises(DecodeError, match="unknown tuple value kind"):
        decode(b"I" + struct.pack("!I", 42) + b"N" + struct.pack("!h", 1) + b"b")
