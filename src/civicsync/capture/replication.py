"""The replication stream: pgoutput over psycopg2, assembled into whole source transactions.

psycopg 3 has no logical-replication streaming API, so this is the one place psycopg2 is used.
A broken connection (walsender terminated, network gone, server restart) is not the end: the
stream reconnects with capped exponential backoff and restarts from the last acknowledged
position; the server resends anything after the slot's confirmed position, and the applier skips
what it has already committed (positions are stored with the rows), so nothing is lost or applied
twice.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

import psycopg2
import psycopg2.extras

from civicsync.capture.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    TypeInfo,
    Update,
    Value,
    decode,
    decode_row,
    format_lsn,
)
from civicsync.config.models import Retry
from civicsync.db.connect import SESSION_OPTIONS
from civicsync.db.errors import describe, is_permanent, sqlstate_of
from civicsync.errors import ReplicationBrokenError as ReplicationBrokenError  # re-exported: it lives in the one tree
from civicsync.errors import Stopped as Stopped  # re-exported: it lives in the one tree
from civicsync.retry import backoff_delays

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "civicsync.heartbeat"


def _broken(slot: str, publication: str, source: str, exc: BaseException) -> ReplicationBrokenError:
    sqlstate = sqlstate_of(exc) or "?"
    if sqlstate == "55000" or "replication slot" in str(exc):
        remedy = f"the slot is gone or invalidated: recover with `civicsync cdc resync {source}`"
    elif "publication" in str(exc):
        remedy = f"publication {publication} is gone: run `civicsync db init`, then restart the worker"
    else:
        remedy = "check the capture role's REPLICATION attribute, login and grants (`civicsync db init`)"
    return ReplicationBrokenError(f"replication slot {slot}: {describe(exc)}; reconnecting will not help: {remedy}",
                                  sqlstate)


class RowChange(NamedTuple):
    """One row change inside a source transaction, values in the relation's column order.

    A named tuple: one is made for every captured row, and it is the cheapest immutable record."""

    relation: Relation
    op: Literal["c", "u", "d"]
    before: tuple[Value, ...] | None
    after: tuple[Value, ...] | None
    before_is_key_only: bool


@dataclass
class Transaction:
    """A committed source transaction, as the stream delivered it."""

    xid: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime
    origin: str | None = None
    changes: list[RowChange] = field(default_factory=list)
    truncated: list[tuple[Relation, bool]] = field(default_factory=list)  # (relation, cascade)
    messages: list[LogicalMessage] = field(default_factory=list)

    @property
    def is_heartbeat_only(self) -> bool:
        return not self.changes and not self.truncated and all(
            m.prefix == HEARTBEAT_PREFIX for m in self.messages)


class _Assembler:
    """Turns the message sequence into Transactions; keeps the relation cache."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._current: Transaction | None = None

    def reset(self) -> None:
        # After a reconnect the server resends the whole transaction; drop the partial one.
        self._current = None

    def feed(self, payload: bytes) -> Transaction | None:
        row = decode_row(payload)  # row changes (nearly every message) skip the message objects
        if row is not None:
            txn = self._current
            if txn is None:
                raise RuntimeError("row change outside a transaction in the replication stream")
            op, relation_id, old, key_only, new = row
            txn.changes.append(RowChange(self.relations[relation_id], op, old, new, key_only))
            return None
        msg = decode(payload)
        if isinstance(msg, Relation):
            self.relations[msg.relation_id] = msg
        elif isinstance(msg, Begin):
            self._current = Transaction(msg.xid, msg.final_lsn, 0, msg.commit_time)
        elif isinstance(msg, Commit):
            txn, self._current = self._current, None
            if txn is None:
                raise RuntimeError("commit without begin in the replication stream")
            txn.commit_lsn, txn.end_lsn, txn.commit_time = msg.commit_lsn, msg.end_lsn, msg.commit_time
            return txn
        elif isinstance(msg, TypeInfo):
            pass  # values are text; type names are only informative
        else:
            self._in_transaction(msg)
        return None

    def _in_transaction(self, msg: Origin | Insert | Update | Delete | Truncate | LogicalMessage) -> None:
        txn = self._current
        if txn is None:
            if isinstance(msg, LogicalMessage):
                return  # a non-transactional message outside any transaction
            raise RuntimeError(f"{type(msg).__name__} outside a transaction in the replication stream")
        if isinstance(msg, Origin):
            txn.origin = msg.name
        elif isinstance(msg, Insert | Update | Delete):
            raise AssertionError("row changes are decoded by decode_row")  # pragma: no cover
        elif isinstance(msg, Truncate):
            txn.truncated.extend((self.relations[r], msg.cascade) for r in msg.relation_ids)
        else:
            txn.messages.append(msg)


