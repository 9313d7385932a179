"""The ``kafka:`` section of the config: where the cluster is, which topics carry which flows, how
consumer groups run. Validated at load like the rest of the config.

Example::

    kafka:
      bootstrap_env: CIVICSYNC_KAFKA_BOOTSTRAP     # host:port,host:port, read from the environment
      topic_prefix: civicsync
      publish: masked                              # or raw (Debezium-style per-table topics, explicit)
      topics:
        defaults: {partitions: 6, replication_factor: 3, retention_ms: 604800000, min_insync_replicas: 2}
        flows:
          F4: {partitions: 12, partition_by: [application_id]}
      consumer: {group_protocol: classic, session_timeout_ms: 10000, max_poll_records: 2000}
      lag: {interval_seconds: 15, timeout_seconds: 5}   # how `civicsync run` samples consumer lag
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator

from civicsync.config.base import Model
from civicsync.errors import FatalError

_ENV = r"^[A-Z_][A-Z0-9_]*$"
_TOPIC_PART = r"^[A-Za-z0-9._-]{1,200}$"


class TopicSettings(Model):
    """Partitions, replication and retention of a topic (the defaults, or one flow's)."""

    partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    retention_ms: int | None = Field(default=None, ge=-1,
                                     description="-1 keeps messages forever; unset: the broker's default")
    min_insync_replicas: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _isr_within_rf(self) -> TopicSettings:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed "
                             f"replication_factor ({self.replication_factor})")
        return self


class FlowTopic(Model):
    """One flow's topic: its own settings over the defaults, and what its records are partitioned by."""

    name: str | None = Field(default=None, pattern=_TOPIC_PART, description="default: <prefix>.<flow>")
    partitions: int | None = Field(default=None, ge=1, le=10_000)
    replication_factor: int | None = Field(default=None, ge=1, le=32)
    retention_ms: int | None = Field(default=None, ge=-1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    partition_by: list[str] | None = Field(
        default=None, min_length=1,
        description="target columns records are partitioned by (default: the target key; a top-N flow "
                    "needs its partition columns so a partition's rows keep their order)")


class TopicsSection(Model):
    """Topic defaults and per-flow overrides (flows by config name or spec id)."""

    defaults: TopicSettings = Field(default_factory=TopicSettings)
    flows: dict[str, FlowTopic] = Field(default_factory=dict)


class ConsumerSettings(Model):
    """How ``civicsync apply --group`` consumes."""

    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic", description="classic: cooperative-sticky assignment; consumer: KIP-848")
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    max_poll_records: int = Field(default=2_000, ge=1, le=100_000)
    max_workers: int = Field(default=8, ge=1, le=64,
                             description="most concurrent workers per source (each marks its writes with an "
                                         "origin of its own; `db init` creates them)")
    # 5 ms, not more: librdkafka's consume() waits the whole time even when records keep arriving, so
    # this wait is added to every batch; 50 ms put the p99 at 1,000 changes/s near 250 ms (bench/kafka_*).
    max_wait_ms: int = Field(default=5, ge=0, le=60_000,
                             description="longest wait for more records before applying what arrived")


class ProducerSettings(Model):
    """How ``civicsync capture`` produces (always idempotent with acks=all)."""

    linger_ms: int = Field(default=5, ge=0, le=10_000)
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "lz4"


class LagSettings(Model):
    """How ``civicsync run`` samples the consumer groups' lag (for ``/metrics``, the status API and page)."""

    interval_seconds: float = Field(default=15.0, ge=1.0, le=3_600.0, description="time between samples")
    timeout_seconds: float = Field(default=5.0, ge=0.5, le=120.0,
                                   description="longest wait for the broker per sample; past it the sample "
                                               "fails (civicsync_kafka_lag_sample_failed = 1)")


class DebeziumSource(Model):
    """A connection whose changes the real Debezium PostgreSQL connector writes to Kafka (JSON converter
    with schemas, the settings of :func:`civicsync.kafka.connect.debezium_postgres_config`)."""

    topic_prefix: str = Field(pattern=_TOPIC_PART, description="the connector's topic.prefix: topics are "
                                                                "<topic_prefix>.<schema>.<table>")
    replica_identity_full: bool = Field(default=False, description="the captured tables have REPLICA "
                                                                    "IDENTITY FULL (deletes carry whole rows)")


class KafkaSettings(Model):
    """The ``kafka:`` section."""

    bootstrap_env: str = Field(pattern=_ENV, description="environment variable holding host:port[,host:port...]")
    topic_prefix: str = Field(default="civicsync", pattern=_TOPIC_PART)
    publish: Literal["masked", "raw"] = Field(
        default="masked",
        description="masked: one topic per flow carrying the transformed target rows (only what the target "
                    "may hold); raw: Debezium-style per-table topics <prefix>.<schema>.<table> with the "
                    "source's personal data as it is")
    topics: TopicsSection = Field(default_factory=TopicsSection)
    debezium: dict[str, DebeziumSource] = Field(
        default_factory=dict, description="connection name → its Debezium topics: `apply --group` reads that "
                                          "connection's flows from Debezium instead of `civicsync capture`")
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)
    lag: LagSettings = Field(default_factory=LagSettings)

    def bootstrap(self) -> str:
        """The bootstrap servers, from the environment (a clear error when unset)."""
        value = os.environ.get(self.bootstrap_env, "").strip()
        if not value:
            raise FatalError(f"kafka: environment variable {self.bootstrap_env} is not set "
                             "(it must hold the Kafka bootstrap servers, host:port[,host:port])")
        return value

    def flow_topic(self, flow: str, flow_id: str) -> FlowTopic:
        """The declared topic settings of a flow (by config name or spec id); empty if none."""
        return self.topics.flows.get(flow) or self.topics.flows.get(flow_id) or FlowTopic()

    def raw_topic(self, table: str) -> str:
        """The per-table topic of ``publish: raw`` (Debezium's naming: ``<prefix>.<schema>.<table>``)."""
        return f"{self.topic_prefix}.{table}"

    def debezium_topic(self, connection: str, table: str) -> str | None:
        """The Debezium topic of ``schema.table`` on ``connection`` (None: not a Debezium source)."""
        source = self.debezium.get(connection)
        return None if source is None else f"{source.topic_prefix}.{table}"

    def topic_name(self, flow: str, flow_id: str) -> str:
        """The topic that carries ``flow``'s masked records."""
        return self.flow_topic(flow, flow_id).name or f"{self.topic_prefix}.{flow}"

    def settings(self, flow: str, flow_id: str) -> TopicSettings:
        """A flow's effective topic settings (its own over the defaults), validated together."""
        own = self.flow_topic(flow, flow_id).model_dump(exclude={"name", "partition_by"}, exclude_none=True)
        return TopicSettings.model_validate({**self.topics.defaults.model_dump(exclude_none=True), **own})


