"""``civicsync apply --group G``: a consumer group applying flows' Kafka topics to their target.

The worker is both ends of a pipeline (civicsync.pipeline): a change source (the consumer's poll,
a rewind to the stored offsets after a fence) and a target the Committer drives. Each batch of
records is folded per flow into the direct path's pending actions and written with
:meth:`CdcFlowApplier.write` (same merge, lifecycle guard, route_changes, event log, dead
letters), and every partition's next offset is advanced in the **same** target transaction
(:mod:`civicsync.kafka.offsets`: the partitions are claimed first, a worker that lost one is
fenced, and the pipeline rewinds it). On
assignment the worker seeks to the stored offsets, so Kafka's own committed offsets are never
trusted: exactly once in effect. Per-key order holds because a key always lands in one partition
and one partition is applied by one worker, in offset order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from civicsync import metrics
from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.config import LoadedConfig
from civicsync.config.models import slot_name
from civicsync.control import store
from civicsync.db.connect import connect
from civicsync.db.errors import classify
from civicsync.db.origin import kafka_origins, setup_origin
from civicsync.deadletters.rounds import DueRetries, SourceReader
from civicsync.errors import FatalError, TransientError, UsageError, WorkerStopped
from civicsync.events import ChangeEvent
from civicsync.kafka.capture import flow_topic, group_flows, kafka_settings
from civicsync.kafka.debezium import Truncated, decode_message
from civicsync.kafka.envelope import decode
from civicsync.kafka.offsets import advance, claim, read_offsets
from civicsync.kafka.records import collapse, moved_from
from civicsync.pipeline.committer import Committer, Pipeline
from civicsync.pipeline.source import Batch, Position
from civicsync.pipeline.target import TargetSession

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[Any, ...]]
TP = tuple[str, int]


@dataclass
class GroupStats:
    """What the worker did (tests, benchmark, status)."""

    records: int = 0
    batches: int = 0
    fenced: int = 0
    dead_letters: int = 0


def start_millis(start: str) -> int:
    """``--from TIMESTAMP`` in milliseconds since the epoch (a UsageError, exit 2, if it is not one)."""
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        raise UsageError(f"--from must be 'earliest' or an ISO timestamp, not {start[:40]!r}") from None
    if moment.tzinfo is None:
        raise UsageError("--from needs a timezone (e.g. 2026-12-02T10:00:00+00:00)")
    return int(moment.timestamp() * 1000)


def start_offsets(consumer: Consumer, parts: Sequence[TopicPartition], start: str | None) -> dict[TP, int]:
    """Where ``--from`` starts each partition: ``earliest`` or an ISO timestamp (its first record at or after)."""
    if start is None:
        return {}
    if start == "earliest":
        return {(p.topic, p.partition): OFFSET_BEGINNING for p in parts}
    ms = start_millis(start)
    found = consumer.offsets_for_times([TopicPartition(p.topic, p.partition, ms) for p in parts], timeout=30)
    # No record at or after that time: start at the end (what is written from now on), not at the start.
    return {(p.topic, p.partition): (p.offset if p.offset >= 0 else OFFSET_END) for p in found}


class GroupApplier(TargetSession):
    """One worker of a consumer group; run N of them (on N machines) to share the partitions."""

    def __init__(self, config: LoadedConfig, group: str, flows: list[str] | None = None, start: str | None = None,
                 stop: threading.Event | None = None, consumer_conf: dict[str, Any] | None = None) -> None:
        self.config = config
        self.settings = kafka_settings(config)
        if start is not None and start != "earliest":
            start_millis(start)  # a bad --from is refused before anything starts
        self.group = group
        names = group_flows(config, flows)
        if not names:
            raise FatalError("no flow to apply from Kafka (event-path flows without top_n)")
        model = config.model
        pairs = {(model.flows[n].source.connection, model.flows[n].target.connection) for n in names}
        if len(pairs) != 1:
            raise FatalError(f"the flows read from and write to several databases ({sorted(pairs)}); run one "
                             "group per source and target with --flow")
        self.source, self.target = pairs.pop()
        source = self.source
        # A connection Debezium captures is read from Debezium's per-table topics (source rows, through
        # the flow's transform here); any other from civicsync capture's per-flow topics (target rows).
        self.debezium = self.settings.debezium.get(source)
        self.flows = names
        self.appliers = [CdcFlowApplier(config, n) for n in names]
        self.topic_appliers: dict[str, list[CdcFlowApplier]] = {}  # a raw or Debezium topic may feed several flows
        for applier in self.appliers:
            self.topic_appliers.setdefault(flow_topic(config, applier.name), []).append(applier)
        # Origins of their own, known to the echo rule as writers of these flows (db/origin.py).
        self.origins = kafka_origins(config, slot_name(model, source))
        self.start = start
        self.stop_event = stop or threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.held: dict[TP, int | None] = {}
        self._started_from: set[TP] = set()  # partitions --from already moved (once per run)
        self.stats = GroupStats()
        conf = {"bootstrap.servers": self.settings.bootstrap(), "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                "client.id": f"civicsync-apply-{self.owner}", "enable.partition.eof": False}
        if self.settings.consumer.group_protocol == "consumer":
            conf["group.protocol"] = "consumer"
        else:
            conf.update({"partition.assignment.strategy": "cooperative-sticky",
                         "session.timeout.ms": self.settings.consumer.session_timeout_ms})
        self.consumer = Consumer({**conf, **(consumer_conf or {})})
        self.committer = Committer(self, model.retries.target_commit, self.stop_event, f"group {group}")
        self._by_topic: dict[str, list[Message]] = {}  # the batch being applied, per topic
        # Due dead letters are retried between batches, as on the native path; the workers of the group
        # take turns (an advisory lock on the target), so two never replay the same letters at once.
        self._reader = SourceReader(config, source, f"kafka-read:{group}")
        self.dead_letter_retries = DueRetries(self, model.retries.dead_letters, f"group {group}",
                                              stop=self.stop_event, lock=f"civicsync:dlq-retry:{group}")

    # ------------------------------------------------------------------ set-up and rebalances

    def _open(self) -> Conn:
        conn = connect(self.config.dsn(self.target, "apply"), purpose=f"kafka-apply:{self.group}", label=self.target)
        try:
            self._take_origin(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _take_origin(self, conn: Conn) -> None:
        """Mark this session's writes with the first origin no other worker holds (PostgreSQL lets one
        session use an origin at a time)."""
        for origin in self.origins:
            try:
                setup_origin(conn, origin)
                conn.commit()
                return
            except psycopg.errors.ObjectInUse:
                conn.rollback()
        raise FatalError(f"group {self.group}: all {len(self.origins)} origins for its workers are in use; raise "
                         "kafka.consumer.max_workers (and run `civicsync db init`)")

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        conn = self.connection()
        stored = read_offsets(conn, self.group, [(p.topic, p.partition) for p in parts])
        conn.commit()
        moved = start_offsets(consumer, [p for p in parts if (p.topic, p.partition) not in self._started_from],
                              self.start)
        for p in parts:
            tp = (p.topic, p.partition)
            self.held[tp] = stored.get(tp)
            p.offset = moved.get(tp, stored.get(tp, OFFSET_BEGINNING))
            self._started_from.add(tp)
        log.info("group %s: assigned %s", self.group, ", ".join(f"{p.topic}[{p.partition}]@{p.offset}" for p in parts))
        consumer.incremental_assign(parts)

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        for p in parts:
            self.held.pop((p.topic, p.partition), None)
        # Another worker may move them meanwhile (even back, with --from): when they come back,
        # what the table holds then is where this worker starts.
        self.committer.forget(_stream(p.topic, p.partition) for p in parts)
        consumer.incremental_unassign(parts)

    @property
    def name(self) -> str:
        """The target connection's name (the pipeline target's)."""
        return self.target

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Consume and apply until the stop event is set."""
        self.connection()
        self.consumer.subscribe(list(self.topic_appliers), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.dead_letter_retries.restart()
        try:
            Pipeline(self, self.committer, on_commit=self._committed).run(self.settings.consumer.max_wait_ms / 1000,
                                                                          between=self._between)
        except WorkerStopped as stopped:
            log.info("%s; the records it held are read again from the stored offsets", stopped)
        finally:
            self.consumer.close()
            self.close()

    def _between(self) -> None:
        """Between batches: the due dead letters, about every second (one worker of the group at a time)."""
        self.dead_letter_retries.maybe()

    def close(self) -> None:
        """Close the apply session and the replays' source session."""
        super().close()
        self._reader.close()

    # ------------------------------------------------------------------ dead-letter replays (a ReplayHost)

    @property
    def target_connection(self) -> Conn:
        """The apply session (a replay writes with the group's origin, as the records do)."""
        return self.connection()

    def source_reader(self) -> Conn:
        """A plain session on the flows' source, as the capture role (opened on first use)."""
        return self._reader.session()

    def unblock(self, flow: str, key: dict[str, Any]) -> None:
        """Nothing to do: each batch reads the keys that wait from the table (``store.pending_keys``)."""

    # ------------------------------------------------------------------ the pipeline source

    def poll(self, max_wait: float) -> Batch | None:
        """The next records of the partitions this worker holds, ending at each one's next offset."""
        msgs = self.consumer.consume(self.settings.consumer.max_poll_records, max_wait)
        batch = [m for m in msgs if self._usable(m)]
        if not batch:
            return None
        return Batch(batch, {_stream(str(m.topic()), int(m.partition() or 0)): int(m.offset() or 0) + 1
                             for m in batch})

    def acknowledge(self, position: Position) -> None:
        """What the table now holds is what this worker holds (Kafka's own offsets are never used)."""
        for tp in self.held:
            if _stream(*tp) in position:
                self.held[tp] = position[_stream(*tp)]

    def suspend(self) -> None:
        """Nothing to let go of while the committer waits."""

    def rewind(self) -> None:
        """After a fence: every owned partition goes back to what the table holds."""
        self.stats.fenced += 1
        metrics.KAFKA_FENCED.labels(self.group).inc()
        conn = self.connection()
        conn.rollback()
        stored = read_offsets(conn, self.group, list(self.held))
        conn.commit()
        self.committer.forget(_stream(*tp) for tp in self.held)
        for tp in list(self.held):
            self.held[tp] = stored.get(tp)
            self.consumer.seek(TopicPartition(tp[0], tp[1], stored.get(tp, OFFSET_BEGINNING)))

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is not None:
            if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF):
                return False
            raise TransientError(f"Kafka: {err.str()}")
        return (msg.topic(), msg.partition()) in self.held

    # ------------------------------------------------------------------ the pipeline target

    def apply(self, batch: Batch) -> None:
        """Claim the batch's partitions, then apply every flow's share (one target transaction)."""
        conn = self.connection()
        self._by_topic = {}
        for m in batch.changes:
            self._by_topic.setdefault(str(m.topic()), []).append(m)
        with self._mapped():
            for topic, part in sorted(self._partitions(batch)):
                # First, so a fenced worker learns it before writing anything (and holds the row lock).
                claim(conn, self.group, topic, part, self.held[(topic, part)])
            blocked = store.pending_keys(conn, self.flows)
            for topic, msgs in self._by_topic.items():
                for applier in self.topic_appliers[topic]:
                    self._apply_flow(conn, applier, msgs, blocked)

    def checkpoint(self, batch: Batch) -> None:
        """Advance each partition's next offset, in the batch's transaction (compare-and-set)."""
        conn = self.connection()
        assert batch.position is not None
        with self._mapped():
            for topic, part in sorted(self._partitions(batch)):
                advance(conn, self.group, topic, part, self.held[(topic, part)],
                        batch.position[_stream(topic, part)], self.owner)

    def commit(self) -> None:
        """Commit rows and offsets together."""
        with self._mapped():
            self.connection().commit()

    def _committed(self, batch: Batch) -> None:
        self.stats.records += len(batch.changes)
        self.stats.batches += 1
        for topic, msgs in self._by_topic.items():
            metrics.KAFKA_APPLIED.labels(self.group, topic).inc(len(msgs))

    @staticmethod
    def _partitions(batch: Batch) -> set[TP]:
        return {(str(m.topic()), int(m.partition() or 0)) for m in batch.changes}

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            error = classify(exc, f"group {self.group}: applying to {self.target}")
            if isinstance(error, TransientError):
                raise error from exc
            raise FatalError(str(error)) from exc
    def _apply_flow(self, conn: Conn, applier: CdcFlowApplier, msgs: list[Message],
                    blocked: set[tuple[str, str]]) -> None:
        outcome = FlowOutcome()
        letters: list[store.CdcLetter] = []
        if self.debezium is not None or self.settings.publish == "raw":
            pending = self._source_row_pending(conn, applier, msgs, blocked, outcome)
        else:
            pending = self._civicsync_pending(applier, msgs, blocked, letters)
        self._write(conn, applier, pending, outcome, letters)

    def _source_row_pending(self, conn: Conn, applier: CdcFlowApplier, msgs: list[Message],
                            blocked: set[tuple[str, str]], outcome: FlowOutcome) -> dict[Any, Any]:
        """Source-row events (Debezium's, or civicsync's ``publish: raw``) through the flow's own
        transform, as the direct path applies its snapshot's events."""
        events: list[ChangeEvent] = []
        full = self.debezium.replica_identity_full if self.debezium is not None else False
        for m in msgs:
            event: ChangeEvent | Truncated | None = (
                decode_message(m.key(), m.value(), replica_identity_full=full) if self.debezium is not None
                else decode(m.key(), m.value()))
            if isinstance(event, Truncated):
                if applier.cdc.truncate == "propagate":  # what came before the TRUNCATE is gone with it
                    events = []
                    applier.truncate_target(conn)
                continue
            if event is not None:
                events.append(event)
        waiting = {k for f, k in blocked if f == applier.name}
        return applier.net_effect(events, waiting, outcome)

    def _civicsync_pending(self, applier: CdcFlowApplier, msgs: list[Message], blocked: set[tuple[str, str]],
                           letters: list[store.CdcLetter]) -> dict[Any, Any]:
        """civicsync capture's target-row records, folded per key in offset order."""
        pending: dict[Any, Any] = {}
        for m in msgs:
            event = decode(m.key(), m.value())
            if event is None:
                continue  # a tombstone: the delete before it did the work
            if (applier.name, json.dumps(event.key, sort_keys=True)) in blocked:
                letters.append((applier.name, dict(event.key), event.op, event.source.lsn, "blocked",
                                "waiting behind an earlier failure of the same key", 0.0, None))
                continue
            collapse(applier, pending, event, moved_from(m.value()))
        return pending

    def _write(self, conn: Conn, applier: CdcFlowApplier, pending: dict[Any, Any], outcome: FlowOutcome,
               letters: list[store.CdcLetter]) -> None:
        """The direct path's write; after a failure key by key (savepoints), failing keys dead-lettered."""
        before = list(outcome.dead_letters)  # rules broken before writing (the transform's rejections)
        first = self.config.model.retries.dead_letters.initial_delay  # the first replay, as on the native path
        try:
            with conn.transaction():  # a savepoint: a failing batch is retried key by key
                applier.write(conn, pending, outcome)
        except psycopg.Error as exc:
            if isinstance(classify(exc, applier.name), TransientError):
                raise
            outcome = FlowOutcome(dead_letters=before)
            for tkey, action in pending.items():
                try:
                    with conn.transaction():
                        applier.write(conn, {tkey: action}, outcome)
                except psycopg.Error as one:
                    error = classify(one, applier.flow.target.table)
                    if isinstance(error, TransientError):
                        raise
                    letters.append((applier.name, dict(action.source_key), "u", action.lsn,
                                    f"sqlstate_{getattr(error, 'sqlstate', None) or 'unknown'}", str(error), first,
                                    None))
        letters += [(d.flow, d.source_key, d.op, d.lsn, d.kind, d.error, first, None) for d in outcome.dead_letters]
        if letters:
            store.add_cdc_dead_letters(conn, letters)
            self.stats.dead_letters += len(letters)


def _stream(topic: str, partition: int) -> str:
    """A partition's name in a batch position."""
    return f"{topic}[{partition}]"
