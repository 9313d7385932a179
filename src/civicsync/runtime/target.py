"""The CDC worker's pipeline target: one batch of source transactions (or of initial-snapshot rows)
applied to every flow of the worker, and the slot's position written, in one target transaction.

:class:`FlowTarget` is what the :class:`~civicsync.pipeline.committer.Committer` drives (apply →
checkpoint → commit, retried as a whole on transient errors). A non-transient error in a batch asks
the committer to write it again at once key by key (:class:`NeedsIsolation`): the failing keys go to
the dead letters and the rest commits. A missing grant stops the worker instead: dead-lettering key
after key would hide a deployment fault.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg

from civicsync import metrics
from civicsync.apply.cdc import DeadLetter, FlowOutcome
from civicsync.capture.replication import Transaction
from civicsync.control import store
from civicsync.db.errors import classify
from civicsync.errors import SchemaMismatchError, TransientError
from civicsync.events import ChangeEvent
from civicsync.pipeline.committer import NeedsIsolation
from civicsync.pipeline.source import Batch
from civicsync.provision.roles import MissingGrantError
from civicsync.runtime.applying import BatchApplying, TableWork, Unavailable, rollback

log = logging.getLogger("civicsync.runtime.cdc")  # one logger for the worker, whichever file logs


class FlowTarget:
    """Applies a CDC worker's batches to its flows' target database (the worker holds the session)."""

    def __init__(self, worker: BatchApplying) -> None:
        self.worker = worker
        self._batch: Batch | None = None  # the batch ``_work`` was built for (retries reuse it)
        self._work: dict[str, TableWork] = {}
        self._isolate = False  # the current batch is applied key by key
        self._letters: list[DeadLetter] = []
        self._outcomes: list[tuple[str, FlowOutcome]] = []
        self.applied_events = 0  # the changes of the batch last committed (for the worker's figures)

    @property
    def name(self) -> str:
        """The target connection's name."""
        return self.worker.target

    # ------------------------------------------------------------------ the Target protocol

    def apply(self, batch: Batch) -> None:
        """Every flow's share of the batch, and the dead letters of the keys that failed."""
        if batch is not self._batch:
            self._batch, self._work, self._isolate = batch, self._work_of(batch), False
        w = self.worker
        if w._tgt is None or w._tgt.closed:
            w._reconnect_target()
            if w._tgt is None:
                raise Unavailable(f"{w.target} database is unavailable")
        conn = w._tgt
        w._held = {}
        self._letters, self._outcomes = [], []
        with self._mapped(conn):
            for table, table_work in self._work.items():
                for applier in w.by_table[table]:
                    if applier.name in w.flow_stops.stopped:
                        continue  # stopped by a schema change: its position stays where it stopped
                    if table_work.truncated and applier.cdc.truncate == "propagate":
                        applier.truncate_target(conn)
                    try:
                        outcome = w._apply_flow(conn, applier, table_work, self._isolate)
                    except SchemaMismatchError as exc:
                        if applier.cdc.top_n is not None:
                            raise
                        relation = table_work.changes[-1][0].relation if table_work.changes else None
                        w.flow_stops.stop(applier, relation, exc, w.stats.position)
                        continue  # nothing of this flow was written (the error comes before its SQL)
                    self._outcomes.append((applier.name, outcome))
                    self._letters += outcome.dead_letters
            w._store_dead_letters(conn, self._letters)

    def checkpoint(self, batch: Batch) -> None:
        """The slot's new position (and the stopped flows' own), in the batch's transaction."""
        w = self.worker
        assert w._tgt is not None and batch.position is not None
        lsn = batch.position[w.slot]
        with self._mapped(w._tgt):
            if w.flow_stops.stopped or w.flow_stops.behind:
                w.flow_stops.save(w._tgt, w._batch_end, lsn)
            store.write_position(w._tgt, w.slot, lsn, batch.commit_time)

    def commit(self) -> None:
        """Commit rows, dead letters and position together; count what was applied."""
        w = self.worker
        assert w._tgt is not None
        with self._mapped(w._tgt):
            w._tgt.commit()
        self.applied_events = sum(t.size for t in self._work.values())
        self._batch, self._work, self._isolate = None, {}, False
        w.stats.dead_letters += len(self._letters)
        for flow, outcome in self._outcomes:
            metrics.CDC_APPLIED.labels(flow).inc(outcome.events)
            if outcome.conflicts:
                metrics.CONFLICTS.labels(flow).inc(outcome.conflicts)

    def rollback(self) -> None:
        """Roll back the attempt (a lost session has nothing left to roll back)."""
        if self.worker._tgt is not None and not self.worker._tgt.closed:
            rollback(self.worker._tgt)

    def reconnect(self) -> None:
        """A new apply session (or none yet: the next attempt tries again)."""
        self.worker._reconnect_target()

    # ------------------------------------------------------------------ building a batch's work

    def _work_of(self, batch: Batch) -> dict[str, TableWork]:
        """Each source table's share: snapshot rows (change events) or the stream's transactions."""
        w = self.worker
        work: dict[str, TableWork] = {}
        snapshot = [e for e in batch.changes if isinstance(e, ChangeEvent)]
        for event in snapshot:
            work.setdefault(event.table, TableWork()).events.append(event)
        fresh: list[Transaction] = [t for t in batch.changes if isinstance(t, Transaction)]
        if not fresh:
            return work
        w.stats.waiting_since = fresh[0].commit_time  # the oldest change read but not yet applied
        # A flow resuming after a schema stop re-reads what the others have applied: each takes its own.
        w._positions = ({a.name: w.flow_stops.position(a.name, w.stats.position) for a in w.appliers}
                        if fresh[0].end_lsn <= w.stats.position else None)
        for txn in fresh:
            skipping = w.echo_skips(txn.origin)
            if skipping:
                w.stats.skipped_own += 1
            for relation, _cascade in txn.truncated:
                table = relation.qualified_name
                if table in w.by_table and not w._skipped_by_all(table, skipping):
                    # Everything before a TRUNCATE of the table is moot; what follows still applies.
                    work[table] = TableWork(truncated=True)
            for change in txn.changes:
                table = change.relation.qualified_name
                if table in w.by_table and not w._skipped_by_all(table, skipping):
                    table_work = work.get(table)
                    if table_work is None:
                        table_work = work[table] = TableWork()
                    table_work.changes.append((change, txn))
                    table_work.echoes = table_work.echoes or bool(skipping)
        for table, table_work in work.items():
            for applier in w.by_table[table]:
                metrics.CDC_CAPTURED.labels(applier.name).inc(table_work.size)
        w._batch_end = fresh[-1].end_lsn
        return work

    @contextlib.contextmanager
    def _mapped(self, conn: psycopg.Connection[tuple[Any, ...]]) -> Iterator[None]:
        """A database error of the batch as the committer needs it: transient (retry), a missing
        grant (stop), or a reason to apply the batch key by key (once; then it is raised)."""
        w = self.worker
        try:
            yield
        except psycopg.Error as exc:
            rollback(conn)
            error = classify(exc, f"slot {w.slot}: applying to {w.target}")
            if isinstance(error, TransientError):
                raise error from exc
            if isinstance(exc, psycopg.errors.InsufficientPrivilege) and "row-level security" not in str(exc):
                # A missing grant is the deployment's fault, not the rows': dead-lettering key after
                # key would hide it. Stop; the supervisor restarts with backoff until it is granted.
                raise MissingGrantError(f"{w.target}: {error} (grant it to the apply role, see `civicsync db "
                                        "init`)") from exc
            if self._isolate:
                raise error from exc
            log.warning("slot %s: batch failed (%s); isolating the failing keys", w.slot, error)
            self._isolate = True
            raise NeedsIsolation() from exc
