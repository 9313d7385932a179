"""Issue 13 item 4: consumer lag per partition in `civicsync status` (table and --json), in the status
API and page of `civicsync run` (its LagMonitor), and on /metrics (lag back to 0 after a catch-up:
test_kafka_group.py); a broker that is down is said so
(exit 1, a sample-failed gauge, a warning per flow), never shown as lag 0.

All real: the session's Kafka broker, PostgreSQL with logical replication, headless Chromium.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from civicsync import metrics
from civicsync.kafka.lag import sample_lag
from civicsync.kafka.local import KafkaCluster
from civicsync.localpg import free_port
from civicsync.provision.databases import init_databases
from civicsync.service import Service, ServiceOptions
from fix_api import serve
from fix_cdc import role_environ, wait_for, write_config
from fix_db import Deployment
from fix_kafka import (
    BOOTSTRAP_ENV,
    applying,
    capturing,
    converged,
    kafka_config,
    kafka_raw,
    portal_basics,
    workload,
)
from fix_monitoring import CHROMIUM, concrete, dump_dom, panel_queries, require_binary, running
from helpers import config_variant


def cli(config_file: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args, "--config", str(config_file)],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", **env})


def carried(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows if r["id"] in ("F6", "F7")}


def kafka_panels_have_data(service_url: str, tmp: Path) -> None:
    """Every dashboard panel on the civicsync_kafka_* metrics returns data from a real Prometheus
    scraping the service (test_prometheus_live.py covers the other panels)."""
    port = free_port()
    target = service_url.removeprefix("http://")
    doc = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "scrape_configs": [{"job_name": "civicsync", "scrape_interval": "1s", "scrape_timeout": "1s",
                               "static_configs": [{"targets": [target]}]}]}
    (tmp / "prom.yml").write_text(yaml.safe_dump(doc))
    (tmp / "prom-data").mkdir()
    args = [require_binary("prometheus"), f"--config.file={tmp / 'prom.yml'}",
            f"--storage.tsdb.path={tmp / 'prom-data'}", f"--web.listen-address=127.0.0.1:{port}"]
    prom = f"http://127.0.0.1:{port}"
    queries = [q for q in panel_queries() if "civicsync_kafka_" in q.expr]
    assert len(queries) >= 3
    with running(args, tmp / "prometheus.log", f"{prom}/-/ready"):
        for q in queries:
            expr = concrete(q.expr, job="civicsync", rate_interval="4s")
            wait_for(lambda e=expr: httpx.get(f"{prom}/api/v1/query", params={"query": e}).json()["data"]["result"],
                     timeout=30, what=q.where)


def test_status_api_page_and_metrics_show_each_partitions_lag(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str, tmp_path: Path) -> None:
    dep = fresh_deployment
    portal_basics(dep)
    raw = kafka_raw(partitions=2)
    raw["kafka"]["lag"] = {"interval_seconds": 1, "timeout_seconds": 5}
    config = kafka_config(dep, kafka_broker, raw)
    env = {**role_environ(dep), BOOTSTRAP_ENV: kafka_broker.bootstrap}
    config_file = write_config(tmp_path / "civicsync.yaml", raw)
    with capturing(config) as cap:
        workload(dep, 2000, 3)
        with applying(config, "gstatus"):
            wait_for(lambda: converged(dep, 3), timeout=60, what="the first records")
        published = cap.stats.records
        workload(dep, 3000, 5)  # no worker runs now: these wait in Kafka
        wait_for(lambda: cap.stats.records >= published + 5 * 5 and cap.producer.flush(0) == 0, timeout=30,
                 what="the capture to publish")
    time.sleep(1.2)  # so the oldest waiting record is over a second old

    proc = cli(config_file, env, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = carried(json.loads(proc.stdout))
    assert rows["F6"]["kafka_lag_error"] is None and rows["F7"]["kafka_lag_error"] is None
    assert rows["F6"]["kafka_lag_records"] + rows["F7"]["kafka_lag_records"] >= 5 * 5
    assert max(rows["F6"]["kafka_lag_seconds"], rows["F7"]["kafka_lag_seconds"]) >= 1.0
    parts = rows["F6"]["kafka_lag"] + rows["F7"]["kafka_lag"]
    assert {p["group"] for p in parts} == {"gstatus"} and len(parts) == 4  # 2 topics x 2 partitions
    assert all(p["lag_records"] == p["high_watermark"] - p["applied_offset"] for p in parts)
    human = cli(config_file, env, "status")
    assert human.returncode == 0 and "Kafka consumer groups" in human.stdout and "gstatus" in human.stdout

    service = Service(config, ServiceOptions(host="127.0.0.1", port=0, workers=False, scheduler=False))
    service.start()
    try:
        url = str(service.url)
        wait_for(lambda: (httpx.get(url + "/api/v1/status").json().get("kafka") or {}).get("partitions"),
                 timeout=30, what="the service's first lag sample")
        report = httpx.get(url + "/api/v1/status").json()
        assert report["kafka"]["error"] is None
        flows = {f["id"]: f for f in report["flows"]}
        assert flows["F6"]["kafka_lag_records"] + flows["F7"]["kafka_lag_records"] >= 5 * 5
        assert {p["group"] for p in report["kafka"]["partitions"]} == {"gstatus"}
        scraped = httpx.get(url + "/metrics").text
        assert 'civicsync_kafka_consumer_lag_records{group="gstatus"' in scraped
        assert "civicsync_kafka_lag_sample_failed 0.0" in scraped
        kafka_panels_have_data(url, tmp_path)
        if shutil.which(CHROMIUM):
            dom = dump_dom(url + "/")
            assert "Kafka consumer groups" in dom and "gstatus" in dom and raw["kafka"]["topic_prefix"] in dom
    finally:
        service.stop()



def test_a_broker_that_is_down_makes_the_lag_unknown_not_zero(fresh_deployment: Deployment, tmp_path: Path) -> None:
    dep = fresh_deployment
    raw = kafka_raw(partitions=1)
    raw["kafka"]["lag"] = {"timeout_seconds": 1}
    env = {**role_environ(dep), BOOTSTRAP_ENV: "127.0.0.1:1"}  # nothing listens on port 1
    config = config_variant(env, lambda r: r.update(raw))
    init_databases(config)

    proc = cli(write_config(tmp_path / "civicsync.yaml", raw), env, "status", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "Kafka consumer lag unknown" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    rows = carried(json.loads(proc.stdout))  # the flows are still reported, the lag marked unknown
    assert rows["F6"]["kafka_lag_error"] and rows["F6"]["kafka_lag_records"] is None

    sample = sample_lag(config, 1.0)
    assert sample.error and not sample.partitions
    assert metrics.KAFKA_LAG_SAMPLE_FAILED._value.get() == 1  # the gauge behind CivicsyncKafkaLagUnknown

    server = serve(config)  # the API alone reads the lag itself
    try:
        report = httpx.get(server.url + "/api/v1/status", timeout=30).json()
    finally:
        server.stop()
    assert report["kafka"]["error"]
    f6 = next(f for f in report["flows"] if f["id"] == "F6")
    assert f6["health"] != "ok" and any("Kafka lag unknown" in p for p in f6["problems"])
