"""Kafka partition offsets kept in the target database (``civicsync.kafka_offsets``), written in the
same transaction as the rows they cover.

**Fencing.** Each worker remembers, per owned partition, the offset it read from the table when
it was assigned the partition (and then each offset it committed). It claims the row first in
the batch's transaction (``SELECT ... WHERE next_offset = <what I hold> FOR UPDATE``, :func:`claim`)
and advances it at the checkpoint with a compare-and-set (``UPDATE ... WHERE next_offset = <what I
hold>``, :func:`advance`). A worker that lost the partition in a rebalance (a zombie still applying a batch)
holds a stale offset: either the new owner has already advanced the row (the update matches no
row) or the new owner's transaction holds the row lock, and PostgreSQL re-checks the condition
on the committed row once the lock is released (READ COMMITTED re-evaluation) and again matches
nothing. Either way :class:`Fenced` is raised, the whole transaction (rows included) rolls back,
and the pipeline rewinds the worker to what the table holds before it applies anything else. No
broker-side generation is trusted: the database row is the single point of truth, so two workers
can never both commit the same records.
"""

from __future__ import annotations

from typing import Any

import psycopg

from civicsync.errors import Fenced as Fenced  # re-exported: it lives in the one tree

Conn = psycopg.Connection[tuple[Any, ...]]


def read_offsets(conn: Conn, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The stored next offsets of ``partitions`` (those never applied are absent)."""
    if not partitions:
        return {}
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM civicsync.kafka_offsets WHERE group_id = %s"
        " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
        (group, [t for t, _ in partitions], [p for _, p in partitions])).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def all_offsets(conn: Conn) -> list[tuple[str, str, int, int, str]]:
    """Every stored (group, topic, partition, next offset, owner), for status."""
    rows = conn.execute("SELECT group_id, topic, partition, next_offset, owner FROM civicsync.kafka_offsets"
                        " ORDER BY group_id, topic, partition").fetchall()
    return [(str(g), str(t), int(p), int(o), str(w)) for g, t, p, o, w in rows]


def advance(conn: Conn, group: str, topic: str, partition: int, held: int | None, new: int, owner: str) -> None:
    """Move a partition's offset from ``held`` (None: never stored) to ``new`` inside the caller's
    transaction, or raise :class:`Fenced` if another worker moved it first."""
    if held is None:
        cur = conn.execute(
            "INSERT INTO civicsync.kafka_offsets (group_id, topic, partition, next_offset, owner)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", (group, topic, partition, new, owner))
    else:
        cur = conn.execute(
            "UPDATE civicsync.kafka_offsets SET next_offset = %s, owner = %s, epoch = epoch + 1,"
            " updated_at = clock_timestamp() WHERE group_id = %s AND topic = %s AND partition = %s"
            " AND next_offset = %s", (new, owner, group, topic, partition, held))
    if cur.rowcount != 1:
        raise Fenced(f"{topic}[{partition}]: another worker of group {group} advanced it")


def claim(conn: Conn, group: str, topic: str, partition: int, held: int | None) -> None:
    """Check, first in a batch's transaction, that a partition's offset is still ``held`` (None: never
    stored), and lock its row until the batch commits; raise :class:`Fenced` if another worker moved
    it. Waiting on the new owner's lock ends in the re-check on its committed row, as for
    :func:`advance`, which then moves the offset in the same transaction."""
    if held is None:
        row = conn.execute("SELECT 1 FROM civicsync.kafka_offsets WHERE group_id = %s AND topic = %s"
                           " AND partition = %s", (group, topic, partition)).fetchone()
    else:
        row = conn.execute("SELECT 1 FROM civicsync.kafka_offsets WHERE group_id = %s AND topic = %s"
                           " AND partition = %s AND next_offset = %s FOR UPDATE",
                           (group, topic, partition, held)).fetchone()
    if (row is None) != (held is None):
        raise Fenced(f"{topic}[{partition}]: another worker of group {group} advanced it")
