"""Issue 13 item 3: the real Debezium PostgreSQL connector on Kafka Connect as a source. The reference
F4 (warehouse decisions → portal applications: update-only, forward-only lifecycle, redacted notes) and
F7 (portal documents → warehouse, file names never leave) end to end on Debezium's topics, through
`apply --group`, with the offsets in the target transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from civicsync.config import LoadedConfig
from civicsync.kafka.consume import GroupApplier
from civicsync.kafka.local import KafkaCluster
from civicsync.provision.databases import init_databases
from civicsync.reconcile import reconcile_flow
from fix_cdc import cdc_raw, role_environ, wait_for
from fix_db import Deployment, q
from fix_kafka import BOOTSTRAP_ENV, DebeziumCapture, Running
from helpers import config_variant

CIT = "00000000-0000-4000-8000-0000000000c1"
APPS = range(100, 110)


def config_for(dep: Deployment, broker: KafkaCluster, prefixes: dict[str, str]) -> LoadedConfig:
    def mutate(raw: dict[str, Any]) -> None:
        raw["kafka"] = {"bootstrap_env": BOOTSTRAP_ENV,
                        "debezium": {c: {"topic_prefix": p} for c, p in prefixes.items()},
                        "consumer": {"max_wait_ms": 50}}
    raw = cdc_raw(mutate)
    config = config_variant({**role_environ(dep), BOOTSTRAP_ENV: broker.bootstrap}, lambda r: r.update(raw))
    init_databases(config)
    return config


def decide(dep: Deployment, decision_id: int, app: int, code: str) -> None:
    q(dep, "warehouse", "INSERT INTO application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                        " decision_code, reason, officer_id, decided_at) VALUES (%s, %s, %s, 1, %s,"
                        " 'checked by OFF-4242', 'OFF-4242', now())", decision_id, app, CIT, code)


def test_f4_and_f7_end_to_end_on_debezium_topics(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str,
        debezium: Callable[..., DebeziumCapture]) -> None:
    dep = fresh_deployment
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone) VALUES (%s, 'Asha', '9876543210')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status)"
                      " VALUES (1, 'S1', 'One', 'C', 'OPEN')")
    for app in APPS:
        q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                          " VALUES (%s, %s, 1, 'SUBMITTED')", app, CIT)
    decide(dep, 1, 100, "UNDER_REVIEW")  # before Debezium starts: reaches the topic in its snapshot
    wh = debezium(dep.warehouse_db, ["public.application_decisions"])
    cz = debezium(dep.citizen_db, ["public.application_documents"])
    config = config_for(dep, kafka_broker, {"warehouse": wh.prefix, "citizen": cz.prefix})
    fast = {"topic.metadata.refresh.interval.ms": 500}
    workers = []
    for group, flow in (("gd4", "F4"), ("gd7", "F7")):
        stop = threading.Event()
        worker = GroupApplier(config, group, [flow], stop=stop, consumer_conf=fast)
        workers.append(Running(worker.run, stop))
    try:
        decision = 2
        for app in APPS:
            for code in ("UNDER_REVIEW", "APPR", "RCVD"):  # the late RCVD must not move a decision back
                decide(dep, decision, app, code)
                decision += 1
            q(dep, "citizen", "INSERT INTO application_documents (document_id, application_id, doc_type, file_name,"
                              " mime_type, size_bytes, storage_uri, sha256) VALUES (%s, %s, 'INCOME_CERT',"
                              " 'asha_income.pdf', 'application/pdf', 10, 's3://x/asha_income.pdf', 'ab')", app, app)
            q(dep, "citizen", "UPDATE application_documents SET size_bytes = 20 WHERE document_id = %s", app)
        q(dep, "citizen", "DELETE FROM application_documents WHERE document_id = 105")
        wait_for(lambda: q(dep, "citizen", "SELECT count(*) FROM applications WHERE status = 'APPROVED'")
                 == [(len(APPS),)], timeout=120, what="F4 through Debezium")
        # The whole end state, not a count: nine rows of size 20 were also there before the last
        # update and the delete had landed (CI once compared in that moment).
        docs = "SELECT document_id, size_bytes FROM application_documents ORDER BY 1"
        wait_for(lambda: q(dep, "warehouse", docs) == q(dep, "citizen", docs) and len(q(dep, "citizen", docs))
                 == len(APPS) - 1, timeout=60, what="F7 through Debezium")
    finally:
        for w in workers:
            w.stop()
    # After every late RCVD was applied too (the offsets are past them), nothing moved back.
    assert q(dep, "citizen", "SELECT DISTINCT status FROM applications") == [("APPROVED",)]
    notes = q(dep, "citizen", "SELECT DISTINCT decision_note FROM applications")
    assert notes == [("checked by [OFFICER]",)], notes  # the officer id never left the warehouse
    assert q(dep, "warehouse", "SELECT count(*) FROM application_documents t WHERE t::text LIKE %s",
             "%asha_income%") == [(0,)]
    assert q(dep, "warehouse", "SELECT document_id, size_bytes FROM application_documents ORDER BY 1") == \
        q(dep, "citizen", "SELECT document_id, size_bytes FROM application_documents ORDER BY 1")
    result = reconcile_flow(config, "F7")
    assert result.error is None and result.found == 0, result.as_dict()
    # Every partition's position is in the target, written with the rows.
    assert q(dep, "citizen", "SELECT count(*) > 0 FROM civicsync.kafka_offsets WHERE group_id = 'gd4'") == [(True,)]
