"""``civicsync apply --group G``: a consumer group applying flows' Kafka topics to their target.

Each batch of records is folded per flow into the direct path's pending actions and written with
:meth:`CdcFlowApplier.write` (same merge, lifecycle guard, route_changes, event log, dead
letters), and every partition's next offset is advanced in the **same** target transaction
(:mod:`civicsync.kafka.offsets`, compare-and-set: a worker that lost a partition is fenced). On
assignment the worker seeks to the stored offsets, so Kafka's own committed offsets are never
trusted: exactly once in effect. Per-key order holds because a key always lands in one partition
and one partition is applied by one worker, in offset order.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
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
from civicsync.errors import FatalError, TransientError, UsageError
from civicsync.events import ChangeEvent
from civicsync.kafka.capture import group_flows, kafka_settings
from civicsync.kafka.debezium import Truncated, decode_message
from civicsync.kafka.envelope import decode
from civicsync.kafka.offsets import Fenced, advance, read_offsets
from civicsync.kafka.records import collapse, moved_from

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


class GroupApplier:
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
        source, self.target = pairs.pop()
        # A connection Debezium captures is read from Debezium's per-table topics (source rows, through
        # the flow's transform here); any other from civicsync capture's per-flow topics (target rows).
        self.debezium = self.settings.debezium.get(source)
        self.appliers: dict[str, list[CdcFlowApplier]] = {}  # a raw or Debezium topic may feed several flows
        for n in names:
            self.appliers.setdefault(self._topic(n), []).append(CdcFlowApplier(config, n))
        # Origins of their own, known to the echo rule as writers of these flows (db/origin.py).
        self.origins = kafka_origins(config, slot_name(model, source))
        self.start = start
        self.stop_event = stop or threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.held: dict[TP, int | None] = {}
        self._started_from: set[TP] = set()  # partitions --from already moved (once per run)
        self.stats = GroupStats()
        self.conn: Conn | None = None
        conf = {"bootstrap.servers": self.settings.bootstrap(), "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                "client.id": f"civicsync-apply-{self.owner}", "enable.partition.eof": False}
        if self.settings.consumer.group_protocol == "consumer":
            conf["group.protocol"] = "consumer"
        else:
            conf.update({"partition.assignment.strategy": "cooperative-sticky",
                         "session.timeout.ms": self.settings.consumer.session_timeout_ms})
        self.consumer = Consumer({**conf, **(consumer_conf or {})})

    def _topic(self, flow: str) -> str:
        spec = self.config.model.flows[flow]
        if self.debezium is None:
            if self.settings.publish == "raw":
                return self.settings.raw_topic(spec.source.table)
            return self.settings.topic_name(flow, spec.id)
        topic = self.settings.debezium_topic(spec.source.connection, spec.source.table)
        assert topic is not None
        return topic

    # ------------------------------------------------------------------ set-up and rebalances

    def _connect(self) -> Conn:
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.config.dsn(self.target, "apply"), purpose=f"kafka-apply:{self.group}",
                                label=self.target)
            self._take_origin(self.conn)
        return self.conn

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
        conn = self._connect()
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
        consumer.incremental_unassign(parts)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Consume and apply until the stop event is set."""
        self._connect()
        self.consumer.subscribe(list(self.appliers), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        wait = self.settings.consumer.max_wait_ms / 1000
        try:
            while not self.stop_event.is_set():
                msgs = self.consumer.consume(self.settings.consumer.max_poll_records, wait)
                batch = [m for m in msgs if self._usable(m)]
                if batch:
                    self._apply_with_retries(batch)
        finally:
            self.consumer.close()
            if self.conn is not None:
                self.conn.close()

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is not None:
            if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF):
                return False
            raise TransientError(f"Kafka: {err.str()}")
        return (msg.topic(), msg.partition()) in self.held

    def _apply_with_retries(self, batch: list[Message]) -> None:
        for attempt in range(30):
            try:
                self.apply(batch)
                return
            except Fenced as fenced:
                self.stats.fenced += 1
                metrics.KAFKA_FENCED.labels(self.group).inc()
                log.warning("group %s: %s; re-reading the stored offsets", self.group, fenced)
                self._reseek()
                return
            except TransientError as exc:
                log.warning("group %s: %s; retrying", self.group, exc)
                if self.conn is not None and not self.conn.closed:
                    self.conn.close()
                self.conn = None
                time.sleep(min(0.2 * 2 ** attempt, 10))
        raise FatalError(f"group {self.group}: the target stayed unavailable")

    def _reseek(self) -> None:
        """After a fence: every owned partition goes back to what the table holds."""
        conn = self._connect()
        conn.rollback()
        stored = read_offsets(conn, self.group, list(self.held))
        conn.commit()
        for tp in list(self.held):
            self.held[tp] = stored.get(tp)
            self.consumer.seek(TopicPartition(tp[0], tp[1], stored.get(tp, OFFSET_BEGINNING)))

    def apply(self, batch: list[Message]) -> None:
        """Apply one batch and advance its partitions' offsets in one target transaction."""
        conn = self._connect()
        last: dict[TP, int] = {}
        by_topic: dict[str, list[Message]] = {}
        for m in batch:
            topic, part, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
            last[(topic, part)] = offset
            by_topic.setdefault(topic, []).append(m)
        try:
            for (topic, part), offset in sorted(last.items()):
                # First, so a fenced worker learns it before writing anything (and holds the row lock).
                advance(conn, self.group, topic, part, self.held[(topic, part)], offset + 1, self.owner)
            blocked = store.pending_keys(conn, [a.name for flows in self.appliers.values() for a in flows])
            for topic, msgs in by_topic.items():
                for applier in self.appliers[topic]:
                    self._apply_flow(conn, applier, msgs, blocked)
            conn.commit()
        except Fenced:
            conn.rollback()
            raise
        except psycopg.Error as exc:
            conn.rollback()
            error = classify(exc, f"group {self.group}: applying to {self.target}")
            if isinstance(error, TransientError):
                raise error from exc
            raise FatalError(str(error)) from exc
        for tp, offset in last.items():
            self.held[tp] = offset + 1
        self.stats.records += len(batch)
        self.stats.batches += 1
        for topic, msgs in by_topic.items():
            metrics.KAFKA_APPLIED.labels(self.group, topic).inc(len(msgs))

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
                                    f"sqlstate_{getattr(error, 'sqlstate', None) or 'unknown'}", str(error), 1.0, None))
        letters += [(d.flow, d.source_key, d.op, d.lsn, d.kind, d.error, 1.0, None) for d in outcome.dead_letters]
        if letters:
            store.add_cdc_dead_letters(conn, letters)
            self.stats.dead_letters += len(letters)
