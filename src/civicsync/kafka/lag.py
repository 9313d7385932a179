"""Consumer lag of `apply --group` workers, per partition: records the group has not applied yet
(the partition's high watermark minus the offset stored in the target) and how old the oldest of
them is (now minus its Kafka timestamp; 0 when caught up). Read from the stored offsets, not from
Kafka's committed offsets (the workers never commit there), so it is right even with no worker up.

:func:`consumer_lag` reads it once (``civicsync kafka lag``, ``civicsync status``); :class:`LagMonitor`
samples it on a thread of ``civicsync run`` for ``/metrics``, the status API and the status page. A
sample that fails (broker or target unreachable) says so, in the sample and in the
``civicsync_kafka_lag_sample_failed`` gauge, rather than leaving the last figures looking current.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from civicsync import metrics
from civicsync.config import LoadedConfig
from civicsync.db.connect import connect
from civicsync.errors import CivicsyncError, TransientError
from civicsync.kafka.capture import flow_topic, group_flows, kafka_settings
from civicsync.kafka.offsets import all_offsets

log = logging.getLogger(__name__)
_TIMEOUT = 10.0
_published: set[tuple[str, str, str]] = set()  # (group, topic, partition) series on /metrics now
_published_lock = threading.Lock()


@dataclass(frozen=True)
class PartitionLag:
    """One partition's lag for one group."""

    group: str
    topic: str
    partition: int
    applied_offset: int
    high_watermark: int
    lag_records: int
    lag_seconds: float
    owner: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _targets(config: LoadedConfig) -> list[str]:
    return sorted({config.model.flows[n].target.connection for n in group_flows(config, None)})


def consumer_lag(config: LoadedConfig, timeout: float = _TIMEOUT) -> list[PartitionLag]:
    """The lag of every (group, partition) stored in the Kafka flows' target databases; also exported
    as the ``civicsync_kafka_consumer_lag_*`` metrics (series of partitions no longer stored are
    removed). Waits at most ``timeout`` seconds for the broker per question; a TransientError when it
    or a target does not answer."""
    stored = []
    for target in _targets(config):
        with connect(config.dsn(target, "apply"), purpose="kafka-lag", autocommit=True, label=target) as conn:
            stored += all_offsets(conn)
    rows = _from_broker(config, stored, timeout)
    _publish(rows)
    return rows


def _from_broker(config: LoadedConfig, stored: list[tuple[str, str, int, int, str]],
                 timeout: float) -> list[PartitionLag]:
    probe = Consumer({"bootstrap.servers": kafka_settings(config).bootstrap(),
                      "group.id": f"civicsync-lag-probe-{secrets.token_hex(4)}", "enable.auto.commit": False})
    try:
        if not stored:  # nothing applied yet: still say whether the broker answers
            probe.list_topics(timeout=timeout)
        return [_lag(probe, timeout, *row) for row in stored]
    except KafkaException as exc:
        raise TransientError(f"cannot read the partitions' offsets from Kafka: {exc.args[0]}") from None
    finally:
        probe.close()


def _publish(rows: list[PartitionLag]) -> None:
    now = {(r.group, r.topic, str(r.partition)): r for r in rows}
    with _published_lock:
        for labels in _published - set(now):
            metrics.KAFKA_CONSUMER_LAG_RECORDS.remove(*labels)
            metrics.KAFKA_CONSUMER_LAG_SECONDS.remove(*labels)
        for labels, r in now.items():
            metrics.KAFKA_CONSUMER_LAG_RECORDS.labels(*labels).set(r.lag_records)
            metrics.KAFKA_CONSUMER_LAG_SECONDS.labels(*labels).set(r.lag_seconds)
        _published.clear()
        _published.update(now)


def _lag(probe: Consumer, timeout: float, group: str, topic: str, partition: int, applied: int,
         owner: str) -> PartitionLag:
    _, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    records = max(high - applied, 0)
    seconds = _age(probe, topic, partition, applied, timeout) if records else 0.0
    return PartitionLag(group, topic, partition, applied, high, records, seconds, owner)


def _age(probe: Consumer, topic: str, partition: int, offset: int, timeout: float) -> float:
    """Seconds since the first unapplied record was written (its Kafka timestamp)."""
    probe.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = probe.poll(0.5)
            if msg is not None and msg.error() is None:
                _, ts = msg.timestamp()
                return max(time.time() - ts / 1000, 0.0)
        return 0.0
    finally:
        probe.unassign()


