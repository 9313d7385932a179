"""``civicsync capture``: a source connection's CDC flows, streamed from pgoutput, published to Kafka.

Every captured change goes through its flow's applier (the direct path's transform, filters and
masking) and is published as the target-row action it makes (see :mod:`civicsync.kafka.records`),
on the flow's topic, keyed by the target key, in a partition chosen by the flow's ``partition_by``
columns (default: the target key). The producer is idempotent with ``acks=all``; the slot is
acknowledged only after ``flush()`` reports every record up to that LSN delivered, so a crash
anywhere re-sends (the consumer's stored offsets and idempotent writes absorb the repeat) and never
loses.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.capture.changes import events_of
from civicsync.capture.replication import ReplicationStream, Transaction
from civicsync.capture.slots import check_wal_level, ensure_publication, ensure_slot
from civicsync.config import LoadedConfig
from civicsync.config.kafka import KafkaSettings, kafka_problems
from civicsync.config.models import kafka_slot_name, publication_name
from civicsync.db.connect import connect
from civicsync.db.origin import echo_origins
from civicsync.errors import ConfigError, ConfigProblem, FatalError, TransientError
from civicsync.kafka.envelope import encode
from civicsync.kafka.records import action_records, partition_of

log = logging.getLogger(__name__)
FLUSH_EVERY = 5_000  # records produced before the producer is flushed and the slot acknowledged


class DeliveryError(TransientError):
    """The broker did not acknowledge a record: nothing after it is acknowledged to the slot."""


def kafka_settings(config: LoadedConfig) -> KafkaSettings:
    """The config's ``kafka:`` section, checked against the flows and connections (a ConfigError, exit 2,
    listing every problem; a clear error when there is no section)."""
    model = config.model
    if model.kafka is None:
        raise ConfigError([ConfigProblem(str(config.path), "kafka", "the config has no kafka: section "
                                         "(bootstrap_env, topics, ...)")])
    flows = {}
    for name, flow in model.flows.items():
        key = list(model.connections[flow.target.connection].tables[flow.target.table].key)
        flows[name] = (flow.id, flow.source.connection, key, flow.kafka_capable)
    problems = kafka_problems(model.kafka, flows, set(model.connections))
    if problems:
        raise ConfigError([ConfigProblem(str(config.path), path, message) for path, message in problems])
    return model.kafka


def group_flows(config: LoadedConfig, only: list[str] | None) -> list[str]:
    """The Kafka-carried flows (event-path flows without top_n) among ``only`` (names or ids); the one
    definition is :meth:`civicsync.config.models.Config.carried_by_kafka` (none without a kafka: section)."""
    return config.model.kafka_flows(only)


def flow_topic(config: LoadedConfig, flow: str) -> str:
    """The topic ``apply --group`` reads ``flow`` from: Debezium's per-table topic for a connection
    Debezium captures, else civicsync capture's (per table with ``publish: raw``, per flow when masked)."""
    settings = kafka_settings(config)
    spec = config.model.flows[flow]
    topic = settings.debezium_topic(spec.source.connection, spec.source.table)
    if topic is not None:
        return topic
    if settings.publish == "raw":
        return settings.raw_topic(spec.source.table)
    return settings.topic_name(flow, spec.id)


def capture_slot(config: LoadedConfig, source: str) -> str:
    """The capture's own slot (the direct worker's slot stays untouched)."""
    return kafka_slot_name(config.model, source)


@dataclass
class FlowRoute:
    """Where one flow's records go."""

    applier: CdcFlowApplier
    topic: str
    partitions: int
    partition_idx: list[int]  # positions in the target key
    skip_origins: frozenset[str]


@dataclass
class CaptureStats:
    """What the capture did (read by tests, the benchmark and the log)."""

    transactions: int = 0
    records: int = 0
    acknowledged: int = 0
    dead_letters: int = 0
    failures: list[str] = field(default_factory=list)


