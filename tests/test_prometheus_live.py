"""The monitoring stack for real: a running `civicsync run` scraped by a real Prometheus (with the
shipped alert rules) that sends to a real Alertmanager (with the shipped routes and inhibit rules),
whose receivers post to a webhook served by this test.

Real conditions raise real alerts:

- the citizen-side CDC worker lacks its apply role's INSERT privilege, so it crash-loops on its
  start check: its flows report down, ``CivicsyncFlowDown`` reaches the critical receiver with its
  labels and runbook, ``CivicsyncWorkerRestarting`` the warning ones, and the status API tells the
  crash loop apart from a stall (phase, restarts, last error) as the runbook says;
- F8's hourly run (hybrid, ``reconcile.after_batch``) is caught up at start and reconciles inside
  the service; a row planted in its target behind civicsync's back is found (``extra``), repaired,
  and ``CivicsyncReconcileDifferences`` fires;
- F8 summaries of citizens the portal does not have break the target's foreign key: new dead
  letters keep arriving and ``CivicsyncDeadLettersGrowing`` fires.

Then every Grafana panel's PromQL (deploy/grafana/*.json, variables filled in as Grafana would with
"All" selected) returns at least one series from that Prometheus, after seeding activity: CDC
changes on both sources, batch runs by the service's scheduler (F2 with a recorded conflict), the
reconciliation, the dead letters and API requests.

Test-only changes to the shipped files, made by rewriting copies: every alert's ``for:`` is 1s (the
thresholds and expressions are unchanged), scrape and evaluation intervals are 1s, Alertmanager's
group waits are 1s, and every receiver becomes a webhook to this test (named after the receiver).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from civicsync.localpg import free_port
from civicsync.reference.seed import seed
from fix_cdc import cdc_config, cdc_raw, cleanup, role_environ, write_config
from fix_db import Deployment
from fix_monitoring import (
    ALERTMANAGER_CONFIG,
    PROM_CONFIG,
    RULES,
    concrete,
    http_get,
    panel_queries,
    require_binary,
    running,
)

pytestmark = pytest.mark.timeout(300)

# Waits: generous, for a loaded machine (two cores shared with other suites); each returns as soon as
# its condition holds, so a quiet machine runs the whole test in well under a minute.
START_TIMEOUT = 120.0   # a process answers its health / ready URL
ALERT_TIMEOUT = 120.0   # a condition becomes an alert at the webhook (scrape, evaluate, group, send)
STATE_TIMEOUT = 90.0    # the service or Prometheus reaches a state
HTTP_TIMEOUT = 30.0     # one request to the service or Prometheus


# --------------------------------------------------------------------------- a webhook receiver

class Webhook:
    """Collects what Alertmanager posts, by path (one path per receiver)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.lock:
                    hook.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self, status: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver path, alert) for every alert received so far with ``status`` (firing / resolved)."""
        with self.lock:
            return [(path, alert) for path, post in self.posts for alert in post["alerts"]
                    if alert["status"] == status]


# --------------------------------------------------------------------------- configs for the test

def _rules_copy(tmp: Path) -> Path:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"  # test only: the real durations would make this test wait minutes
    path = tmp / "civicsync.rules.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _prometheus_copy(tmp: Path, rules: Path, target: str, alertmanager: str) -> Path:
    doc = yaml.safe_load(PROM_CONFIG.read_text())
    doc["global"].update(scrape_interval="1s", evaluation_interval="1s")
    doc["rule_files"] = [str(rules)]
    doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    job = next(j for j in doc["scrape_configs"] if j["job_name"] == "civicsync")
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"][0]["targets"] = [target]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _alertmanager_copy(tmp: Path, webhook: str) -> Path:
    doc = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in doc["receivers"]:
        name = receiver["name"]
        receiver.clear()
        receiver.update(name=name, webhook_configs=[{"url": f"{webhook}/{name}", "send_resolved": True}])
    for route in [doc["route"], *doc["route"].get("routes", [])]:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- helpers

def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}),
                            timeout=HTTP_TIMEOUT)
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "success", (expr, doc)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def _poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _sql(dep: Deployment, which: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with dep.connect(which) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _workers(instance: str) -> dict[str, dict[str, Any]]:
    """The service's CDC workers by name, from the status API (as the FlowDown runbook reads them)."""
    status, body = http_get(f"http://{instance}/api/v1/status", timeout=HTTP_TIMEOUT)
    assert status == 200, body
    return {w["name"]: w for w in json.loads(body)["service"]["workers"]}


