"""deploy/kafka ships what the code generates, and the shipped worker config and connector config run
on the real Kafka Connect against the reference warehouse schema (secrets from the worker's
environment through ${env:...})."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from civicsync.events import ChangeEvent
from civicsync.kafka.connect import KafkaConnect
from civicsync.kafka.debezium import decode_message
from civicsync.kafka.local import KafkaCluster
from civicsync.localpg import LocalPostgres
from civicsync.provision.databases import init_databases
from fix_db import Deployment
from fix_kafka import DEPLOY_DBNAMES, REPO, consume

DEPLOY = REPO / "deploy" / "kafka"


def test_shipped_files_are_what_the_generator_writes() -> None:
    proc = subprocess.run([sys.executable, str(DEPLOY / "connectors.py"), "--check"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    warehouse = json.loads((DEPLOY / "connectors" / "warehouse.json").read_text())["config"]
    assert set(warehouse["table.include.list"].split(",")) == {
        "public.application_decisions", "public.eligibility_predictions", "public.profile_summaries"}
    citizen = json.loads((DEPLOY / "connectors" / "citizen.json").read_text())["config"]
    assert "public.application_documents" in citizen["table.include.list"].split(",")
    assert all("password" not in v.lower() or v.startswith("${env:") for v in warehouse.values())


@pytest.fixture()
def deploy_warehouse(pg_server: LocalPostgres) -> Iterator[Deployment]:
    dep = Deployment(pg_server, DEPLOY_DBNAMES["warehouse"], DEPLOY_DBNAMES["citizen"])
    dep.drop()
    init_databases(dep.config())
    try:
        yield dep
    finally:
        dep.drop()


def test_shipped_connector_captures_the_reference_warehouse(
        kafka_connect: KafkaConnect, kafka_broker: KafkaCluster, deploy_warehouse: Deployment) -> None:
    body = json.loads((DEPLOY / "connectors" / "warehouse.json").read_text())
    config = {**body["config"], "topic.creation.default.replication.factor": "1"}  # one broker here
    kafka_connect.put_connector(body["name"], config)
    try:
        kafka_connect.wait_running(body["name"])
        with deploy_warehouse.connect("warehouse") as conn:
            conn.execute("INSERT INTO application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                         " decision_code, amount_sanctioned, officer_id, decided_at) VALUES (1, 10,"
                         " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 3, 'APPR', 1234.50, 'OFF-1',"
                         " '2026-03-01 10:00:00.123456+00')")
            conn.execute("SET TimeZone = 'UTC'")
            res = conn.pgconn.exec_(b"SELECT * FROM application_decisions")
            source = {res.fname(j).decode(): (bytes(v).decode() if (v := res.get_value(0, j)) is not None else None)
                      for j in range(res.nfields)}
        (msg,) = consume(kafka_broker.bootstrap, "warehouse.public.application_decisions", 1)
        event = decode_message(msg.key(), msg.value())
        assert isinstance(event, ChangeEvent) and event.op == "c"
        assert event.after == source and event.key == {"decision_id": "1"}
        assert event.source.db == DEPLOY_DBNAMES["warehouse"]
    finally:
        kafka_connect.delete_connector(body["name"])
        with psycopg.connect(deploy_warehouse.warehouse_dsn, autocommit=True) as conn:
            for _ in range(100):
                if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active",
                                    (config["slot.name"],)).fetchall():
                    break
                time.sleep(0.1)
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                         " WHERE slot_name = %s", (config["slot.name"],))
