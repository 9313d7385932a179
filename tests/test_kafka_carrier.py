"""One carrier per flow: with a ``kafka:`` section the Kafka-carried flows (event-path flows without
top_n) run only on Kafka (`civicsync capture` + `apply --group`). The native path (`civicsync run`'s
supervisor, `cdc run`, `cdc resync`) runs only the others (F3), refuses a carried flow named on its
command line (exit 2), and status shows the capture's slot for the carried flows, never a missing
native worker.

All real: PostgreSQL with logical replication, the session's Kafka broker where a capture runs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicsync.config import LoadedConfig
from civicsync.config.models import slot_name
from civicsync.config.service import Supervisor as SupervisorSettings
from civicsync.errors import FatalError, UsageError
from civicsync.kafka.capture import KafkaCapture, capture_slot, group_flows
from civicsync.kafka.declared import declared_topics
from civicsync.kafka.lag import LagSample, with_kafka_lag
from civicsync.kafka.local import KafkaCluster
from civicsync.kafka.topics import admin_client, ensure_topics
from civicsync.provision.databases import init_databases
from civicsync.runtime.cdc import CdcWorker
from civicsync.runtime.state import ServiceState
from civicsync.runtime.supervisor import Supervisor
from civicsync.service import Service, ServiceOptions
from civicsync.status import cdc_sources, flow_status
from fix_cdc import cdc_raw, cleanup, role_environ, wait_for, write_config
from fix_db import Deployment, q
from helpers import config_variant

BOOTSTRAP_ENV = "CIVICSYNC_TEST_CARRIER_BOOTSTRAP"
NOWHERE = "127.0.0.1:1"  # nothing listens there: the native path must not need a broker
CIT = "00000000-0000-4000-8000-0000000000c9"
CARRIED_IDS = {"F4", "F5", "F6", "F7", "F8"}  # the reference's event-path flows without top_n


def carrier_raw(debezium: bool = False) -> dict[str, Any]:
    """The reference config with random slots and a kafka: section (optionally Debezium capturing citizen)."""
    def mutate(raw: dict[str, Any]) -> None:
        raw["kafka"] = {"bootstrap_env": BOOTSTRAP_ENV, "topic_prefix": f"c{secrets.token_hex(4)}",
                        "topics": {"defaults": {"partitions": 1, "replication_factor": 1}},
                        "lag": {"interval_seconds": 1, "timeout_seconds": 2}}
        if debezium:
            raw["kafka"]["debezium"] = {"citizen": {"topic_prefix": "dbzcarrier"}}
    return cdc_raw(mutate)


def load(dep: Deployment, raw: dict[str, Any], bootstrap: str = NOWHERE) -> LoadedConfig:
    config = config_variant({**role_environ(dep), BOOTSTRAP_ENV: bootstrap}, lambda r: r.update(raw))
    init_databases(config)
    return config


def ids(config: LoadedConfig, names: list[str]) -> set[str]:
    return {config.model.flows[n].id for n in names}


def portal_basics(dep: Deployment) -> None:
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone) VALUES (%s, 'Asha', '9876543210')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status)"
                      " VALUES (1, 'S1', 'One', 'C', 'OPEN')")
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name) VALUES (%s, '1', 'A')", CIT)
    q(dep, "warehouse", "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type, status)"
                        " VALUES (1, 'S1', 'n', 'd', 'c', 'CASH', 'ACTIVE')")


def carried_changes(dep: Deployment) -> None:
    """An F6 application (with its status events) and an F7 document, on the citizen database."""
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, form_data)"
                      " VALUES (71, %s, 1, 'SUBMITTED', '{}')", CIT)
    q(dep, "citizen", "UPDATE applications SET status = 'UNDER_REVIEW', updated_at = clock_timestamp()"
                      " WHERE application_id = 71")
    q(dep, "citizen", "INSERT INTO application_documents (document_id, application_id, doc_type, file_name,"
                      " mime_type, size_bytes, storage_uri, sha256) VALUES (71, 71, 'INCOME_CERT', 'a.pdf',"
                      " 'application/pdf', 10, 's3://x/a.pdf', 'ab')")


def slots_on(dep: Deployment, db: str) -> list[str]:
    return [r[0] for r in q(dep, db, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
                                     " ORDER BY 1")]


def cli(config_file: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args, "--config", str(config_file)],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", **env,
                               **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})


# --------------------------------------------------------------------------- the one definition


def test_the_native_path_runs_only_the_flows_kafka_does_not_carry(fresh_deployment: Deployment,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dep = fresh_deployment
    monkeypatch.setenv(BOOTSTRAP_ENV, NOWHERE)
    config = load(dep, carrier_raw())
    model = config.model
    assert ids(config, model.kafka_flows()) == CARRIED_IDS
    assert group_flows(config, None) == model.kafka_flows()  # kafka/capture.py asks the config
    assert ids(config, model.native_flows("warehouse")) == {"F3"}
    assert model.native_flows("citizen") == []
    assert cdc_sources(config) == ["warehouse"]  # citizen's flows are all on Kafka: no native slot
    assert set(cdc_sources(config, carried=True)) == {"warehouse", "citizen"}

    state = ServiceState()
    supervisor = Supervisor(config, state, SupervisorSettings())
    assert supervisor.sources == ["warehouse"] and set(state.workers) == {"warehouse"}
    assert ids(config, state.workers["warehouse"].flows) == {"F3"}
    assert ids(config, CdcWorker(config, "warehouse").flows) == {"F3"}
    with pytest.raises(FatalError, match="carried by Kafka"):
        CdcWorker(config, "citizen")
    with pytest.raises(UsageError, match=r"F6.*carried by Kafka.*apply --group G --flow F6"):
        CdcWorker(config, "citizen", ["F6"])
    with pytest.raises(UsageError, match="carried by Kafka"):
        Supervisor(config, ServiceState(), SupervisorSettings(), flows=["F3", "F6"])
    # A hybrid flow named for the service keeps its batch path; its event path stays on Kafka.
    assert Supervisor(config, ServiceState(), SupervisorSettings(), flows=["F8"]).sources == []
    # Dead-letter replay re-reads source rows (no slot): it still reaches the carried flows.
    assert ids(config, CdcWorker(config, "citizen", carried=True).flows) == {"F5", "F6", "F7"}

    without = load(dep, cdc_raw())  # no kafka: section: the native path runs every event-path flow
    assert without.model.kafka_flows() == [] and group_flows(without, None) == []
    assert ids(without, CdcWorker(without, "citizen").flows) == {"F5", "F6", "F7"}
    assert set(cdc_sources(without)) == {"warehouse", "citizen"}


# --------------------------------------------------------------------------- `civicsync run`'s workers


def test_service_workers_apply_f3_and_never_a_kafka_carried_change(fresh_deployment: Deployment,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """`civicsync run` with a kafka: section and no apply --group anywhere: an F3 change lands through the
    native worker; the F6/F7 changes made before it never do (no native slot on citizen at all)."""
    dep = fresh_deployment
    monkeypatch.setenv(BOOTSTRAP_ENV, NOWHERE)
    portal_basics(dep)
    config = load(dep, carrier_raw())
    caplog.set_level("INFO", logger="civicsync.runtime.supervisor")
    service = Service(config, ServiceOptions(api=False, scheduler=False))
    assert service.supervisor is not None and service.supervisor.sources == ["warehouse"]
    service.start()
    try:
        wait_for(lambda: service.state.workers["warehouse"].phase == "running", 60, "the F3 worker to stream")
        carried_changes(dep)
        q(dep, "warehouse", "INSERT INTO eligibility_predictions (prediction_id, citizen_id, scheme_id, score,"
                            " status, model_version) VALUES (1, %s, 1, 0.91, 'ELIGIBLE', 'm')", CIT)
        wait_for(lambda: q(dep, "citizen", "SELECT scheme_id, rank FROM eligibility_hints") == [(1, 1)], 30,
                 "the F3 hint")
        time.sleep(1.0)  # a native worker for citizen, if there were one, would have applied by now
        assert set(service.state.workers) == {"warehouse"}
        assert ids(config, service.state.workers["warehouse"].flows) == {"F3"}
    finally:
        service.stop()
        cleanup(config, "warehouse")
    assert q(dep, "warehouse", "SELECT count(*) FROM applications") == [(0,)]
    assert q(dep, "warehouse", "SELECT count(*) FROM application_events") == [(0,)]
    assert q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(0,)]
    assert slots_on(dep, "citizen") == []  # nobody opened the native slot of a Kafka-carried source
    assert "carried by Kafka" in caplog.text


# --------------------------------------------------------------------------- the CLI refuses


def test_naming_a_kafka_carried_flow_for_the_native_path_exits_2(fresh_deployment: Deployment,
                                                                 tmp_path: Path) -> None:
    dep = fresh_deployment
    raw = carrier_raw()
    config_file = write_config(tmp_path / "civicsync.yaml", raw)
    env = {**role_environ(dep), BOOTSTRAP_ENV: NOWHERE}
    for args in (("cdc", "run", "--flow", "F6"), ("run", "--flow", "F6", "--no-api"),
                 ("run", "--flow", "application_submissions", "--no-api", "--no-scheduler")):
        proc = cli(config_file, env, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        text = " ".join((proc.stderr + proc.stdout).split())
        assert "carried by Kafka" in text and "civicsync apply --group G --flow F6" in text, text
        assert "Traceback" not in proc.stderr + proc.stdout
    proc = cli(config_file, env, "cdc", "resync", "citizen")
    assert proc.returncode == 2 and "carried by Kafka" in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert slots_on(dep, "citizen") == []


# --------------------------------------------------------------------------- status


@pytest.fixture()
def carrier_bootstrap(kafka_broker: KafkaCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_broker.bootstrap)
    return kafka_broker.bootstrap


@contextmanager
def capturing(config: LoadedConfig) -> Iterator[KafkaCapture]:
    stop = threading.Event()
    cap = KafkaCapture(config, "citizen", stop=stop)
    cap.prepare()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            cap.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield cap
    finally:
        stop.set()
        thread.join(60)
        if errors:
            raise errors[0]


def test_status_shows_the_capture_slot_and_the_api_no_missing_worker(
        fresh_deployment: Deployment, carrier_bootstrap: str) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    config = load(dep, carrier_raw(), carrier_bootstrap)
    ensure_topics(admin_client(carrier_bootstrap), declared_topics(config, ["F5", "F6", "F7"]))
    cz_capture, wh_capture = capture_slot(config, "citizen"), capture_slot(config, "warehouse")

    rows = {r["id"]: r for r in flow_status(config)}
    assert rows["F6"]["carrier"] == "kafka" and rows["F6"]["slot"] == cz_capture
    assert rows["F6"]["state"] == "not started"  # the capture's slot, not the native one
    assert rows["F4"]["slot"] == wh_capture
    assert rows["F3"]["slot"] == slot_name(config.model, "warehouse") and "carrier" not in rows["F3"]

    with capturing(config):
        carried_changes(dep)
        rows = {r["id"]: r for r in flow_status(config)}
        for fid in ("F5", "F6", "F7"):
            assert rows[fid]["slot"] == cz_capture and rows[fid]["state"] == "streaming", rows[fid]
            assert isinstance(rows[fid]["retained_wal_bytes"], int)
        assert slots_on(dep, "citizen") == [cz_capture]

        service = Service(config, ServiceOptions(host="127.0.0.1", port=0, scheduler=False))
        service.start()
        try:
            wait_for(lambda: service.state.workers["warehouse"].phase == "running", 60, "the F3 worker")
            url = str(service.url)
            wait_for(lambda: httpx.get(url + "/api/v1/status").json().get("kafka"), 30, "the first lag sample")
            report = httpx.get(url + "/api/v1/status").json()
        finally:
            service.stop()
            cleanup(config, "warehouse")
    flows = {f["id"]: f for f in report["flows"]}
    assert not any("no worker runs this flow" in p for f in report["flows"] for p in f["problems"]), report
    for fid in ("F5", "F6", "F7"):
        f = flows[fid]
        assert f["carrier"] == "kafka" and f["slot"] == cz_capture and f["state"] == "streaming", f
        assert f["worker"] is None and f["kafka_lag_error"] is None, f
        assert f["health"] == "ok", f  # no native worker, and none expected
    assert flows["F3"]["worker"]["phase"] == "running" and flows["F3"]["health"] == "ok", flows["F3"]
    # The warehouse flows on Kafka have no capture running: said so, as the capture's, not a worker's.
    assert any("Kafka capture not started" in p for p in flows["F4"]["problems"]), flows["F4"]


def test_a_flow_debezium_captures_has_no_slot_of_ours(fresh_deployment: Deployment,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dep = fresh_deployment
    monkeypatch.setenv(BOOTSTRAP_ENV, NOWHERE)
    config = load(dep, carrier_raw(debezium=True))
    rows = flow_status(config)
    by_id = {r["id"]: r for r in rows}
    for fid in ("F5", "F6", "F7"):
        assert by_id[fid]["carrier"] == "kafka" and by_id[fid]["capture"] == "debezium"
        assert by_id[fid]["slot"] is None and by_id[fid]["state"] == "on kafka"
    assert by_id["F4"]["slot"] == capture_slot(config, "warehouse")  # civicsync capture reads warehouse

    failed = [dict(r) for r in rows]
    with_kafka_lag(config, failed, LagSample(datetime.now(UTC), error="broker unreachable"))
    assert {r["id"]: r["state"] for r in failed}["F6"] == "lag unknown"
    empty = [dict(r) for r in rows]
    with_kafka_lag(config, empty, LagSample(datetime.now(UTC)))
    assert {r["id"]: r["state"] for r in empty}["F6"] == "not started"  # no worker stored an offset yet
