"""Issue 13 items 1-2 and 4: `civicsync capture` publishes F6 and F7 masked to Kafka; `apply --group`
applies them with the offsets in the target transaction; fenced zombies; replay from earliest.

All real: the session's Kafka 4.3.0 broker, PostgreSQL with logical replication, the reference config.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from civicsync.config import LoadedConfig
from civicsync.kafka.capture import KafkaCapture
from civicsync.kafka.consume import GroupApplier
from civicsync.kafka.declared import declared_topics
from civicsync.kafka.local import KafkaCluster
from civicsync.kafka.offsets import Fenced, advance, claim, read_offsets
from civicsync.kafka.topics import admin_client, ensure_topics
from civicsync.provision.databases import init_databases
from civicsync.reconcile import reconcile_flow
from fix_cdc import cdc_raw, role_environ, wait_for
from fix_db import Deployment, q
from helpers import config_variant

CIT = "00000000-0000-4000-8000-0000000000c1"
BOOTSTRAP_ENV = "CIVICSYNC_TEST_KAFKA_BOOTSTRAP"


def kafka_raw(partitions: int = 3) -> dict[str, Any]:
    """The reference config's citizen → warehouse flows on Kafka, with topics of their own."""
    def mutate(raw: dict[str, Any]) -> None:
        raw["kafka"] = {"bootstrap_env": BOOTSTRAP_ENV, "topic_prefix": f"t{secrets.token_hex(4)}",
                        "topics": {"defaults": {"partitions": partitions, "replication_factor": 1}},
                        "consumer": {"max_wait_ms": 50, "session_timeout_ms": 6000}}
    return cdc_raw(mutate)


def kafka_config(dep: Deployment, broker: KafkaCluster, raw: dict[str, Any]) -> LoadedConfig:
    env = {**role_environ(dep), BOOTSTRAP_ENV: broker.bootstrap}
    config = config_variant(env, lambda r: r.update(raw))
    init_databases(config)
    ensure_topics(admin_client(broker.bootstrap), declared_topics(config, ["F6", "F7"]))
    return config


@pytest.fixture()
def bootstrap_env(kafka_broker: KafkaCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_broker.bootstrap)
    return kafka_broker.bootstrap


class Running:
    """Something with run() and a stop event, on a thread; its error re-raised by stop()."""

    def __init__(self, target: Callable[[], None], stop: threading.Event) -> None:
        self.stop_event = stop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


@contextmanager
def capturing(config: LoadedConfig) -> Iterator[KafkaCapture]:
    stop = threading.Event()
    cap = KafkaCapture(config, "citizen", stop=stop)
    cap.prepare()  # the slot exists before the test writes anything
    running = Running(cap.run, stop)
    try:
        yield cap
    finally:
        running.stop()


@contextmanager
def applying(config: LoadedConfig, group: str, start: str | None = None) -> Iterator[GroupApplier]:
    stop = threading.Event()
    worker = GroupApplier(config, group, ["F6", "F7"], start=start, stop=stop)
    running = Running(worker.run, stop)
    try:
        yield worker
    finally:
        running.stop()


def portal_basics(dep: Deployment) -> None:
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone, updated_at) VALUES"
                      " (%s, 'Asha', '9876543210', now() - interval '1 day')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status)"
                      " VALUES (1, 'S1', 'One', 'C', 'OPEN')")


STATUSES = ("SUBMITTED", "UNDER_REVIEW", "APPROVED")


def workload(dep: Deployment, first: int, count: int) -> None:
    """``count`` applications: a DRAFT (stays home), then three status changes (three events each), a
    note edit (no event), one document inserted, updated, and every third deleted, every third re-keyed."""
    for app in range(first, first + count):
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, form_data)"
                          " VALUES (%s, %s, 1, 'DRAFT', %s)", app, CIT, '{"bank_account": "123456789012"}')
        for status in STATUSES:
            q(dep, "citizen", "UPDATE applications SET status = %s, updated_at = clock_timestamp(),"
                              " submitted_at = coalesce(submitted_at, now()) WHERE application_id = %s", status, app)
        q(dep, "citizen", "UPDATE applications SET decision_note = 'n' WHERE application_id = %s", app)
        q(dep, "citizen", "INSERT INTO application_documents (document_id, application_id, doc_type, file_name,"
                          " mime_type, size_bytes, storage_uri, sha256) VALUES (%s, %s, 'INCOME_CERT', 'a.pdf',"
                          " 'application/pdf', 10, 's3://x/a.pdf', 'ab')", app, app)
        q(dep, "citizen", "UPDATE application_documents SET size_bytes = 20 WHERE document_id = %s", app)
        if app % 3 == 0:
            q(dep, "citizen", "DELETE FROM application_documents WHERE document_id = %s", app)
        elif app % 3 == 1:  # a key change: a delete (+ tombstone) of the old key and a create of the new one
            q(dep, "citizen", "UPDATE application_documents SET document_id = %s WHERE document_id = %s",
              app + 500_000, app)


def converged(dep: Deployment, apps: int) -> bool:
    return (q(dep, "warehouse", "SELECT count(*) FROM applications WHERE status = 'APPROVED'") == [(apps,)]
            and q(dep, "warehouse", "SELECT count(*) FROM application_events")[0][0] >= 3 * apps
            and q(dep, "warehouse", "SELECT count(*) FROM application_documents WHERE size_bytes = 20")
            == q(dep, "citizen", "SELECT count(*) FROM application_documents"))


def assert_exact(dep: Deployment, config: LoadedConfig, apps: int) -> None:
    """Independent SQL (0 lost, 0 duplicate effects) and civicsync's reconciliation."""
    assert q(dep, "warehouse", "SELECT count(*), count(DISTINCT application_id) FROM applications") == [(apps, apps)]
    events = q(dep, "warehouse", "SELECT application_id, event_type, count(*) FROM application_events"
                                 " GROUP BY 1, 2 HAVING count(*) <> 1")
    assert events == [], "an event row was doubled"
    assert q(dep, "warehouse", "SELECT count(*) FROM application_events") == [(3 * apps,)]
    assert q(dep, "warehouse", "SELECT document_id, size_bytes FROM application_documents ORDER BY 1") == \
        q(dep, "citizen", "SELECT document_id, size_bytes FROM application_documents ORDER BY 1")
    for flow in ("F6", "F7"):
        result = reconcile_flow(config, flow)
        assert result.error is None and result.found == 0, (flow, result.as_dict())


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
