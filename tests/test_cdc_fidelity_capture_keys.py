"""Issue 9 item 11 at the event level: under REPLICA IDENTITY FULL pgoutput flags every column as part of
the identity; the event's key is still the table's declared key, and a key change shows its old key."""

from __future__ import annotations

from civicsync.capture.changes import events_of, key_of, old_key_of
from civicsync.capture.replication import ReplicationStream
from fix_capture import Source, drain


def test_identity_full_events_are_keyed_by_the_declared_key(source: Source) -> None:
    with source.connect() as conn:
        conn.execute("ALTER TABLE items REPLICA IDENTITY FULL")
    stream = ReplicationStream(source.dsn, slot=source.slot, publication=source.publication)
    with source.connect() as conn:
        conn.execute("INSERT INTO items VALUES (1, 'secret name', 'x', 1.5)")
        conn.execute("UPDATE items SET n = 2 WHERE id = 1")
        conn.execute("UPDATE items SET id = 10 WHERE id = 1")
        conn.execute("DELETE FROM items WHERE id = 10")
    txns = drain(stream, 4)
    stream.close()
    assert all(c.is_key for c in txns[0].changes[0].relation.columns)  # what the server says under FULL
    declared = {"public.items": ["id"]}
    events = [e for t in txns for e in events_of(t, source.dbname, declared)]
    assert [(e.op, e.key) for e in events] == [("c", {"id": "1"}), ("u", {"id": "1"}), ("u", {"id": "10"}),
                                               ("d", {"id": "10"})]
    changes = [c for t in txns for c in t.changes]
    assert [old_key_of(c, ["id"]) for c in changes] == [None, None, {"id": "1"}, None]
    assert key_of(changes[3], ["id"]) == {"id": "10"}
    assert "secret name" in str(key_of(changes[0]))  # without the declared key: the whole row (why it is passed)
