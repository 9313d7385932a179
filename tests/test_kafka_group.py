"""Issue 13 items 1-2 and 4: `civicsync capture` publishes F6 and F7 masked to Kafka; `apply --group`
applies them with the offsets in the target transaction; fenced zombies; replay from earliest.

All real: the session's Kafka 4.3.0 broker, PostgreSQL with logical replication, the reference config.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from civicsync.kafka.declared import declared_topics
from civicsync.kafka.local import KafkaCluster
from civicsync.kafka.offsets import Fenced, advance, claim, read_offsets
from fix_cdc import CIT, wait_for
from fix_db import Deployment, q
from fix_kafka import applying, assert_exact, capturing, converged, kafka_config, kafka_raw, portal_basics, workload


def digest(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM applications t),"
                               " (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM application_events t),"
                               " (SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM application_documents t)")


def test_capture_then_group_apply_is_exact_masked_and_replay_changes_nothing(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    config = kafka_config(dep, kafka_broker, kafka_raw())
    apps = 30
    with capturing(config) as cap:
        workload(dep, 1000, apps)
        with applying(config, "g1") as worker:
            wait_for(lambda: converged(dep, apps), timeout=90, what="the group to apply everything")
        assert cap.stats.records > 0 and not cap.stats.failures
    assert worker.stats.fenced == 0
    assert_exact(dep, config, apps)
    # Masked: the bus carries the transformed row (the pseudonym, never the citizen id or a file name).
    from fix_kafka import consume
    topic = config.model.kafka.topic_name("application_submissions", "F6")  # type: ignore[union-attr]
    raw = b"".join((m.value() or b"") for m in consume(bootstrap_env, topic, 3 * apps, timeout=30))
    assert CIT.encode() not in raw and b"123456789012" not in raw and b"citizen_ref" in raw
    docs = config.model.kafka.topic_name("document_metadata", "F7")  # type: ignore[union-attr]
    assert b"a.pdf" not in b"".join((m.value() or b"") for m in consume(bootstrap_env, docs, apps, timeout=30))
    before = digest(dep)
    # Replay everything the topics hold with a new worker of the same group: the target does not change.
    with applying(config, "g1", start="earliest") as replay:
        wait_for(lambda: replay.stats.records >= 5 * apps, timeout=60, what="the replay")
    assert digest(dep) == before
    assert_exact(dep, config, apps)


def fenced_after_the_new_owner_commits(new_owner: psycopg.Connection[Any], zombie: psycopg.Connection[Any],
                                       work: Callable[[], None]) -> BaseException | None:
    """Run the zombie's ``work`` on a thread while the new owner's transaction holds the row lock; it
    must wait, and end once the new owner commits. Returns the Fenced it raised (or None)."""
    done: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            done.append(None)
        except Fenced as exc:
            zombie.rollback()
            done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    assert not done, "the zombie must wait for the new owner's row lock"
    new_owner.commit()
    thread.join(10)
    return done[0]


def test_a_worker_that_lost_its_partition_is_fenced_and_rolls_back(fresh_deployment: Deployment) -> None:
    """The compare-and-set on civicsync.kafka_offsets: the zombie's update matches nothing (also when it
    waited on the new owner's row lock), and its rows roll back with it."""
    dep = fresh_deployment
    with psycopg.connect(dep.warehouse_dsn) as new_owner, psycopg.connect(dep.warehouse_dsn) as zombie:
        advance(new_owner, "g", "t", 0, None, 10, "a")
        new_owner.commit()
        # Both hold offset 10; the new owner advances first and keeps its transaction open.
        advance(new_owner, "g", "t", 0, 10, 20, "b")

        def zombie_commit() -> None:
            zombie.execute("INSERT INTO civicsync.watermarks (flow, value) VALUES ('zombie', 'x')")
            advance(zombie, "g", "t", 0, 10, 15, "a")
            zombie.commit()

        assert isinstance(fenced_after_the_new_owner_commits(new_owner, zombie, zombie_commit), Fenced)
        assert read_offsets(new_owner, "g", [("t", 0)]) == {("t", 0): 20}
        assert new_owner.execute("SELECT count(*) FROM civicsync.watermarks WHERE flow = 'zombie'").fetchone() == (0,)
        with pytest.raises(Fenced):
            advance(zombie, "g", "t", 0, None, 5, "a")  # a first insert loses to an existing row too


