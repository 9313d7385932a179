"""Consumer lag of `apply --group` workers, per partition: records the group has not applied yet
(the partition's high watermark minus the offset stored in the target) and how old the oldest of
them is (now minus its Kafka timestamp; 0 when caught up). Read from the stored offsets, not from
Kafka's committed offsets (the workers never commit there), so it is right even with no worker up.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from civicsync import metrics
from civicsync.config import LoadedConfig
from civicsync.db.connect import connect
from civicsync.errors import TransientError
from civicsync.kafka.capture import group_flows, kafka_settings
from civicsync.kafka.offsets import all_offsets

_TIMEOUT = 10.0


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


def consumer_lag(config: LoadedConfig) -> list[PartitionLag]:
    """The lag of every (group, partition) stored in the Kafka flows' target databases; also exported
    as the ``civicsync_kafka_consumer_lag_*`` metrics."""
    stored = []
    for target in _targets(config):
        with connect(config.dsn(target, "apply"), purpose="kafka-lag", autocommit=True, label=target) as conn:
            stored += all_offsets(conn)
    if not stored:
        return []
    probe = Consumer({"bootstrap.servers": kafka_settings(config).bootstrap(),
                      "group.id": f"civicsync-lag-probe-{secrets.token_hex(4)}", "enable.auto.commit": False})
    try:
        return [_lag(probe, *row) for row in stored]
    except KafkaException as exc:
        raise TransientError(f"cannot read the partitions' offsets from Kafka: {exc.args[0]}") from None
    finally:
        probe.close()


def _lag(probe: Consumer, group: str, topic: str, partition: int, applied: int, owner: str) -> PartitionLag:
    _, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=_TIMEOUT)
    records = max(high - applied, 0)
    seconds = _age(probe, topic, partition, applied) if records else 0.0
    metrics.KAFKA_CONSUMER_LAG_RECORDS.labels(group, topic, str(partition)).set(records)
    metrics.KAFKA_CONSUMER_LAG_SECONDS.labels(group, topic, str(partition)).set(seconds)
    return PartitionLag(group, topic, partition, applied, high, records, seconds, owner)


def _age(probe: Consumer, topic: str, partition: int, offset: int) -> float:
    """Seconds since the first unapplied record was written (its Kafka timestamp)."""
    probe.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + _TIMEOUT
    try:
        while time.monotonic() < deadline:
            msg = probe.poll(0.5)
            if msg is not None and msg.error() is None:
                _, ts = msg.timestamp()
                return max(time.time() - ts / 1000, 0.0)
        return 0.0
    finally:
        probe.unassign()
