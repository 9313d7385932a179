"""Fixtures: the real Kafka 4.3.0 broker (one per session) and Kafka Connect with Debezium (started
only by the tests that ask for it), from the jars scripts/setup-kafka.sh put in .kafka/.

Where that set-up found Maven Central unreachable, every test using them is skipped with its
one-line reason. Jars that are simply not installed are an error, not a skip: CI installs them.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Message

from civicsync.capture.slots import drop_publication, drop_slot
from civicsync.kafka.connect import KafkaConnect, debezium_postgres_config
from civicsync.kafka.jvm import kafka_home
from civicsync.kafka.local import KafkaCluster, single_broker
from civicsync.localpg import SUPERUSER, LocalPostgres


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
