"""Topics from a declaration, against the real broker: created, re-run changes nothing, grown and
re-configured in place, dry run touches nothing, and what Kafka cannot do is refused clearly."""

from __future__ import annotations

import secrets

import pytest

from civicsync.kafka.local import KafkaCluster
from civicsync.kafka.topics import TopicsError, TopicSpec, admin_client, ensure_topics, plan_topics


def _name() -> str:
    return f"flow_{secrets.token_hex(4)}"


def _state(kafka_broker: KafkaCluster, name: str) -> tuple[int, dict[str, str]]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = admin_client(kafka_broker.bootstrap)
    partitions = len(admin.list_topics(name, timeout=10).topics[name].partitions)
    resource = ConfigResource(ResourceType.TOPIC, name)
    configs = {k: e.value for k, e in admin.describe_configs([resource])[resource].result(10).items()}
    return partitions, configs


def test_create_then_nothing_then_grow_and_reconfigure(kafka_broker: KafkaCluster) -> None:
    admin = admin_client(kafka_broker.bootstrap)
    a, b = _name(), _name()
    specs = [TopicSpec(a, 3, 1, retention_ms=7 * 86_400_000, min_insync_replicas=1),
             TopicSpec(b, 1, 1, config={"cleanup.policy": "compact"})]
    changes = ensure_topics(admin, specs)
    assert sorted((c.topic, c.action) for c in changes) == sorted([(a, "create"), (b, "create")])
    partitions, configs = _state(kafka_broker, a)
    assert partitions == 3 and configs["retention.ms"] == str(7 * 86_400_000)
    assert configs["min.insync.replicas"] == "1"
    assert _state(kafka_broker, b)[1]["cleanup.policy"] == "compact"

    assert ensure_topics(admin, specs) == []  # idempotent

    grown = [TopicSpec(a, 6, 1, retention_ms=-1, min_insync_replicas=1), specs[1]]
    planned = plan_topics(admin, grown)
    assert [(c.topic, c.action) for c in planned] == [(a, "add_partitions"), (a, "set_config")]
    assert ensure_topics(admin, grown, apply=False) == planned
    assert _state(kafka_broker, a)[0] == 3  # a dry run changes nothing
    assert ensure_topics(admin, grown) == planned
    partitions, configs = _state(kafka_broker, a)
    assert partitions == 6 and configs["retention.ms"] == "-1"
    assert plan_topics(admin, grown) == []


def test_what_kafka_cannot_do_is_refused_before_anything_changes(kafka_broker: KafkaCluster) -> None:
    admin = admin_client(kafka_broker.bootstrap)
    a, fresh = _name(), _name()
    ensure_topics(admin, [TopicSpec(a, 4, 1)])
    with pytest.raises(TopicsError) as err:
        ensure_topics(admin, [TopicSpec(fresh, 1, 1), TopicSpec(a, 2, 1)])
    assert "cannot reduce them to 2" in str(err.value)
    assert fresh not in admin.list_topics(timeout=10).topics  # all or nothing: the good one was not made
    with pytest.raises(TopicsError, match="needs 3 brokers; the cluster has 1"):
        ensure_topics(admin, [TopicSpec(fresh, 1, 3, min_insync_replicas=2)])
    with pytest.raises(TopicsError, match=r"min\.insync\.replicas must be between 1 and the replication factor"):
        ensure_topics(admin, [TopicSpec(fresh, 1, 1, min_insync_replicas=2)])
    with pytest.raises(TopicsError, match="declared twice"):
        ensure_topics(admin, [TopicSpec(fresh, 1, 1), TopicSpec(fresh, 2, 1)])


def test_an_unreachable_cluster_is_a_clear_error() -> None:
    from civicsync.localpg import free_port

    admin = admin_client(f"127.0.0.1:{free_port()}", **{"socket.timeout.ms": 1000})
    with pytest.raises(TopicsError, match="cannot reach Kafka"):
        plan_topics(admin, [TopicSpec("x", 1, 1)], timeout=2)