@dataclass(frozen=True)
class LagSample:
    """One reading of every group's lag: the partitions, or why they could not be read."""

    taken_at: datetime
    partitions: list[PartitionLag] = field(default_factory=list)
    error: str | None = None
    flows: dict[str, list[str]] = field(default_factory=dict)  # topic → the flows it carries

    def for_flow(self, flow: str) -> list[PartitionLag]:
        """The partitions of the topics that carry ``flow``."""
        return [p for p in self.partitions if flow in self.flows.get(p.topic, [])]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: time, error, and per partition its figures and flows."""
        return {"taken_at": self.taken_at.isoformat(), "error": self.error,
                "partitions": [{**p.as_dict(), "flows": self.flows.get(p.topic, [])} for p in self.partitions]}


def topic_flows(config: LoadedConfig) -> dict[str, list[str]]:
    """Topic → the Kafka-carried flows read from it (a raw or Debezium topic may feed several)."""
    found: dict[str, list[str]] = {}
    for name in group_flows(config, None):
        found.setdefault(flow_topic(config, name), []).append(name)
    return found


def sample_lag(config: LoadedConfig, timeout: float) -> LagSample:
    """Read the lag once; a failure becomes the sample's ``error`` (a sentence, no data values) and
    sets ``civicsync_kafka_lag_sample_failed`` to 1 until a sample succeeds."""
    now = datetime.now(UTC)
    try:
        flows = topic_flows(config)
        rows = consumer_lag(config, timeout)
    except CivicsyncError as exc:
        metrics.KAFKA_LAG_SAMPLE_FAILED.set(1)
        return LagSample(now, error=str(exc))
    metrics.KAFKA_LAG_SAMPLE_FAILED.set(0)
    return LagSample(now, rows, flows=flows)


class LagMonitor:
    """Samples the lag every ``kafka.lag.interval_seconds`` on a daemon thread (``civicsync run``);
    :attr:`latest` is the last sample (None before the first). Logs a failure once, and the recovery."""

    def __init__(self, config: LoadedConfig, on_sample: Callable[[LagSample], None] | None = None) -> None:
        self.config = config
        self.on_sample = on_sample
        self.settings = kafka_settings(config).lag
        self.latest: LagSample | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kafka-lag", daemon=True)

    def start(self) -> LagMonitor:
        """Start sampling (the first sample at once)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling; waits for a sample in progress (bounded by the timeout)."""
        self._stop.set()
        self._thread.join(self.settings.timeout_seconds * 2 + 5)

    def sample(self) -> LagSample:
        """Take one sample now and keep it as :attr:`latest`."""
        sample = sample_lag(self.config, self.settings.timeout_seconds)
        previous, self.latest = self.latest, sample
        if self.on_sample is not None:
            self.on_sample(sample)
        if sample.error and (previous is None or not previous.error):
            log.warning("Kafka consumer lag unknown: %s (retrying every %.0f s; alert CivicsyncKafkaLagUnknown)",
                        sample.error, self.settings.interval_seconds)
        elif not sample.error and previous is not None and previous.error:
            log.info("Kafka consumer lag readable again (%d partitions)", len(sample.partitions))
        return sample

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.settings.interval_seconds)


def flow_lag_fields(sample: LagSample, flow: str) -> dict[str, Any]:
    """What status shows of a Kafka-carried flow's lag: its partitions, records not applied (sum),
    age of the oldest (max), or why the lag is unknown."""
    if sample.error:
        return {"kafka_lag": None, "kafka_lag_records": None, "kafka_lag_seconds": None,
                "kafka_lag_error": sample.error}
    parts = sample.for_flow(flow)
    return {"kafka_lag": [p.as_dict() for p in parts], "kafka_lag_records": sum(p.lag_records for p in parts),
            "kafka_lag_seconds": max((p.lag_seconds for p in parts), default=0.0), "kafka_lag_error": None}


def with_kafka_lag(config: LoadedConfig, rows: list[dict[str, Any]], sample: LagSample | None) -> None:
    """Add :func:`flow_lag_fields` to the status rows of the Kafka-carried flows (none without a sample).
    A flow whose connection Debezium captures has no slot of ours: its ``state`` comes from the lag
    (``lag unknown``, ``not started`` before any worker stored an offset, ``applying``, ``caught up``)."""
    if sample is None:
        return
    carried = set(group_flows(config, None))
    for row in rows:
        if row["flow"] in carried:
            fields = flow_lag_fields(sample, row["flow"])
            row.update(fields)
            if row.get("carrier") == "kafka" and row.get("slot") is None:
                row["state"] = ("lag unknown" if fields["kafka_lag_error"] else
                                "not started" if not fields["kafka_lag"] else
                                "applying" if fields["kafka_lag_records"] else "caught up")