def _orphan_summary(dep: Deployment) -> None:
    """An F8 source row for a citizen the portal does not have: the target's foreign key refuses it,
    so it becomes a dead letter (retried, and refused again, until F2 brings the citizen: never)."""
    _sql(dep, "warehouse", "INSERT INTO profile_summaries (citizen_id, schemes_enrolled) VALUES (%s, 1)",
         (str(uuid.uuid4()),))


def _cdc_changes(dep: Deployment, n: int = 30) -> None:
    """Source changes for the CDC flows of both sources."""
    _sql(dep, "warehouse", "UPDATE eligibility_predictions SET score = round(score * 0.999, 4), updated_at = now()"
                           f" WHERE prediction_id IN (SELECT prediction_id FROM eligibility_predictions"
                           f" ORDER BY prediction_id LIMIT {n})")
    _sql(dep, "citizen", "UPDATE application_documents SET size_bytes = coalesce(size_bytes, 0) + 1"
                         f" WHERE document_id IN (SELECT document_id FROM application_documents"
                         f" ORDER BY document_id LIMIT {n})")


@contextmanager
def _service(dep: Deployment, config_path: Path, port: int, log: Path) -> Iterator[None]:
    env = {**os.environ, **role_environ(dep), "CIVICSYNC_CONFIG": str(config_path)}
    args = [sys.executable, "-m", "civicsync.cli", "run", "--config", str(config_path),
            "--host", "127.0.0.1", "--port", str(port), "-v"]
    with running(args, log, f"http://127.0.0.1:{port}/health", timeout=START_TIMEOUT, env=env):
        yield


def _service_config(dep: Deployment, tmp: Path) -> tuple[Path, Any]:
    def mutate(raw: dict[str, Any]) -> None:
        # F2 every minute: its run is "missed" at start, so the scheduler runs it at once
        raw["flows"]["profile_prefill"]["schedule"] = "* * * * *"
        # F8 hourly (as shipped), reconciling before its batch and repairing: its last run was due a
        # minute or two ago and never succeeded, so the scheduler catches it up at start and the
        # reconciliation runs inside the service (it sets all civicsync_reconcile_*). At that minute of
        # the hour rather than the shipped minute 0, so that the next run (which would find nothing
        # left to repair) is an hour away, never during the test.
        minute = (datetime.now(UTC) - timedelta(minutes=1)).minute
        raw["flows"]["profile_summary"]["schedule"] = f"{minute} * * * *"
        raw["flows"]["profile_summary"]["reconcile"] = {"after_batch": True, "repair": True}
        raw["service"] = {"supervisor": {"status_interval_seconds": 1, "restart_initial_delay": 0.2,
                                         "restart_max_delay": 0.5}}

    raw = cdc_raw(mutate)
    config = cdc_config(dep, lambda r: r.update(raw))
    return write_config(tmp / "civicsync.yaml", raw), config


# --------------------------------------------------------------------------- the test