class KafkaCapture:
    """Streams one source connection's CDC flows into their Kafka topics."""

    def __init__(self, config: LoadedConfig, source: str, stop: threading.Event | None = None,
                 producer_conf: dict[str, Any] | None = None, flows: list[str] | None = None) -> None:
        self.config = config
        self.settings = kafka_settings(config)
        self.source = source
        names = [n for n in config.model.streaming_flows(source, flows) if n in group_flows(config, flows)]
        if not names:
            raise FatalError(f"no flow carried on Kafka reads from connection {source!r} (event-path flows "
                             "without top_n)")
        left = sorted(set(config.model.streaming_flows(source, flows)) - set(names))
        if left:
            log.warning("flows %s rank rows per partition (top_n) and stay on the direct path", ", ".join(left))
        self.slot = capture_slot(config, source)
        self.publication = publication_name(config.model, source)
        self.stop_event = stop or threading.Event()
        self.stats = CaptureStats()
        self.producer = Producer({
            "bootstrap.servers": self.settings.bootstrap(), "enable.idempotence": True, "acks": "all",
            "linger.ms": self.settings.producer.linger_ms,
            "compression.type": self.settings.producer.compression, **(producer_conf or {})})
        self.routes: dict[str, list[FlowRoute]] = {}
        for name in names:
            route = self._route(name)
            self.routes.setdefault(route.applier.flow.source.table, []).append(route)

    def _route(self, name: str) -> FlowRoute:
        applier = CdcFlowApplier(self.config, name)
        flow_id = applier.flow.id
        declared = self.settings.flow_topic(name, flow_id)
        by = declared.partition_by or list(applier.target.key)
        unknown = [c for c in by if c not in applier.target.key]
        if unknown:
            # A delete carries only the target key: partitioning by anything else would put a key's
            # delete in another partition than its writes, and per-key order would be lost.
            raise FatalError(f"kafka.topics.flows.{name}.partition_by names {', '.join(unknown)}: only target key "
                             f"columns of flow {name} ({', '.join(applier.target.key)}) can partition it")
        topic = (self.settings.raw_topic(applier.flow.source.table) if self.settings.publish == "raw"
                 else self.settings.topic_name(name, flow_id))
        return FlowRoute(applier, topic,
                         self.settings.settings(name, flow_id).partitions,
                         [list(applier.target.key).index(c) for c in by], echo_origins(self.config, name))

    def prepare(self) -> None:
        """Check the source; make sure the publication and the capture's slot exist."""
        with connect(self.config.dsn(self.source, "capture"), purpose="kafka-capture-setup", autocommit=True,
                     label=self.source) as src:
            check_wal_level(src)
            tables = sorted(self.routes)
            published = {f"{r[0]}.{r[1]}" for r in src.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (self.publication,))}
            if not set(tables) <= published:
                ensure_publication(src, self.publication, sorted(published | set(tables)))
            if ensure_slot(src, self.slot):
                log.info("created replication slot %s on %s for the Kafka capture", self.slot, self.source)
            self.db = src.info.dbname

    def run(self) -> None:
        """Publish until the stop event is set; every record delivered before its LSN is acknowledged."""
        self.prepare()
        stream = ReplicationStream(self.config.dsn(self.source, "capture"), slot=self.slot,
                                   publication=self.publication, stop=self.stop_event, source=self.source)
        try:
            pending_lsn = 0
            produced = 0
            while not self.stop_event.is_set():
                txn = stream.poll(0.2)
                if txn is not None:
                    produced += self.publish(txn)
                    pending_lsn = max(pending_lsn, txn.end_lsn)
                    self.stats.transactions += 1
                    if produced < FLUSH_EVERY:
                        continue
                if pending_lsn:
                    self._flush()
                    stream.acknowledge(pending_lsn)
                    self.stats.acknowledged = pending_lsn
                    pending_lsn = produced = 0
            if pending_lsn:
                self._flush()
                stream.acknowledge(pending_lsn)
                self.stats.acknowledged = pending_lsn
        finally:
            stream.close()
            self.producer.flush(10)

    def publish(self, txn: Transaction) -> int:
        """Produce the records of one source transaction; returns how many."""
        if self.settings.publish == "raw":
            return self._publish_raw(txn)
        count = 0
        for change in txn.changes:
            for route in self.routes.get(change.relation.qualified_name, ()):
                if txn.origin is not None and txn.origin in route.skip_origins:
                    continue  # the echo rule: this flow does not carry its own derived writes back
                outcome = FlowOutcome()
                pending = route.applier.net_effect_of_changes([(change, txn)], set(), outcome)
                if outcome.dead_letters:
                    self.stats.dead_letters += len(outcome.dead_letters)
                    for letter in outcome.dead_letters:  # the key and the kind, never the values
                        log.warning("flow %s: change of %s not published: %s", route.applier.name, letter.source_key,
                                    letter.kind)
                for record, part in self._records(route, pending, change.op, txn):
                    self.producer.produce(route.topic, value=record.value, key=record.key, partition=part,
                                          on_delivery=self._delivered)
                    count += 1
            self.producer.poll(0)
        self.stats.records += count
        return count

    def _publish_raw(self, txn: Transaction) -> int:
        """``publish: raw``: the source rows as captured, one topic per source table (shared by every
        flow of the table, partitioned by the source key). No transform: personal data as it is."""
        keys = {t: list(routes[0].applier.source.key) for t, routes in self.routes.items()}
        count = 0
        for event in events_of(txn, self.db, keys):
            routes = self.routes.get(event.table)
            if not routes or all(txn.origin is not None and txn.origin in r.skip_origins for r in routes):
                continue
            for record in encode(event):
                # Per record: a key change's delete goes where the old key's earlier records went.
                key = json.loads(record.key)
                part = partition_of([key.get(k) for k in keys[event.table]], routes[0].partitions)
                self.producer.produce(routes[0].topic, value=record.value, key=record.key, partition=part,
                                      on_delivery=self._delivered)
                count += 1
            self.producer.poll(0)
        self.stats.records += count
        return count

    def _records(self, route: FlowRoute, pending: dict[Any, Any], op: str,
                 txn: Transaction) -> list[tuple[Any, int]]:
        out = []
        for tkey, action in pending.items():
            values = [tkey[i] for i in route.partition_idx]
            part = partition_of([None if v is None else str(v) for v in values], route.partitions)
            for record in action_records(route.applier, {tkey: action}, op, self.db, txn.xid, txn.commit_time):
                out.append((record, part))
        return out

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.stats.failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def _flush(self) -> None:
        deadline = time.monotonic() + 120
        while self.producer.flush(1.0) > 0:
            if self.stop_event.is_set() and time.monotonic() > deadline:
                raise DeliveryError("the broker did not acknowledge every record within 120 s")
        if self.stats.failures:
            raise DeliveryError(f"the broker refused records ({self.stats.failures[0]}); the slot was not "
                                "acknowledged past them, a restart re-sends them")
