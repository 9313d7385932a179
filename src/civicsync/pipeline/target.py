"""A pipeline target that applies change events to flows: each event goes to the flows reading its
source table, through the flow's own transform (filters, masking) and the direct path's write, and
the checkpoint is stored in ``civicsync.cdc_positions`` in the same transaction.

The in-memory source's tests use it; it is the shape any source of source-row events plugs into.
Top-N flows are refused: they recompute partitions from the source database, which an event source
does not offer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.config import LoadedConfig
from civicsync.control import store
from civicsync.db.connect import connect
from civicsync.db.errors import classify
from civicsync.errors import FatalError
from civicsync.events import ChangeEvent
from civicsync.pipeline.source import Batch

Conn = psycopg.Connection[tuple[Any, ...]]


class TargetSession:
    """The one apply session a pipeline target applies, checkpoints and commits through.

    Subclasses say how a session is opened (:meth:`_open`); the Committer's ``rollback`` and
    ``reconnect`` are the same for every target: a lost session has nothing to roll back, and a new
    one is opened on next use."""

    conn: Conn | None = None

    def _open(self) -> Conn:
        raise NotImplementedError

    def connection(self) -> Conn:
        """The apply session (opened on first use and after :meth:`reconnect`)."""
        if self.conn is None or self.conn.closed:
            self.conn = self._open()
        return self.conn

    def rollback(self) -> None:
        """Roll back the attempt (a lost session has nothing left to roll back)."""
        if self.conn is not None and not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                self.conn.rollback()

    def reconnect(self) -> None:
        """Drop the session; the next attempt connects again."""
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def close(self) -> None:
        """Close the apply session."""
        self.reconnect()


class EventTarget(TargetSession):
    """Applies batches of :class:`~civicsync.events.ChangeEvent` to flows of one target database."""

    def __init__(self, config: LoadedConfig, flows: list[str], purpose: str) -> None:
        self.config = config
        self.appliers = [CdcFlowApplier(config, n) for n in flows]
        if any(a.cdc.top_n is not None for a in self.appliers):
            raise FatalError("a top_n flow reads its source database and cannot take events from another source")
        targets = {a.flow.target.connection for a in self.appliers}
        if len(targets) != 1:
            raise FatalError(f"the flows {', '.join(flows)} write to several databases ({sorted(targets)})")
        self._name = targets.pop()
        self.purpose = purpose
        self.dead_letters = 0

    @property
    def name(self) -> str:
        """The target connection's name."""
        return self._name

    def _open(self) -> Conn:
        return connect(self.config.dsn(self._name, "apply"), purpose=self.purpose, label=self._name)

    def apply(self, batch: Batch) -> None:
        """Every flow's share of the batch: its transform, its write, its dead letters."""
        with self._mapped("applying"):
            conn = self.connection()
            blocked = store.pending_keys(conn, [a.name for a in self.appliers])
            letters: list[store.CdcLetter] = []
            first = self.config.model.retries.dead_letters.initial_delay
            for applier in self.appliers:
                events = [e for e in batch.changes
                          if isinstance(e, ChangeEvent) and e.table == applier.flow.source.table]
                if not events:
                    continue
                outcome = FlowOutcome()
                waiting = {k for f, k in blocked if f == applier.name}
                applier.write(conn, applier.net_effect(events, waiting, outcome), outcome)
                letters += [(d.flow, d.source_key, d.op, d.lsn, d.kind, d.error, first, None)
                            for d in outcome.dead_letters]
            store.add_cdc_dead_letters(conn, letters)
            self.dead_letters += len(letters)

    def checkpoint(self, batch: Batch) -> None:
        """Store the batch's position per stream (refused in SQL if it would move back)."""
        with self._mapped("storing the checkpoint"):
            for stream, value in (batch.position or {}).items():
                store.write_position(self.connection(), stream, value, batch.commit_time)

    def commit(self) -> None:
        """Commit rows and checkpoint together."""
        with self._mapped("committing"):
            self.connection().commit()

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise classify(exc, f"{self.purpose}: {what} on {self._name}") from exc

