"""Fixtures: the real Kafka 4.3.0 broker (one per session) and Kafka Connect with Debezium (started
only by the tests that ask for it), from the jars scripts/setup-kafka.sh put in .kafka/.

Where that set-up found Maven Central unreachable, every test using them is skipped with its
one-line reason. Jars that are simply not installed are an error, not a skip: CI installs them.

Also what the Kafka tests share: the reference config on Kafka, `civicsync capture` and `apply --group`
on threads, the portal workload and its exact-convergence checks.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Message

from civicsync.capture.slots import drop_publication, drop_slot
from civicsync.config import LoadedConfig
from civicsync.kafka.capture import KafkaCapture
from civicsync.kafka.connect import KafkaConnect, debezium_postgres_config
from civicsync.kafka.consume import GroupApplier
from civicsync.kafka.declared import declared_topics
from civicsync.kafka.jvm import kafka_home
from civicsync.kafka.local import KafkaCluster, single_broker
from civicsync.kafka.topics import admin_client, ensure_topics
from civicsync.localpg import SUPERUSER, LocalPostgres
from civicsync.provision.databases import init_databases
from civicsync.reconcile import reconcile_flow
from fix_cdc import CIT, cdc_raw, role_environ
from fix_db import Deployment, q
from helpers import config_variant


def skip_if_kafka_unavailable() -> None:
    """Skip with the set-up's one-line reason where Maven Central could not be reached."""
    marker = kafka_home() / "UNAVAILABLE"
    if marker.exists():
        pytest.skip(marker.read_text().strip())


def kafka_tmp(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("CIVICSYNC_TEST_TMP")))


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaCluster]:
    """One real KRaft broker (combined mode, 512 MB heap) for the whole session."""
    skip_if_kafka_unavailable()
    broker = single_broker(kafka_tmp("civicsync-test-kafka-"))
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()


REPO = Path(__file__).resolve().parents[1]
# The databases the shipped connector configs (deploy/kafka/connectors/*.json) point at in tests.
DEPLOY_DBNAMES = {"warehouse": "kafka_deploy_wh", "citizen": "kafka_deploy_cz"}


def shipped_worker_properties(group_id: str) -> dict[str, str]:
    """deploy/kafka's worker config, for one broker: replication factor 1, a fresh group and topics."""
    props = {}
    for line in (REPO / "deploy" / "kafka" / "connect-distributed.properties").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key] = value
    props.update({"group.id": group_id, "config.storage.topic": f"{group_id}-configs",
                  "offset.storage.topic": f"{group_id}-offsets", "status.storage.topic": f"{group_id}-status"})
    props.update({f"{kind}.storage.replication.factor": "1" for kind in ("config", "offset", "status")})
    return props


@pytest.fixture(scope="session")
def kafka_connect(kafka_broker: KafkaCluster, pg_server: LocalPostgres) -> Iterator[KafkaConnect]:
    """Kafka Connect with deploy/kafka's worker config (Debezium on its plugin path), its environment
    pointing the shipped connector configs at the test server; started the first time a test asks."""
    env = {}
    for connection, dbname in DEPLOY_DBNAMES.items():
        prefix = f"CIVICSYNC_DEBEZIUM_{connection.upper()}_"
        env.update({prefix + "HOST": "127.0.0.1", prefix + "PORT": str(pg_server.port), prefix + "USER": SUPERUSER,
                    prefix + "PASSWORD": "", prefix + "DBNAME": dbname})
    group = f"connect-{secrets.token_hex(3)}"
    connect = KafkaConnect(kafka_tmp("civicsync-test-connect-"), kafka_broker.bootstrap, group_id=group,
                           base=shipped_worker_properties(group), env=env)
    connect.start()
    try:
        yield connect
    finally:
        connect.destroy()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Message]:
    """Read ``count`` messages (tombstones included) from the start of ``topic`` with a fresh group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{secrets.token_hex(4)}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "topic.metadata.refresh.interval.ms": 500})
    consumer.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < count:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                # The topic appears when its first event is written; until then the broker says so.
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise AssertionError(f"consuming {topic}: {err}")
            got.append(msg)
    finally:
        consumer.close()
    return got


@dataclass
class DebeziumCapture:
    """A Debezium PostgreSQL connector registered on Connect for some tables of one database."""

    connect: KafkaConnect
    server: LocalPostgres
    dbname: str
    tables: list[str]
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def name(self) -> str:
        return f"dbz_{self.tag}"

    @property
    def prefix(self) -> str:
        return f"dbz{self.tag}"

    @property
    def slot(self) -> str:
        return f"dbz_slot_{self.tag}"

    @property
    def publication(self) -> str:
        return f"dbz_pub_{self.tag}"

    def topic(self, table: str) -> str:
        """Debezium's topic for ``schema.table``."""
        return f"{self.prefix}.{table}"

    def start(self, **overrides: str) -> None:
        config = debezium_postgres_config(
            host="127.0.0.1", port=self.server.port, user=SUPERUSER, dbname=self.dbname,
            topic_prefix=self.prefix, tables=self.tables, slot=self.slot, publication=self.publication)
        config.update(overrides)
        self.connect.put_connector(self.name, config)
        self.connect.wait_running(self.name)

    def stop(self) -> None:
        self.connect.delete_connector(self.name)
        with psycopg.connect(self.server.dsn(self.dbname), autocommit=True) as conn:
            for _ in range(100):  # the connector lets go of its slot shortly after it is deleted
                try:
                    drop_slot(conn, self.slot)
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
            drop_publication(conn, self.publication)


@pytest.fixture()
def debezium(kafka_connect: KafkaConnect, pg_server: LocalPostgres) -> Iterator[Callable[..., DebeziumCapture]]:
    """Start Debezium on tables of a database: ``debezium(dbname, ["public.t"])``; removed afterwards."""
    started: list[DebeziumCapture] = []

    def start(dbname: str, tables: list[str], **overrides: str) -> DebeziumCapture:
        capture = DebeziumCapture(kafka_connect, pg_server, dbname, tables)
        started.append(capture)
        capture.start(**overrides)
        return capture

    try:
        yield start
    finally:
        for capture in started:
            capture.stop()


@pytest.fixture()
def scratch_db(pg_server: LocalPostgres) -> Iterator[str]:
    """A fresh empty database on the test server, dropped afterwards."""
    name = f"kafka_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def payload(msg: Message) -> Any:
    """The ``payload`` of a JSON-with-schema message value (None for a tombstone)."""
    raw = msg.value()
    return None if raw is None else json.loads(raw)["payload"]


# --------------------------------------------------------------------------- capture and group apply

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