def test_alert_reaches_the_webhook_and_every_dashboard_panel_has_data(fresh_deployment: Deployment,
                                                                      tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 300)
    # A portal edit newer than the registry's row: F2's first run (source_wins) records conflicts.
    _sql(dep, "citizen", "UPDATE citizens SET full_name = 'Edited In Portal', updated_at = now() + interval '1 day'"
                         " WHERE citizen_id IN (SELECT citizen_id FROM citizens ORDER BY citizen_id LIMIT 3)")
    config_path, config = _service_config(dep, tmp_path)
    # The fault: the apply role lacks INSERT on a table the citizen-side worker writes (F7's target),
    # so that worker fails its start check on every (re)start; the warehouse-side worker is fine.
    _sql(dep, "warehouse", "REVOKE INSERT ON application_documents FROM civicsync_apply")
    # Behind civicsync's back: an F8 summary in the portal for a citizen whose warehouse summary is gone
    # (deleted before any slot exists, so no event tells the event path). Only reconciliation finds it.
    (extra,) = _sql(dep, "citizen", "SELECT citizen_id FROM citizens ORDER BY citizen_id DESC LIMIT 1")[0]
    _sql(dep, "warehouse", "DELETE FROM profile_summaries WHERE citizen_id = %s", (extra,))
    _sql(dep, "citizen", "INSERT INTO profile_summary (citizen_id, schemes_enrolled) VALUES (%s, 9)", (extra,))
    svc_port, prom_port, am_port = free_port(), free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    instance = f"127.0.0.1:{svc_port}"
    (tmp_path / "prom-data").mkdir()
    (tmp_path / "am-data").mkdir()
    prom_config = _prometheus_copy(tmp_path, _rules_copy(tmp_path), instance, f"127.0.0.1:{am_port}")

    with ExitStack() as stack:
        stack.callback(cleanup, config, "warehouse")
        stack.callback(cleanup, config, "citizen")
        stack.callback(_sql, dep, "warehouse", "GRANT INSERT ON application_documents TO civicsync_apply")
        hook = stack.enter_context(Webhook())
        stack.enter_context(running(
            [alertmanager, f"--config.file={_alertmanager_copy(tmp_path, hook.url)}", "--cluster.listen-address=",
             f"--web.listen-address=127.0.0.1:{am_port}", f"--storage.path={tmp_path / 'am-data'}"],
            tmp_path / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready", timeout=START_TIMEOUT))
        stack.enter_context(_service(dep, config_path, svc_port, tmp_path / "service.log"))
        # The healthy worker finishes its start (slot, snapshot) before Prometheus looks: with `for: 1s`
        # a slow start on a loaded machine would otherwise page for a flow that is merely starting
        # (the shipped rule waits 2 minutes).
        _poll(lambda: _workers(instance)["warehouse"]["phase"] == "running", STATE_TIMEOUT,
              "the warehouse-side worker to stream")
        stack.enter_context(running(
            [prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            tmp_path / "prometheus.log", f"{prom}/-/ready", timeout=START_TIMEOUT))

        def firing(alertname: str, **labels: str) -> list[tuple[str, dict[str, Any]]]:
            return [(p, a) for p, a in hook.received("firing") if a["labels"]["alertname"] == alertname
                    and labels.items() <= a["labels"].items()]

        def warned(alertname: str, **labels: str) -> bool:
            """A warning reaches both the chat and the ticket receivers."""
            return {p for p, _ in firing(alertname, **labels)} >= {"/civicsync-chat", "/civicsync-tickets"}

        # 1. The critical alert reaches the paging receiver, with its labels and runbook.
        path, alert = _poll(lambda: firing("CivicsyncFlowDown", flow="document_metadata"), ALERT_TIMEOUT,
                            "CivicsyncFlowDown at the webhook")[0]
        assert path == "/civicsync-page"  # severity critical: the shipped routes page
        assert {"alertname": "CivicsyncFlowDown", "severity": "critical", "service": "civicsync", "job": "civicsync",
                "instance": instance, "flow": "document_metadata", "kind": "cdc"}.items() <= alert["labels"].items()
        assert alert["annotations"] == {
            "summary": "civicsync flow document_metadata (cdc) is down",
            "description": f"Flow document_metadata (cdc) on {instance} has not been running as configured for "
                           "2 minutes (CDC: its worker is starting, restarting after a crash, or stalled retrying its "
                           "target or reconnecting to its source; batch: it is not scheduled).",
            "runbook_url": "docs/runbooks/CivicsyncFlowDown.md"}
        # the crash loop is a warning of its own, sent to the chat and the ticket receivers
        _poll(lambda: warned("CivicsyncWorkerRestarting", worker="citizen"), ALERT_TIMEOUT,
              "CivicsyncWorkerRestarting at chat and tickets")
        # crashed, not stalled: the runbook's status API check (phase, restarts, last error)
        citizen = _workers(instance)["citizen"]
        assert citizen["phase"] in {"starting", "restarting"}, citizen
        assert citizen["restarts"] >= 1, citizen
        assert "GRANT INSERT ON public.application_documents TO civicsync_apply" in (citizen["last_error"] or ""), \
            citizen
        # /ready says 503 while a worker is down: real 5xx answers for the API panels
        for _ in range(5):
            assert http_get(f"http://{instance}/ready", timeout=HTTP_TIMEOUT)[0] == 503
        # the warehouse-side flows stream: no alert for them
        _poll(lambda: _query(prom, 'civicsync_flow_up{flow="eligibility_hints"} == 1'), STATE_TIMEOUT,
              "warehouse flows up")
        assert not _query(prom, 'ALERTS{alertname="CivicsyncFlowDown", flow="eligibility_hints"}')
        assert not firing("CivicsyncFlowDown", flow="eligibility_hints")

        # 2. Fix the cause: the worker starts at its next restart and the alert resolves.
        _sql(dep, "warehouse", "GRANT INSERT ON application_documents TO civicsync_apply")
        _poll(lambda: _query(prom, 'civicsync_flow_up{flow="document_metadata"} == 1'), STATE_TIMEOUT,
              "F7 up again")
        _poll(lambda: [a for _, a in hook.received("resolved") if a["labels"]["alertname"] == "CivicsyncFlowDown"
                       and a["labels"]["flow"] == "document_metadata"], ALERT_TIMEOUT, "CivicsyncFlowDown resolved")

        # 3. F8's reconciliation in the service found the planted row, repaired it (deleted: the source
        #    has no such summary) and exported all four reconciliation metrics; its alert fires.
        for expr in ('civicsync_reconcile_differences{flow="profile_summary", class="extra"} >= 1',
                     'civicsync_reconcile_repaired_total{flow="profile_summary"} >= 1',
                     'civicsync_reconcile_last_run_timestamp_seconds{flow="profile_summary"} > 0',
                     'civicsync_reconcile_duration_seconds_count{flow="profile_summary"} >= 1'):
            _poll(lambda e=expr: _query(prom, e), STATE_TIMEOUT, f"{expr} in Prometheus")
        assert _sql(dep, "citizen", "SELECT count(*) FROM profile_summary WHERE citizen_id = %s", (extra,)) == [(0,)]
        _poll(lambda: warned("CivicsyncReconcileDifferences", flow="profile_summary", **{"class": "extra"}),
              ALERT_TIMEOUT, "CivicsyncReconcileDifferences at chat and tickets")

        # 4. New dead letters keep arriving (a flow's first one after start is where its counter begins,
        #    so increase() needs a second one, in a later scrape).
        _orphan_summary(dep)
        _poll(lambda: _query(prom, 'civicsync_dead_letters_created_total{flow="profile_summary"} >= 1'),
              STATE_TIMEOUT, "the first dead letter in Prometheus")
        _orphan_summary(dep)
        _poll(lambda: warned("CivicsyncDeadLettersGrowing", flow="profile_summary"), ALERT_TIMEOUT,
              "CivicsyncDeadLettersGrowing at chat and tickets")

        # 5. Activity for the dashboards: CDC changes on both sources; F2's scheduled run (at start).
        _cdc_changes(dep)
        _poll(lambda: _query(prom, 'civicsync_batch_runs_total{flow="profile_prefill", status="succeeded"}'),
              STATE_TIMEOUT, "F2's scheduled run in Prometheus")
        _poll(lambda: _query(prom, 'sum(civicsync_cdc_events_applied_total{flow="eligibility_hints"}) > 0')
              and _query(prom, 'sum(civicsync_cdc_events_applied_total{flow="document_metadata"}) > 0'),
              STATE_TIMEOUT, "CDC changes applied")
        _cdc_changes(dep)
        assert _query(prom, f'process_start_time_seconds{{job="civicsync", instance="{instance}"}}'), \
            "CivicsyncBatchRunMissed needs the service's start time"

        _poll(lambda: _query(prom, 'civicsync_api_requests_total{route="/ready", status="503"} >= 5'),
              STATE_TIMEOUT, "the 503s in Prometheus")

        # 6. Every dashboard panel's query returns data (rates need a few samples: poll each). A value
        #    must be a number, except for ratios and quantiles, where NaN is Prometheus' answer to
        #    "no events in the window" (e.g. a batch run's duration increase over a day when the
        #    series was born with its only run before the first scrape).
        empty: list[str] = []
        # The Kafka panels need a broker and a consumer group: test_kafka_lag_status.py runs them
        # against a real Prometheus scraping a service that samples a real group's lag.
        for q in panel_queries():
            if "civicsync_kafka_" in q.expr:
                continue
            expr = concrete(q.expr, job="civicsync", rate_interval="1m")
            may_be_nan = "/" in expr or "histogram_quantile" in expr
            try:
                _poll(lambda e=expr, nan=may_be_nan: [r for r in _query(prom, e)
                                                      if nan or not math.isnan(float(r["value"][1]))], 30, q.where)
            except AssertionError:
                empty.append(f"{q.where}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
