"""Kafka topics made to match a declaration, idempotently (create, add partitions, set configs).

:func:`plan_topics` compares the declared :class:`TopicSpec` list with the cluster and lists the
changes; :func:`ensure_topics` makes them. Running either again changes nothing once the cluster
matches. What Kafka cannot do in place (fewer partitions, another replication factor) is refused
with a clear error rather than half-done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from civicsync.errors import FatalError

_TIMEOUT = 30.0


class TopicsError(FatalError):
    """The declared topics cannot be made (or the cluster cannot be reached)."""


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic. ``retention_ms=-1`` keeps messages forever; None leaves the broker default."""

    name: str
    partitions: int
    replication_factor: int
    retention_ms: int | None = None
    min_insync_replicas: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)  # any other topic config, e.g. cleanup.policy

    def configs(self) -> dict[str, str]:
        """The topic configs this spec sets (only those it names)."""
        out = dict(self.config)
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        if self.min_insync_replicas is not None:
            out["min.insync.replicas"] = str(self.min_insync_replicas)
        return out

    def problems(self, brokers: int) -> list[str]:
        """What is wrong with this spec on a cluster of ``brokers`` brokers."""
        found = []
        if self.partitions < 1:
            found.append(f"topic {self.name}: partitions must be at least 1")
        if self.replication_factor < 1:
            found.append(f"topic {self.name}: replication factor must be at least 1")
        elif self.replication_factor > brokers:
            found.append(f"topic {self.name}: replication factor {self.replication_factor} needs "
                         f"{self.replication_factor} brokers; the cluster has {brokers}")
        if self.min_insync_replicas is not None and not 1 <= self.min_insync_replicas <= self.replication_factor:
            found.append(f"topic {self.name}: min.insync.replicas must be between 1 and the replication factor "
                         f"({self.replication_factor})")
        return found


@dataclass(frozen=True)
class TopicChange:
    """One change :func:`ensure_topics` makes: ``create``, ``add_partitions`` or ``set_config``."""

    topic: str
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.action} {self.detail}"


def admin_client(bootstrap: str, **conf: Any) -> AdminClient:
    """An admin client for ``bootstrap`` (``host:port,...``)."""
    return AdminClient({"bootstrap.servers": bootstrap, **conf})


def _existing(admin: AdminClient, names: list[str],
              timeout: float = _TIMEOUT) -> tuple[dict[str, tuple[int, int]], int]:
    """{topic: (partitions, replication factor)} for those of ``names`` that exist, and the broker count."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicsError(f"cannot reach Kafka to read its topics: {exc.args[0]}") from None
    found = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            continue
        partitions = topic.partitions
        replicas = max((len(p.replicas) for p in partitions.values()), default=0)
        found[name] = (len(partitions), replicas)
    return found, len(metadata.brokers)


def _current_configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    out = {}
    for resource, future in futures.items():
        entries = future.result(_TIMEOUT)
        out[resource.name] = {k: e.value for k, e in entries.items()}
    return out


def plan_topics(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = _TIMEOUT) -> list[TopicChange]:
    """The changes that make the cluster match ``specs``; raises TopicsError for impossible ones
    (and when the cluster does not answer within ``timeout`` seconds)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise TopicsError("a topic is declared twice: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    existing, brokers = _existing(admin, names, timeout)
    problems = [p for s in specs for p in s.problems(brokers)]
    for spec in specs:
        if spec.name in existing:
            partitions, replicas = existing[spec.name]
            if spec.partitions < partitions:
                problems.append(f"topic {spec.name}: has {partitions} partitions; Kafka cannot reduce them to "
                                f"{spec.partitions} (create a new topic and move the consumers)")
            if spec.replication_factor != replicas:
                problems.append(f"topic {spec.name}: has replication factor {replicas}, declared "
                                f"{spec.replication_factor}; change it with a partition reassignment")
    if problems:
        raise TopicsError("\n".join(problems))
    configs = _current_configs(admin, [n for n in names if n in existing])
    changes = []
    for spec in specs:
        if spec.name not in existing:
            changes.append(TopicChange(spec.name, "create", f"{spec.partitions} partitions, replication factor "
                                       f"{spec.replication_factor}, {_describe(spec.configs())}"))
            continue
        if spec.partitions > existing[spec.name][0]:
            changes.append(TopicChange(spec.name, "add_partitions", f"{existing[spec.name][0]} -> {spec.partitions}"))
        current = configs.get(spec.name, {})
        for key, value in sorted(spec.configs().items()):
            if current.get(key) != value:
                changes.append(TopicChange(spec.name, "set_config", f"{key}={value} (was {current.get(key)})"))
    return changes


def _describe(configs: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(configs.items())) or "broker defaults"


def ensure_topics(admin: AdminClient, specs: Sequence[TopicSpec], apply: bool = True) -> list[TopicChange]:
    """Make the cluster match ``specs`` (with ``apply=False`` only say what would change)."""
    changes = plan_topics(admin, specs)
    if not apply or not changes:
        return changes
    by_name = {s.name: s for s in specs}
    created = [by_name[c.topic] for c in changes if c.action == "create"]
    grown = [by_name[c.topic] for c in changes if c.action == "add_partitions"]
    altered = sorted({c.topic for c in changes if c.action == "set_config"})
    try:
        if created:
            _wait(admin.create_topics([NewTopic(s.name, s.partitions, s.replication_factor, config=s.configs())
                                       for s in created]))
        if grown:
            _wait(admin.create_partitions([NewPartitions(s.name, s.partitions) for s in grown]))
        if altered:
            _wait(admin.incremental_alter_configs([_alter(by_name[n]) for n in altered]))
    except KafkaException as exc:
        raise TopicsError(f"Kafka refused a topic change: {exc.args[0]}") from None
    _wait_visible(admin, created + grown)
    return changes


def _wait_visible(admin: AdminClient, specs: Sequence[TopicSpec]) -> None:
    """Return once the brokers' metadata shows the new topics and partitions, so a re-plan sees them."""
    deadline = time.monotonic() + _TIMEOUT
    while specs and time.monotonic() < deadline:
        existing, _ = _existing(admin, [s.name for s in specs])
        if all(existing.get(s.name, (0, 0))[0] >= s.partitions for s in specs):
            return
        time.sleep(0.1)


def _alter(spec: TopicSpec) -> ConfigResource:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in spec.configs().items()]
    return ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries)


def _wait(futures: Mapping[Any, Any]) -> None:
    for future in futures.values():
        future.result(_TIMEOUT)