def test_a_claim_first_in_the_batch_fences_a_zombie_before_it_writes(fresh_deployment: Deployment) -> None:
    """The pipeline's Kafka target claims its partitions first (apply), then advances them (checkpoint):
    the claim waits on the new owner's row lock and then fences the zombie, as the update does."""
    dep = fresh_deployment
    with psycopg.connect(dep.warehouse_dsn) as new_owner, psycopg.connect(dep.warehouse_dsn) as zombie:
        advance(new_owner, "c", "t", 0, None, 10, "a")
        new_owner.commit()
        claim(new_owner, "c", "t", 0, 10)
        advance(new_owner, "c", "t", 0, 10, 20, "b")  # the new owner's transaction stays open
        assert isinstance(fenced_after_the_new_owner_commits(
            new_owner, zombie, lambda: claim(zombie, "c", "t", 0, 10)), Fenced)
        claim(zombie, "c", "t", 0, 20)  # what the table holds is claimable
        claim(zombie, "c", "t", 1, None)  # and so is a partition never stored
        zombie.rollback()
        with pytest.raises(Fenced):
            claim(zombie, "c", "t", 0, None)  # a first claim loses to an existing row


def test_consumer_lag_per_partition_counts_unapplied_records_and_their_age(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str) -> None:
    from civicsync.kafka.lag import consumer_lag

    dep = fresh_deployment
    portal_basics(dep)
    config = kafka_config(dep, kafka_broker, kafka_raw(partitions=2))
    with capturing(config) as cap:
        workload(dep, 2000, 4)
        with applying(config, "glag"):
            wait_for(lambda: converged(dep, 4), timeout=60, what="the first records")
        assert all(r.lag_records == 0 and r.lag_seconds == 0 for r in consumer_lag(config))
        published = cap.stats.records
        workload(dep, 3000, 6)  # no worker runs now: these wait in Kafka
        wait_for(lambda: cap.stats.records >= published + 6 * 5 and cap.producer.flush(0) == 0, timeout=30,
                 what="the capture to publish")
        time.sleep(1.5)
        lags = consumer_lag(config)
        assert {r.group for r in lags} == {"glag"} and sum(r.lag_records for r in lags) >= 6 * 5
        assert max(r.lag_seconds for r in lags) >= 1.0
        with applying(config, "glag"):
            wait_for(lambda: converged(dep, 10), timeout=60, what="the group to catch up")
    wait_for(lambda: sum(r.lag_records for r in consumer_lag(config)) == 0, timeout=10, what="lag 0")


def test_publish_raw_puts_source_rows_on_per_table_topics_and_the_group_applies_them_the_same(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str) -> None:
    """`publish: raw`: Debezium-style `<prefix>.<schema>.<table>` topics carrying the source rows (the
    personal data as it is, which is why the config must say so), applied through the flows' transforms."""
    from fix_kafka import consume

    dep = fresh_deployment
    portal_basics(dep)
    raw = kafka_raw()
    raw["kafka"]["publish"] = "raw"
    config = kafka_config(dep, kafka_broker, raw)
    topics = {s.name for s in declared_topics(config, ["F6", "F7"])}
    prefix = raw["kafka"]["topic_prefix"]
    assert topics == {f"{prefix}.public.applications", f"{prefix}.public.application_documents"}
    apps = 12
    with capturing(config):
        workload(dep, 4000, apps)
        with applying(config, "graw"):
            wait_for(lambda: converged(dep, apps), timeout=90, what="the group to apply the raw topics")
    assert_exact(dep, config, apps)
    on_bus = b"".join((m.value() or b"") for m in consume(bootstrap_env, f"{prefix}.public.applications", 5 * apps))
    assert CIT.encode() in on_bus  # raw: the source's citizen id travels (the masked default never does)


def test_from_a_timestamp_starts_at_the_first_record_at_or_after_it(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str) -> None:
    """`apply --group G --from TIMESTAMP`: records before the time are not re-applied; a time after the last
    record starts at the end (not at the beginning)."""
    from datetime import UTC, datetime

    dep = fresh_deployment
    portal_basics(dep)
    config = kafka_config(dep, kafka_broker, kafka_raw(partitions=2))
    with capturing(config) as cap:
        workload(dep, 6000, 3)
        wait_for(lambda: cap.stats.records >= 3 * 5 and cap.producer.flush(0) == 0, timeout=30, what="published")
        time.sleep(1.0)
        later = datetime.now(UTC).isoformat()
        with applying(config, "gfrom", start=later) as worker:
            time.sleep(4)  # assigned, positioned at the end: nothing of the earlier records is applied
            assert worker.stats.records == 0
            workload(dep, 6100, 2)
            wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM applications") == [(2,)], timeout=60,
                     what="only the records after the timestamp")
    assert q(dep, "warehouse", "SELECT min(application_id) FROM applications") == [(6100,)]
