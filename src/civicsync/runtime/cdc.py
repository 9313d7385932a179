"""The CDC worker: one replication slot on a source database → its flows' target database.

Loop (civicsync.pipeline): collect whole source transactions into a batch (up to
``batch_max_changes`` changes or ``batch_max_wait_ms`` after the first; runtime/pgsource.py), apply
every flow's share of the batch and the slot's new position in **one** target transaction
(runtime/target.py, through the pipeline's Committer), and only after that commit acknowledge the
position to the source (Quix Streams' rule: flush the sink, then commit the offset). On start,
anything at or below the stored position is skipped, so a crash anywhere neither loses nor
double-applies a change.

Writes are marked with a replication origin that names the writer; a captured change is never
carried back to the table it was derived from, and flows on everywhere else (the echo rule,
db/origin.py). An idle source still advances its slot through heartbeats. A
constraint error isolates the failing keys (savepoint per key) into the dead letters; the rest of
the batch commits.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from civicsync import metrics
from civicsync.apply.cdc import CdcFlowApplier
from civicsync.capture.pgoutput import format_lsn
from civicsync.capture.replication import (
    PrefetchingStream,
    ReplicationBrokenError,
    ReplicationStream,
    Stopped,
    Transaction,
    emit_heartbeat,
)
from civicsync.capture.slots import SlotInfo, check_wal_level, drop_slot, ensure_publication, ensure_slot, slot_info
from civicsync.capture.snapshot import begin_in_snapshot, slot_with_snapshot
from civicsync.config import LoadedConfig
from civicsync.config.models import publication_name, slot_name
from civicsync.control import store
from civicsync.db.catalog import replica_identity
from civicsync.db.connect import connect
from civicsync.db.errors import describe, mapped_errors
from civicsync.db.origin import echo_origins, origin_for, setup_origin, writers
from civicsync.deadletters.cdc import ReplayCounts, replay_due
from civicsync.deadletters.rounds import DueRetries, SourceReader
from civicsync.errors import CivicsyncError, FatalError
from civicsync.events import ChangeEvent, Image, SourceInfo
from civicsync.extract.source import stream_rows
from civicsync.pipeline.committer import Committer, Pipeline
from civicsync.pipeline.source import Batch
from civicsync.provision.roles import MissingGrantError, cdc_tables, check_apply, check_capture
from civicsync.runtime.applying import BatchApplying, WorkerStats
from civicsync.runtime.flowstops import FlowStops
from civicsync.runtime.pgsource import PgoutputSource, Stream
from civicsync.runtime.target import FlowTarget

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[Any, ...]]


class CdcWorker(BatchApplying):
    """Streams one source connection's CDC flows into their target database."""

    def __init__(self, config: LoadedConfig, source: str, flows: list[str] | None = None,
                 stop: threading.Event | None = None,
                 on_batch: Callable[[list[Transaction]], None] | None = None, resync: bool = False,
                 carried: bool = False) -> None:
        self.config = config
        self.source = source
        model = config.model
        if carried:  # dead-letter replay only (re-reads source rows, no slot): Kafka-carried flows too
            names = model.streaming_flows(source, flows)
        else:  # the native path: never a flow that Kafka carries (one carrier per flow)
            model.refuse_kafka_carried(flows)
            names = model.native_flows(source, flows)
        if not names:
            on_kafka = model.kafka_flows([n for n in model.streaming_flows(source, flows)])
            if on_kafka:
                raise FatalError(f"every CDC flow of connection {source!r} ({', '.join(on_kafka)}) is carried by "
                                 "Kafka: no native worker runs for it (civicsync capture + apply --group do)")
            raise FatalError(f"no CDC flow reads from connection {source!r}")
        targets = {model.flows[n].target.connection for n in names}
        if len(targets) != 1:
            raise FatalError(f"the CDC flows of {source!r} write to several databases ({sorted(targets)}); "
                             "run one worker per target with --flow")
        self.target = targets.pop()
        self.flows = names
        self.appliers = [CdcFlowApplier(config, n) for n in names]
        self.by_table: dict[str, list[CdcFlowApplier]] = {}
        for a in self.appliers:
            self.by_table.setdefault(a.flow.source.table, []).append(a)
        self.slot = slot_name(model, source)
        self.publication = publication_name(model, source)
        self.capture = model.connections[source].capture
        self.stop_event = stop or threading.Event()
        self.on_batch = on_batch
        self.resync = resync  # replace a lost slot: new slot, snapshot applied over what the target holds
        self.stats = WorkerStats()
        self.ready = threading.Event()  # set once prepared (slot, snapshot, position) and streaming
        self.origin = origin_for(config, f"cdc_{self.slot}")
        # The echo rule (db/origin.py): per origin, the flows of this worker that do not carry its changes.
        skips = {a.name: echo_origins(config, a.name) for a in self.appliers}
        self._skipped_by: dict[str, frozenset[str]] = {
            o: frozenset(n for n, s in skips.items() if o in s) for o in writers(config)}
        self._all_flows = frozenset(self.flows)
        self._blocked: set[tuple[str, str]] = set()
        self._isolated = 0
        self._held = {}
        self.flow_stops = FlowStops(config, self.slot)
        self._positions: dict[str, int] | None = None  # per flow, while a batch holds what some applied
        self._batch_end = 0
        self._tgt: Conn | None = None
        self._reader = SourceReader(config, source, f"cdc-read:{self.slot}")
        self._stream: Stream | None = None
        self._db = ""
        # The pipeline's target side: apply, position and commit in one transaction, retried as a whole.
        self.flow_target = FlowTarget(self)
        self.committer = Committer(self.flow_target, model.retries.target_commit, self.stop_event, f"slot {self.slot}")
        self._next_beat = 0.0
        self.dead_letter_retries = DueRetries(self, model.retries.dead_letters, f"slot {self.slot}",
                                              stop=self.stop_event, before=self._reload_blocked)

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        """Check the source, create publication and slot, connect the target, load the position."""
        try:
            self._prepare()
        except BaseException:
            self.close()  # a failed start must not leave sessions (and their replication origin) open
            raise

    def _prepare(self) -> None:
        with connect(self.config.dsn(self.source, "capture"), purpose="cdc-setup", autocommit=True,
                     label=self.source) as src:
            check_wal_level(src)
            tables = sorted(self.by_table)
            check_capture(src, tables)
            for a in self.appliers:
                if a.cdc.top_n is not None and replica_identity(src, a.flow.source.table) != "f":
                    raise FatalError(
                        f"flow {a.name} ranks rows per partition and must see the old row of updates and "
                        f"deletes: run ALTER TABLE {a.flow.source.table} REPLICA IDENTITY FULL on {self.source}")
            self._ensure_publication(src, tables)
            self._db = src.info.dbname
            existing = slot_info(src, self.slot)
            if self._tgt is None or self._tgt.closed:
                self._connect_target()
            assert self._tgt is not None
            self.stats.position = store.read_position(self._tgt, self.slot)
            self.committer.position[self.slot] = self.stats.position  # the checkpoint only moves on from here
            self.flow_stops.load(self._tgt, self.flows)
            for a in self.appliers:
                if a.cdc.top_n is None and store.narrow_dead_letter_keys(self._tgt, a.name, list(a.source.key)):
                    log.warning("flow %s: dead letters that held whole rows as keys now hold only the key "
                                "columns %s", a.name, ", ".join(a.source.key))
            self._blocked = store.pending_keys(self._tgt, self.flows)
            self._tgt.commit()
            existing = self._usable_slot(src, existing)
            if self.capture.snapshot == "never":
                if ensure_slot(src, self.slot):
                    log.info("created replication slot %s on %s (no initial snapshot)", self.slot, self.source)
                return
            if existing is not None and self.stats.position == 0 and not existing.active:
                log.warning("slot %s exists but nothing was ever applied from it: an earlier initial snapshot did "
                            "not finish; starting it again", self.slot)
                drop_slot(src, self.slot)
                existing = None
        if existing is None:
            self._initial_snapshot()

    def _usable_slot(self, src: Conn, existing: SlotInfo | None) -> SlotInfo | None:
        """The slot to stream from, or None to create one (with a snapshot unless the source says
        ``snapshot: never``). A slot that is gone or invalidated after changes were applied from it
        means changes may be lost: that stops the worker (a new slot would silently skip them), unless
        this is a resync or the source leaves what it misses to reconciliation (``snapshot: never``)."""
        if self.stats.position == 0 or (existing is not None and not existing.lost and not self.resync):
            return existing
        if self.capture.snapshot == "never" and not self.resync:
            # The source is declared to start without a snapshot: what a lost slot missed is left to the
            # flows' reconciliations (hybrid flows repair it hourly), as at the very first start.
            log.warning("slot %s on %s is gone or invalidated; changes since %s are left to reconciliation "
                        "(capture.snapshot: never); making a new slot", self.slot, self.source,
                        format_lsn(self.stats.position))
            if existing is not None:
                drop_slot(src, self.slot)
            return None
        if not self.resync:
            what = "gone" if existing is None else "invalidated (max_slot_wal_keep_size)"
            raise ReplicationBrokenError(
                f"replication slot {self.slot} on {self.source} is {what}, but flows {', '.join(self.flows)} were "
                f"applied from it up to {format_lsn(self.stats.position)}: changes since then may be lost. Recover "
                f"with `civicsync cdc resync {self.source}` (a new slot and snapshot, then reconciliation)",
                "42704" if existing is None else "55000")
        if existing is not None:
            drop_slot(src, self.slot)
        log.warning("slot %s on %s: resynchronising from a new slot and snapshot", self.slot, self.source)
        return None

    def _ensure_publication(self, src: Conn, tables: list[str]) -> None:
        published = {f"{r[0]}.{r[1]}" for r in src.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (self.publication,))}
        if set(tables) <= published:
            return  # tables of other flows may be published too; their events are ignored here
        try:
            ensure_publication(src, self.publication, tables)
        except psycopg.errors.InsufficientPrivilege:
            raise MissingGrantError(
                f"publication {self.publication} on {self.source} must publish {', '.join(tables)} and the "
                f"capture role {src.info.user} may not change it: run `civicsync db init`") from None

    def _initial_snapshot(self) -> None:
        """Create the slot with an exported snapshot, apply every row as of that snapshot, then
        store the slot's consistent point as the position (last, so an interrupted snapshot is
        simply started again)."""
        chunk_size = self.capture.batch_max_changes
        started = time.monotonic()
        rows = 0
        with slot_with_snapshot(self.config.dsn(self.source, "capture"), self.slot) as (lsn, snapshot), \
                connect(self.config.dsn(self.source, "capture"), purpose=f"snapshot:{self.slot}", autocommit=True,
                        label=self.source) as snap:
            begin_in_snapshot(snap, snapshot)
            for table, appliers in self.by_table.items():
                columns = list(appliers[0].source.columns)
                key = list(appliers[0].source.key)
                schema, name = table.split(".", 1)
                info = SourceInfo(self._db, schema, name, lsn, 0, datetime.now(UTC))
                chunk: list[ChangeEvent] = []
                for row in stream_rows(snap, table, columns):
                    after: Image = dict(zip(columns, row, strict=True))
                    chunk.append(ChangeEvent("r", None, after, info, {k: row[columns.index(k)] for k in key}))
                    if len(chunk) >= chunk_size:
                        self.committer.commit(Batch(chunk, None))  # rows only: the position comes last
                        rows += len(chunk)
                        chunk = []
                if chunk:
                    self.committer.commit(Batch(chunk, None))
                    rows += len(chunk)
            snap.execute("ROLLBACK")
            self.committer.commit(Batch([], {self.slot: lsn}))
        self.stats.position = lsn
        log.info("slot %s: initial snapshot of %s applied (%d rows in %.1fs), streaming from %s", self.slot,
                 ", ".join(self.by_table), rows, time.monotonic() - started, format_lsn(lsn))

    def close(self) -> None:
        """Close the worker's database sessions (run() does this itself when it ends)."""
        if self._tgt is not None and not self._tgt.closed:
            self._tgt.close()
        self._reader.close()

    @property
    def target_connection(self) -> Conn:
        """The apply session on the target (after prepare())."""
        if self._tgt is None:
            raise FatalError("the worker is not connected to its target (call prepare() first)")
        return self._tgt

    def unblock(self, flow: str, key: dict[str, Any]) -> None:
        """A dead-lettered key converged: its later events may flow again."""
        self._blocked.discard((flow, json.dumps(key, sort_keys=True)))

    def _connect_target(self) -> None:
        self._tgt = connect(self.config.dsn(self.target, "apply"), purpose=f"cdc-apply:{self.slot}",
                            label=self.target)
        check_apply(self._tgt, cdc_tables(self.config, self.target).applied)
        try:
            setup_origin(self._tgt, self.origin)
        except psycopg.errors.InsufficientPrivilege:
            raise MissingGrantError(
                f"the apply role {self._tgt.info.user} may not create replication origin {self.origin}: "
                "run `civicsync db init` (it creates the origins)") from None

    def source_reader(self) -> Conn:
        """A plain (non-replication) session on the source, as the capture role."""
        return self._reader.session()

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Stream until the stop event is set; then flush, commit and acknowledge what was read."""
        try:
            self.prepare()
        except Stopped as stopped:
            log.info("%s before streaming began", stopped)
            self.close()
            return
        except BaseException:
            self.close()  # a failed start must not leave sessions (and their replication origin) open
            raise
        self.ready.set()
        # Read and decoded on a thread of its own, so the next batch is captured while this one commits.
        stream = PrefetchingStream(
            ReplicationStream(self.config.dsn(self.source, "capture"), slot=self.slot, publication=self.publication,
                              start_lsn=self.flow_stops.start_position(self.stats.position), stop=self.stop_event,
                              source=self.source, reconnect=self.config.model.retries.source_reconnect),
            max_changes=2 * self.capture.batch_max_changes)
        self._stream = stream
        try:
            self._stream_until_stopped(stream)
        except Stopped as stopped:
            log.info("%s; what it held unapplied is received again after the next start", stopped)
        finally:
            stream.close()
            self.close()

    def _stream_until_stopped(self, stream: Stream) -> None:
        source = PgoutputSource(stream, self.slot, lambda wait: self._collect(stream, wait),
                                floor=lambda: self.flow_stops.start_position(self.stats.position),
                                stored=lambda: self.stats.position, ack_at=self.flow_stops.start_position)
        self._next_beat = time.monotonic() + self.capture.heartbeat_seconds
        self.dead_letter_retries.restart()
        Pipeline(source, self.committer, on_commit=self._committed).run(0.2, between=self._housekeeping)

    def _housekeeping(self) -> None:
        """Between batches: heartbeats (an idle source still advances its slot) and due dead letters."""
        now = time.monotonic()
        if now >= self._next_beat:
            self._heartbeat()
            self._next_beat = now + self.capture.heartbeat_seconds
        if self._tgt is not None:
            self.dead_letter_retries.maybe()

    def _collect(self, stream: Stream, first_wait: float) -> list[Transaction]:
        """Whole transactions for one batch: whatever the stream already holds (up to
        ``batch_max_changes``), waiting at most ``batch_max_wait_ms`` after the first for more. A
        backlog therefore makes big batches and a trickle makes immediate small ones."""
        batch: list[Transaction] = []
        changes = 0
        deadline = 0.0
        while not self.stop_event.is_set():
            wait = first_wait if not batch else max(0.0, deadline - time.monotonic())
            txn = stream.poll(wait)
            if txn is None:
                break  # idle (empty batch), or nothing more arrived in time
            if not batch:
                deadline = time.monotonic() + self.capture.batch_max_wait_ms / 1000
            batch.append(txn)
            changes += len(txn.changes)
            if changes >= self.capture.batch_max_changes:
                break
        return batch

    def _heartbeat(self) -> None:
        try:
            emit_heartbeat(self.source_reader())
        except psycopg.Error as exc:
            log.warning("slot %s: heartbeat not written (%s)", self.slot, describe(exc))
            self._reader.close()

    # ------------------------------------------------------------------ after a batch committed

    def _committed(self, batch: Batch) -> None:
        """The pipeline committed a stream batch: advance the worker's position and figures."""
        fresh: list[Transaction] = list(batch.changes)
        last = fresh[-1]
        assert batch.position is not None
        position = batch.position[self.slot]
        self.flow_stops.advanced(last.end_lsn, position)
        self.stats.transactions += len(fresh)
        self.stats.events += self.flow_target.applied_events
        self.stats.batches += 1
        self.stats.position = position
        self.stats.last_commit_time = last.commit_time
        committed = datetime.now(UTC)
        latencies = [(committed - t.commit_time).total_seconds() for t in fresh if t.changes]
        self.stats.latencies.extend(latencies)
        histogram = metrics.CDC_APPLY_LATENCY.labels(self.source)
        for seconds in latencies:
            histogram.observe(seconds)
        if self.on_batch is not None:
            self.on_batch(fresh)
        self.stats.waiting_since = None

    def _reconnect_target(self) -> None:
        if self._tgt is not None:
            self._tgt.close()
        try:
            self._connect_target()
        except CivicsyncError as exc:
            log.warning("slot %s: cannot reconnect to %s yet (%s)", self.slot, self.target, exc)
            self._tgt = None

    # ------------------------------------------------------------------ dead-letter retries

    def replay_now(self, ids: list[int] | None = None) -> ReplayCounts:
        """Replay every pending dead letter of this worker's flows (or only ``ids``) at once, from outside
        a running worker (the CLI, the API). Uses its own origin: a running worker holds the CDC one, and
        PostgreSQL lets one session use an origin at a time. A database error is raised, not hidden."""
        self.origin = origin_for(self.config, f"replay_{self.slot}")
        self._connect_target()
        try:
            with mapped_errors(f"replaying the dead letters of {', '.join(self.flows)}"):
                self._reload_blocked(self.target_connection)
                return replay_due(self, self.config.model.retries.dead_letters, due_only=False, ids=ids, limit=None)
        finally:
            self.close()

    def stalled_reason(self) -> str | None:
        """Why the worker is not applying right now (retrying the target, reconnecting to the source)."""
        if self.committer.stalled:
            return self.committer.stalled
        if self._stream is not None and self._stream.reconnecting:
            return f"{self.source} database: replication connection lost, reconnecting"
        return None

    def retry_dead_letters(self) -> int:
        """Re-apply the dead-lettered keys that are due from the source's current rows, now; returns how
        many converged. Errors are logged: the next round tries again (civicsync.deadletters.rounds)."""
        if self._tgt is None:
            return 0
        return self.dead_letter_retries.round()

    def _reload_blocked(self, conn: Conn) -> None:
        """The keys that wait, as the table holds them (an operator may have discarded or replayed
        entries from the CLI meanwhile)."""
        self._blocked = store.pending_keys(conn, self.flows)
        conn.commit()
