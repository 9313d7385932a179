"""Applying one batch in the CDC worker's target transaction: every flow's share, dead letters,
key-by-key isolation after a failure, and the echo rule per flow.

A mixin of :class:`~civicsync.runtime.cdc.CdcWorker` (split out to keep each file to one job): it
uses the worker's appliers, target session, blocked keys and statistics. The batch's transaction
itself (apply, position, commit) is :class:`~civicsync.runtime.target.FlowTarget`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from civicsync import metrics
from civicsync.apply.cdc import CdcFlowApplier, DeadLetter, FlowOutcome
from civicsync.capture.changes import event_of
from civicsync.capture.pgoutput import format_lsn
from civicsync.capture.replication import RowChange, Transaction
from civicsync.control import store
from civicsync.db.errors import classify
from civicsync.db.origin import is_own
from civicsync.deadletters.cdc import ReplayFailedError, held_rows, letter_key
from civicsync.errors import TransientError
from civicsync.events import ChangeEvent
from civicsync.runtime.flowstops import FlowStops

if TYPE_CHECKING:
    from civicsync.config import LoadedConfig

log = logging.getLogger("civicsync.runtime.cdc")  # one logger for the worker, whichever file logs
Conn = psycopg.Connection[tuple[Any, ...]]
ISOLATION_CHUNK = 200


@dataclass
class WorkerStats:
    """What the worker has done so far (read by status, metrics, tests and the demo)."""

    transactions: int = 0
    events: int = 0
    batches: int = 0
    dead_letters: int = 0
    skipped_own: int = 0
    position: int = 0
    last_commit_time: datetime | None = None
    waiting_since: datetime | None = None  # source commit time of the oldest change read but not yet applied
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))  # source commit → target commit


class BatchApplying:
    """Applies a batch's work to the target (the CDC worker's apply half)."""

    config: LoadedConfig
    appliers: list[CdcFlowApplier]
    by_table: dict[str, list[CdcFlowApplier]]
    stats: WorkerStats
    slot: str
    target: str
    _tgt: Conn | None
    _db: str
    _blocked: set[tuple[str, str]]
    _isolated: int
    _skipped_by: dict[str, frozenset[str]]
    _held: dict[tuple[str, str], list[dict[str, Any]]]  # (flow, key) → transitions kept with its dead letter
    flow_stops: FlowStops
    _positions: dict[str, int] | None
    _batch_end: int
    _all_flows: frozenset[str]

    def source_reader(self) -> Conn:
        raise NotImplementedError

    def _reconnect_target(self) -> None:
        raise NotImplementedError

    def echo_skips(self, origin: str | None) -> frozenset[str]:
        """The flows of this worker that must not carry a change written with ``origin`` (the echo
        rule). An origin with civicsync's prefix that this config does not know (a flow since removed)
        is skipped by all, as an own write whose derivation cannot be told."""
        if origin is None or not is_own(self.config, origin):
            return frozenset()
        return self._skipped_by.get(origin, self._all_flows)

    def _skipped_by_all(self, table: str, skipping: frozenset[str]) -> bool:
        return bool(skipping) and all(a.name in skipping for a in self.by_table[table])

    def _apply_flow(self, conn: Conn, applier: CdcFlowApplier, table_work: TableWork,
                    isolate: bool) -> FlowOutcome:
        outcome = FlowOutcome()
        blocked = {k for f, k in self._blocked if f == applier.name}
        if applier.cdc.top_n is not None:
            events = table_work.events + [event_of(c, t, self._db) for c, t in table_work.changes]
            partitions = applier.partitions_of(events)
            outcome.events += len(events)
            # A partition that already waits in the dead letters keeps waiting (its replay recomputes it).
            for part in [p for p in partitions if json.dumps(partition_key(applier, {p}), sort_keys=True)
                         in blocked]:
                partitions.discard(part)
                outcome.dead_letters.append(DeadLetter(applier.name, partition_key(applier, {part}), "u", 0,
                                                       "blocked", "waiting behind an earlier failure of the same key"))
            units = [{p} for p in sorted(partitions, key=str)] if isolate else [partitions]
            for unit in units:
                def work(u: set[Any] = unit) -> None:
                    applier.recompute(conn, self.source_reader(), u, outcome)

                self._guarded(conn, isolate, outcome, applier, partition_key(applier, unit), work)
            return outcome
        changes = table_work.changes
        if changes:
            # Relations only change forward: the first and the last show a schema change of the batch.
            self.flow_stops.check(applier, changes[0][0].relation)
            self.flow_stops.check(applier, changes[-1][0].relation)
        if self._positions is not None:  # what this flow applied already (it resumes behind the others)
            after = self._positions.get(applier.name, 0)
            changes = [(c, t) for c, t in changes if t.end_lsn > after]
        if table_work.echoes:  # some flows of the table carry these changes and this one may not
            changes = [(c, t) for c, t in changes if applier.name not in self.echo_skips(t.origin)]
        # An event log keeps every transition of a waiting key (held with its dead letter for the
        # replay), so its waiting keys go through the transform too and are taken out afterwards.
        logged = applier.cdc.event_log is not None and bool(blocked)
        # A batch holds either the snapshot's rows or the stream's changes.
        pending = (applier.net_effect_of_changes(changes, set() if logged else blocked, outcome) if table_work.changes
                   else applier.net_effect(table_work.events, set() if logged else blocked, outcome))
        if logged:
            self._hold_waiting(applier, pending, blocked, outcome)
        for letter in outcome.dead_letters:
            self._blocked.add((applier.name, json.dumps(letter.source_key, sort_keys=True)))
        items = [{k: v} for k, v in pending.items()] if isolate else [pending]
        for item in items:
            action = next(iter(item.values()), None)
            key = action.source_key if action is not None else {}
            def write(i: dict[Any, Any] = item) -> None:
                applier.write(conn, i, outcome)

            self._guarded(conn, isolate, outcome, applier, key, write, action)
        return outcome

    def _hold_waiting(self, applier: CdcFlowApplier, pending: dict[Any, Any], blocked: set[str],
                      outcome: FlowOutcome) -> None:
        """Take the keys that wait behind a dead letter out of ``pending``; keep their transitions."""
        for tkey, action in list(pending.items()):
            skey = json.dumps(action.source_key, sort_keys=True)
            if skey not in blocked:
                continue
            del pending[tkey]
            self._hold(applier, action)
            outcome.dead_letters.append(DeadLetter(applier.name, action.source_key, "u", action.lsn, "blocked",
                                                   "waiting behind an earlier failure of the same key"))

    def _hold(self, applier: CdcFlowApplier, action: Any) -> None:
        """Keep the transitions of an event-log flow's failed or waiting key for its dead letter."""
        history = getattr(action, "history", None)
        if applier.cdc.event_log is not None and history:
            key = (applier.name, json.dumps(action.source_key, sort_keys=True))
            self._held.setdefault(key, []).extend(held_rows(applier, history))

    def _guarded(self, conn: Conn, isolate: bool, outcome: FlowOutcome, applier: CdcFlowApplier,
                 key: dict[str, Any], work: Callable[[], None], action: Any = None) -> None:
        if not isolate:
            work()
            return
        self._isolated += 1
        if self._isolated % ISOLATION_CHUNK == 0:
            # Thousands of savepoints in one transaction get slow (subtransaction overflow); every
            # write here is idempotent and the position is written last, so commit part-way.
            self._store_dead_letters(conn, outcome.dead_letters)
            self.stats.dead_letters += len(outcome.dead_letters)
            outcome.dead_letters.clear()
            conn.commit()
        try:
            with conn.transaction():  # a savepoint inside the batch transaction
                work()
        except psycopg.Error as exc:
            error = classify(exc, f"{applier.flow.target.table}")
            if isinstance(error, TransientError):
                raise
            kind = f"sqlstate_{getattr(error, 'sqlstate', None) or 'unknown'}"
            self._hold(applier, action)
            outcome.dead_letters.append(DeadLetter(applier.name, key, "u", getattr(action, "lsn", 0), kind,
                                                   str(error)))
            self._blocked.add((applier.name, json.dumps(key, sort_keys=True)))

    def _store_dead_letters(self, conn: Conn, letters: list[DeadLetter]) -> None:
        for d in letters:
            if d.kind != "blocked":  # a key waiting behind its own earlier failure is not a new dead letter
                metrics.DEAD_LETTERS_CREATED.labels(d.flow).inc()
        first = self.config.model.retries.dead_letters.initial_delay
        store.add_cdc_dead_letters(conn, [
            (d.flow, self._stored_key(d), d.op, d.lsn, d.kind, d.error, first,
             self._held.pop((d.flow, json.dumps(d.source_key, sort_keys=True)), None)) for d in letters])
        for d in letters:
            if d.kind != "blocked":
                log.warning("flow %s: dead-lettered %s at %s: %s", d.flow, self._stored_key(d), format_lsn(d.lsn),
                            d.error)

    def _stored_key(self, letter: DeadLetter) -> dict[str, Any]:
        """A dead letter's key as stored: the declared key columns only, never a whole row (a table
        with REPLICA IDENTITY FULL sends every column as its identity)."""
        applier = next(a for a in self.appliers if a.name == letter.flow)
        try:
            return letter_key(applier, letter.source_key)
        except ReplayFailedError:
            return dict(letter.source_key)  # a partition of a top-N flow, or a key as the event gave it


@dataclass
class TableWork:
    """One source table's share of a batch."""

    truncated: bool = False
    echoes: bool = False  # holds a change that some flow of the table skips (the echo rule)
    events: list[ChangeEvent] = field(default_factory=list)  # the initial snapshot's rows
    changes: list[tuple[RowChange, Transaction]] = field(default_factory=list)  # the stream's, as captured

    @property
    def size(self) -> int:
        return len(self.events) + len(self.changes)


class Unavailable(TransientError):
    pass


def rollback(conn: Conn) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


def partition_key(applier: CdcFlowApplier, unit: set[Any]) -> dict[str, Any]:
    top = applier.cdc.top_n
    assert top is not None
    if len(unit) != 1:
        return {}
    (values,) = unit
    return dict(zip(top.partition_by, values, strict=True))