class ReplicationStream:
    """Whole committed transactions from one slot, reconnecting when the connection breaks."""

    def __init__(self, dsn: str, *, slot: str, publication: str, start_lsn: int = 0,
                 reconnect: Retry | None = None, stop: threading.Event | None = None,
                 source: str = "SOURCE") -> None:
        self._dsn = dsn
        self._slot = slot
        self._publication = publication
        self._source = source  # the config's connection name, for messages
        self._acked = start_lsn
        self._reconnect = reconnect or Retry(attempts=100, initial_delay=0.2, max_delay=5.0)
        self._stop = stop or threading.Event()  # wakes the reconnect backoff: a stop never waits it out
        self._conn: Any = None
        self._cur: Any = None
        self._assembler = _Assembler()
        self._connected_before = False
        self.reconnects = 0
        self.reconnecting = False  # True while the connection is lost and being re-established

    @property
    def acknowledged_lsn(self) -> int:
        return self._acked

    def _connect(self) -> None:
        self._conn = psycopg2.connect(self._dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                      application_name="civicsync:capture", options=SESSION_OPTIONS)
        self._cur = self._conn.cursor()
        self._cur.start_replication(
            slot_name=self._slot, decode=False, start_lsn=self._acked, status_interval=5,
            options={"proto_version": "1", "publication_names": self._publication, "messages": "true"})
        self._assembler.reset()

    def _connect_with_backoff(self) -> None:
        delays = backoff_delays(self._reconnect)
        self.reconnecting = self._connected_before
        for attempt in range(self._reconnect.attempts):
            try:
                self._connect()
                self.reconnecting = False
                if self._connected_before:
                    self.reconnects += 1
                    log.warning("replication slot %s: reconnected, resuming after %s", self._slot,
                                format_lsn(self._acked))
                self._connected_before = True
                return
            except psycopg2.Error as exc:
                if is_permanent(exc):
                    raise _broken(self._slot, self._publication, self._source, exc) from None
                if not isinstance(exc, psycopg2.OperationalError):
                    raise
                self.reconnecting = True
                if attempt == len(delays):
                    raise
                log.warning("replication slot %s: cannot connect (%s); retrying in %.1fs", self._slot,
                            describe(exc), delays[attempt])
                if self._stop.wait(delays[attempt]):
                    raise Stopped(f"replication slot {self._slot}: stopped while reconnecting") from None

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = self._cur = None

    def poll(self, timeout: float) -> Transaction | None:
        """The next committed transaction, or None if none arrived within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self._cur is None:
                self._connect_with_backoff()
            try:
                msg = self._cur.read_message()
                if msg is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    select.select([self._conn], [], [], min(remaining, 1.0))
                    continue
                txn = self._assembler.feed(msg.payload)
            except (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.DatabaseError) as exc:
                if is_permanent(exc):
                    self._drop_connection()
                    raise _broken(self._slot, self._publication, self._source, exc) from None
                log.warning("replication slot %s: connection lost (%s); reconnecting", self._slot,
                            describe(exc))
                self._drop_connection()
                continue
            if txn is not None and txn.end_lsn > self._acked:
                return txn

    def fileno(self) -> int | None:
        """The replication connection's socket (None while disconnected)."""
        return None if self._conn is None else int(self._conn.fileno())

    def acknowledge(self, lsn: int) -> None:
        """Tell the server everything up to ``lsn`` is durably applied (it may recycle that WAL)."""
        if lsn <= self._acked:
            return
        self._acked = lsn
        if self._cur is not None:
            try:
                self._cur.send_feedback(write_lsn=lsn, flush_lsn=lsn, apply_lsn=lsn, force=True)
            except psycopg2.Error as exc:
                # The next connection starts from this position anyway.
                log.warning("replication slot %s: acknowledgement not sent (%s)", self._slot, describe(exc))
                self._drop_connection()

    def suspend(self) -> None:
        """Let go of the server while the applier cannot take more (e.g. the target is down).

        A walsender whose client neither reads nor confirms what it was sent holds up that
        server's shutdown, so a stalled consumer disconnects; the next :meth:`poll` reconnects
        from the last acknowledged position and the server resends the rest.
        """
        if self._cur is not None:
            log.info("replication slot %s: pausing the stream until the target is back", self._slot)
            self._drop_connection()

    def close(self) -> None:
        self._drop_connection()


