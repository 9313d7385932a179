"""The topics the config declares: one per Kafka-carried flow, with the flow's settings over the defaults."""

from __future__ import annotations

from civicsync.config import LoadedConfig
from civicsync.kafka.capture import group_flows, kafka_settings
from civicsync.kafka.topics import TopicSpec


def declared_topics(config: LoadedConfig, flows: list[str] | None = None) -> list[TopicSpec]:
    """A :class:`TopicSpec` per flow carried on Kafka (event-path flows without top_n). Compacting is
    left off: the topics are a change log that replays must read whole within retention."""
    settings = kafka_settings(config)
    specs: dict[str, TopicSpec] = {}
    for name in group_flows(config, flows):
        flow = config.model.flows[name]
        if flow.source.connection in settings.debezium:
            continue  # Debezium's topics are Debezium's (deploy/kafka/connectors)
        own = settings.settings(name, flow.id)
        topic = (settings.raw_topic(flow.source.table) if settings.publish == "raw"
                 else settings.topic_name(name, flow.id))
        specs.setdefault(topic, TopicSpec(topic, own.partitions, own.replication_factor, retention_ms=own.retention_ms,
                                          min_insync_replicas=own.min_insync_replicas))
    return list(specs.values())