def kafka_problems(settings: KafkaSettings, flows: dict[str, tuple[str, str, list[str], bool]],
                   connections: set[str]) -> list[tuple[str, str]]:
    """What the ``kafka:`` section gets wrong about the rest of the config, as (path, message).
    ``flows``: name → (spec id, source connection, target key columns, carried on Kafka)."""
    found = []
    ids = {spec_id: name for name, (spec_id, *_rest) in flows.items()}
    for ref, topic in settings.topics.flows.items():
        name = ref if ref in flows else ids.get(ref)
        path = f"kafka.topics.flows.{ref}"
        if name is None:
            found.append((path, f"no flow called {ref!r}"))
            continue
        _, _, key, carried = flows[name]
        if not carried:
            found.append((path, f"flow {name} is not carried on Kafka (only event-path flows without top_n are)"))
        outside = [c for c in topic.partition_by or [] if c not in key]
        if outside:
            found.append((f"{path}.partition_by", f"{', '.join(outside)} not in the target key ({', '.join(key)}): "
                                                  "a delete carries only the key, so per-key order would break"))
        merged = {**settings.topics.defaults.model_dump(exclude_none=True),
                  **topic.model_dump(exclude={"name", "partition_by"}, exclude_none=True)}
        isr, rf = merged.get("min_insync_replicas"), merged.get("replication_factor", 1)
        if isr is not None and isr > rf:
            found.append((path, f"min_insync_replicas ({isr}) cannot exceed replication_factor ({rf})"))
    for conn in settings.debezium:
        if conn not in connections:
            found.append((f"kafka.debezium.{conn}", f"no connection called {conn!r}"))
    return found
