"""Retrying due dead letters between batches: what every worker that applies event-path flows does,
the native CDC worker (civicsync.runtime.cdc) and the Kafka group worker (civicsync.kafka.consume).

About once a second (:data:`RETRY_EVERY`) a round replays the worker's due dead letters with
:func:`~civicsync.deadletters.cdc.replay_due` and the config's ``retries.dead_letters`` backoff. A
round that fails is logged (SQLSTATE and names, never row values) and the next round tries again: it
never breaks the worker's apply loop. Workers that share flows (the N workers of one Kafka group)
name a ``lock``: a round then runs under a session-level advisory lock on the target, so one worker
retries at a time and the others skip that round.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from civicsync.config import LoadedConfig
from civicsync.config.models import Retry
from civicsync.db.connect import connect
from civicsync.db.errors import describe
from civicsync.deadletters.cdc import ReplayHost, replay_due
from civicsync.errors import CivicsyncError

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[Any, ...]]
RETRY_EVERY = 1.0  # seconds between two rounds of one worker


class SourceReader:
    """A plain (non-replication) session on a flows' source, as the capture role (the role
    ``civicsync dlq replay`` reads with too): what a replay reads the current rows through. Opened
    on first use and again after it was lost or dropped; closed with the worker."""

    def __init__(self, config: LoadedConfig, source: str, purpose: str) -> None:
        self.config = config
        self.source = source
        self.purpose = purpose
        self._conn: Conn | None = None

    def session(self) -> Conn:
        """The session (opened if there is none, or the last one was lost)."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.config.dsn(self.source, "capture"), purpose=self.purpose, autocommit=True,
                                 label=self.source)
        return self._conn

    def close(self) -> None:
        """Close the session; the next use opens a new one."""
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


class DueRetries:
    """Between a worker's batches: every :data:`RETRY_EVERY` seconds, one round of its due dead letters.

    ``before`` runs first in a round, on the target session (the native worker reloads its blocked
    keys there: an operator may have replayed or discarded entries meanwhile). ``lock`` names the
    advisory lock that lets one worker of several retry at a time. ``stop`` ends a round between two
    dead letters, so a stop is not held up by a long one."""

    def __init__(self, host: ReplayHost, retry: Retry, what: str, *, stop: threading.Event | None = None,
                 lock: str | None = None, before: Callable[[Conn], None] | None = None,
                 every: float = RETRY_EVERY) -> None:
        self.host = host
        self.retry = retry
        self.what = what  # names the worker in logs ("slot x", "group g")
        self.stop = stop
        self.lock = lock
        self.before = before
        self.every = every
        self.rounds = 0  # rounds run (not those skipped because another worker held the lock)
        self.replayed = 0  # dead letters that converged in them
        self.skipped = 0  # rounds skipped: another worker held the lock
        self._next = time.monotonic() + every

    def restart(self) -> None:
        """The first round comes one interval from now (when a worker starts streaming)."""
        self._next = time.monotonic() + self.every

    def maybe(self) -> int:
        """A round if one is due (returns how many dead letters converged), else nothing."""
        if time.monotonic() < self._next:
            return 0
        try:
            return self.round()
        finally:
            self._next = time.monotonic() + self.every

    def round(self) -> int:
        """One round now: re-apply the due dead letters from the source's current rows; returns how
        many converged (0 when another worker holds the lock, or the round failed: it is logged)."""
        conn: Conn | None = None
        try:
            conn = self.host.target_connection
            if self.lock is not None and not self._try_lock(conn):
                self.skipped += 1
                return 0
            try:
                if self.before is not None:
                    self.before(conn)
                self.rounds += 1
                replayed = replay_due(self.host, self.retry, stop=self.stop).replayed
                self.replayed += replayed
                return replayed
            finally:
                if self.lock is not None:
                    self._unlock(conn)
        except (psycopg.Error, CivicsyncError) as exc:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            log.warning("%s: dead-letter retry failed (%s); the next round tries again", self.what,
                        describe(exc) if isinstance(exc, psycopg.Error) else exc)
            return 0

    def _try_lock(self, conn: Conn) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.lock,)).fetchone()
        conn.commit()  # a session-level lock: held until unlocked (or the session ends), not until commit
        return bool(row and row[0])

    def _unlock(self, conn: Conn) -> None:
        try:
            conn.rollback()  # whatever a failure left open (an aborted transaction refuses the unlock)
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.lock,))
            conn.commit()
        except psycopg.Error:
            conn.close()  # the lock ends with the session; the worker opens a new one on next use


__all__ = ["RETRY_EVERY", "DueRetries", "SourceReader"]