class PrefetchingStream:
    """A :class:`ReplicationStream` read and decoded on a thread of its own, ahead of the consumer.

    While the consumer applies a batch (most of that time waiting for its target database, with the
    GIL released) the next transactions are read and decoded: capture and apply overlap. The
    consumer's contract is unchanged: :meth:`poll` hands out whole transactions in commit order,
    :meth:`acknowledge` is called by the consumer after its commit and only then tells the server.
    Read-ahead is bounded (``max_changes``); the stream object is only touched under one lock.
    """

    def __init__(self, stream: ReplicationStream, *, max_changes: int) -> None:
        self._stream = stream
        self._max = max(1, max_changes)
        self._cond = threading.Condition()
        self._queue: deque[Transaction] = deque()
        self._queued = 0
        # The end of the last transaction queued: after a reconnect the server resends everything after
        # the acknowledged position, and what was read ahead must not be handed out twice.
        self._delivered = stream.acknowledged_lsn
        self._paused = False
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="civicsync-capture", daemon=True)
        self._thread.start()

    @property
    def acknowledged_lsn(self) -> int:
        return self._stream.acknowledged_lsn

    @property
    def reconnecting(self) -> bool:
        return self._stream.reconnecting

    @property
    def reconnects(self) -> int:
        return self._stream.reconnects

    def _read(self) -> None:
        stream, cond = self._stream, self._cond
        try:
            while True:
                with cond:
                    while not self._closing and (self._paused or self._queued >= self._max):
                        cond.wait(0.5)
                    if self._closing:
                        return
                    txn = stream.poll(0)  # only what has arrived: never waits under the lock
                    if txn is not None and txn.end_lsn <= self._delivered:
                        continue  # resent after a reconnect, and already queued or handed out
                    if txn is not None:
                        self._delivered = txn.end_lsn
                        self._queue.append(txn)
                        self._queued += len(txn.changes) + 1
                        cond.notify_all()
                    else:
                        fd = stream.fileno()
                if txn is not None:
                    # Hand the GIL over between transactions: a consumer back from its database
                    # must not wait a whole switch interval for it.
                    time.sleep(0)
                    continue
                if fd is None:
                    time.sleep(0.05)
                    continue
                with contextlib.suppress(OSError, ValueError):  # closed meanwhile by suspend()
                    select.select([fd], [], [], 0.1)
        except BaseException as exc:  # handed to the consumer by poll()
            with cond:
                self._error = exc
                cond.notify_all()

    def poll(self, timeout: float) -> Transaction | None:
        """The next committed transaction, or None if none arrived within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._paused:
                self._paused = False  # the consumer reads again: so may the stream
                self._cond.notify_all()
            while not self._queue:
                if self._error is not None:
                    raise self._error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            txn = self._queue.popleft()
            self._queued -= len(txn.changes) + 1
            self._cond.notify_all()
            return txn

    def acknowledge(self, lsn: int) -> None:
        with self._cond:
            self._stream.acknowledge(lsn)

    def suspend(self) -> None:
        """Let go of the server until the consumer polls again (see :meth:`ReplicationStream.suspend`);
        what was read ahead stays queued, and the stream does not hand it out twice."""
        with self._cond:
            self._paused = True
            self._stream.suspend()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._stream.close()


def emit_heartbeat(conn: Any) -> None:
    """Write a transactional logical message on the source so an idle slot has something to confirm."""
    conn.execute("SELECT pg_logical_emit_message(true, %s, now()::text)", (HEARTBEAT_PREFIX,))
