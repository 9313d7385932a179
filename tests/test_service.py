"""`civicsync run`: supervised CDC workers, the embedded scheduler, clean shutdown — on real PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicsync.config.service import Scheduler as SchedulerSettings
from civicsync.reference.seed import seed
from civicsync.runtime.scheduler import BatchScheduler, previous_fire_time, schedule_interval
from civicsync.runtime.state import ServiceState
from civicsync.service import Service, ServiceOptions
from fix_cdc import cdc_config, cdc_raw, cleanup, role_environ, wait_for, write_config
from fix_db import Deployment
from helpers import config_variant

# --------------------------------------------------------------------------- schedule arithmetic


@pytest.mark.parametrize(("cron", "seconds"), [("0 0 * * *", 86400), ("0 * * * *", 3600), ("30 2 * * *", 86400),
                                               ("0 9 * * 1-5", 3 * 86400), ("*/15 * * * *", 900)])
def test_schedule_interval_is_the_longest_gap(cron: str, seconds: float) -> None:
    assert schedule_interval(cron) == seconds


def test_previous_fire_time() -> None:
    now = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    assert previous_fire_time("0 1 * * *", now) == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    assert previous_fire_time("0 9 * * *", now) == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert previous_fire_time("0 * * * *", now) == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


def test_missed_runs_within_grace_catch_up_once_older_ones_do_not(deployment: Deployment) -> None:
    config = deployment.config()
    daily = ["F1", "F2", "F11", "F12"]
    sched = BatchScheduler(config, ServiceState(), SchedulerSettings(misfire_grace_seconds=12 * 3600), flows=daily)
    now = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    # F1 fired 00:00 (7.5 h ago, within grace), F2 01:00, F11 02:30, F12 03:00.
    ok_after = now - timedelta(hours=1)
    assert set(sched.missed({}, now)) == {"scheme_master", "profile_prefill", "user_behaviour", "feedback"}
    assert sched.missed({n: ok_after for n in sched.flows}, now) == []
    assert sched.missed({"scheme_master": now - timedelta(days=1)} | {n: ok_after for n in sched.flows
                                                                      if n != "scheme_master"}, now) \
        == ["scheme_master"]
    strict = BatchScheduler(config, ServiceState(), SchedulerSettings(misfire_grace_seconds=3600))
    # The daily runs were missed by more than an hour (left to the alert); F8's hourly 07:00 run by 30 min.
    assert strict.missed({}, now) == ["profile_summary"]


# --------------------------------------------------------------------------- the scheduler runs real flows


def test_scheduled_flow_runs_once_at_a_time_and_records_its_run(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 2000)
    config = dep.config()
    state = ServiceState()
    sched = BatchScheduler(config, state, SchedulerSettings(), flows=["F2"])
    sched.start({"profile_prefill": datetime.now(UTC)})  # nothing missed
    try:
        sched.run_now("profile_prefill")
        sched.run_now("profile_prefill")  # coalesced or skipped while the first runs: never two at once
        wait_for(lambda: state.jobs["profile_prefill"].last_result, 60, "the run")
        wait_for(lambda: not state.jobs["profile_prefill"].running, 60, "the run to end")
    finally:
        sched.shutdown()
    result = state.jobs["profile_prefill"].last_result
    assert result is not None and result["ok"], result
    with dep.connect("citizen") as conn:
        runs = conn.execute("SELECT status, count(*) FROM civicsync.runs WHERE flow = 'profile_prefill'"
                            " GROUP BY status").fetchall()
        overlapping = conn.execute(
            "SELECT count(*) FROM civicsync.runs a JOIN civicsync.runs b ON a.run_id < b.run_id"
            " AND a.flow = b.flow AND b.started_at < a.finished_at WHERE a.flow = 'profile_prefill'").fetchone()
        assert conn.execute("SELECT count(*) FROM citizens").fetchone() == (2000,)
    assert dict(runs).get("succeeded", 0) >= 1 and "failed" not in dict(runs)
    assert overlapping == (0,)
    assert state.jobs["profile_prefill"].next_run is not None


# --------------------------------------------------------------------------- supervision


def _grant(dep: Deployment, sql: str) -> None:
    with dep.connect("warehouse") as conn:
        conn.execute(sql)


def test_a_crashing_worker_is_restarted_with_backoff_and_counted(fresh_deployment: Deployment) -> None:
    """A real crash: the apply role lost its INSERT grant, so the worker fails at start naming it;
    the supervisor restarts it with backoff until the grant is back, then it streams."""
    dep = fresh_deployment
    config = cdc_config(dep)
    _grant(dep, "REVOKE INSERT ON application_documents FROM civicsync_apply")
    service = Service(config, ServiceOptions(api=False, scheduler=False, flows=["F7"]))
    service.start()
    try:
        worker = wait_for(lambda: (w := service.state.workers["citizen"]).restarts >= 2 and w, 30,
                          "two restarts")
        assert worker.phase in ("restarting", "starting")
        assert "GRANT" in (worker.last_error or "").upper() or "INSERT" in (worker.last_error or "")
        _grant(dep, "GRANT INSERT ON application_documents TO civicsync_apply")
        wait_for(lambda: service.state.workers["citizen"].phase == "running", 60, "the worker to stream")
        assert service.state.flows_running() == {"document_metadata": True}
    finally:
        service.stop()
        cleanup(config, "citizen")
    restarts = service.state.workers["citizen"].restarts
    assert restarts >= 2
    assert service.state.workers["citizen"].phase == "stopped"


# --------------------------------------------------------------------------- the command, SIGTERM


def _start(dep: Deployment, config_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **role_environ(dep), "CIVICSYNC_CONFIG": str(config_path), "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-m", "civicsync.cli", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(dep: Deployment) -> list[tuple[Any, ...]]:
    with dep.connect("citizen") as conn:
        return conn.execute("SELECT status, rows_written FROM civicsync.runs WHERE flow = 'profile_prefill'"
                            " ORDER BY run_id").fetchall()


def test_sigterm_during_a_batch_run_completes_or_rolls_it_back_never_half(fresh_deployment: Deployment,
                                                                        tmp_path: Path) -> None:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 40_000)
    with dep.connect("citizen") as conn:
        conn.execute("TRUNCATE citizens CASCADE")  # so the run's effect is all-or-nothing visible in a count

    def every_minute(raw: dict[str, Any]) -> None:
        raw["flows"]["profile_prefill"]["schedule"] = "* * * * *"  # its last run was due < 1 min ago

    raw = cdc_raw(every_minute)
    cdc_config(dep, every_minute)
    path = write_config(tmp_path / "civicsync.yaml", raw)
    proc = _start(dep, path, "--no-api", "--no-workers", "--flow", "F2")
    try:
        wait_for(lambda: _runs(dep), 60, "the catch-up run to start")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            print(proc.communicate(timeout=30)[1])
    assert proc.returncode == 0, err
    with dep.connect("citizen") as conn:
        n = conn.execute("SELECT count(*) FROM citizens").fetchone()
    runs = _runs(dep)
    assert len(runs) == 1
    status, written = runs[0]
    if status == "succeeded":
        assert n == (40_000,) and written == 40_000
    else:  # rolled back: nothing of it is in the target
        assert n == (0,), (status, n)
    assert "stopped cleanly" in err


def test_run_rejects_a_bad_config_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nconnections: {}\nservice: {api: {port: 99999}}\n")
    proc = subprocess.run([sys.executable, "-m", "civicsync.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "service.api.port" in proc.stderr


def test_service_config_validates(deployment: Deployment) -> None:
    config = config_variant(deployment.environ, lambda r: r.update(
        service={"scheduler": {"misfire_grace_seconds": 60}, "api": {"port": 0}}))
    assert config.model.service.scheduler.misfire_grace_seconds == 60


def _api_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for _ in range(50):
        line = proc.stderr.readline()
        if "civicsync running" in line:
            match = re.search(r"API (http://[\d.]+:\d+)", line)
            assert match, line
            return match.group(1)
    raise AssertionError("the service did not report its API address")


def test_run_serves_health_readiness_and_metrics_then_stops_on_sigterm(fresh_deployment: Deployment,
                                                                    tmp_path: Path) -> None:
    dep = fresh_deployment
    raw = cdc_raw()
    config = cdc_config(dep, lambda r: r.update(raw))
    path = write_config(tmp_path / "civicsync.yaml", raw)
    proc = _start(dep, path, "--port", "0", "--flow", "F7", "--flow", "F12")
    try:
        url = _api_url(proc)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        wait_for(lambda: httpx.get(f"{url}/ready", timeout=5).status_code == 200, 60, "readiness")
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'civicsync_flow_up{flow="document_metadata",kind="cdc"} 1.0' in metrics
        assert 'civicsync_flow_up{flow="feedback",kind="batch"} 1.0' in metrics
        assert 'civicsync_batch_schedule_interval_seconds{flow="feedback"} 86400.0' in metrics
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(config, "citizen")
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err


def test_a_worker_that_cannot_reach_its_source_is_reported_stalled_then_recovers(
        fresh_deployment: Deployment) -> None:
    """The capture role may not log in and its walsender is killed: the worker keeps retrying (it
    is alive) but the flow is down for readiness and alerting until it streams again."""
    dep = fresh_deployment
    config = cdc_config(dep)
    service = Service(config, ServiceOptions(api=False, scheduler=False, flows=["F7"]))
    service.start()
    try:
        wait_for(lambda: service.state.workers["citizen"].phase == "running", 60, "the worker to stream")
        with dep.connect("citizen") as conn:
            conn.execute("ALTER ROLE civicsync_capture NOLOGIN")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication"
                         " WHERE usename = 'civicsync_capture'")
        worker = wait_for(lambda: (w := service.state.workers["citizen"]).phase == "stalled" and w, 30,
                          "the stall to be noticed")
        assert "reconnecting" in (worker.last_error or "")
        assert service.state.flows_running() == {"document_metadata": False}
        assert metric_value("civicsync_flow_up", flow="document_metadata", kind="cdc") == 0
        with dep.connect("citizen") as conn:
            conn.execute("ALTER ROLE civicsync_capture LOGIN")
        wait_for(lambda: service.state.workers["citizen"].phase == "running", 60, "recovery")
        assert metric_value("civicsync_flow_up", flow="document_metadata", kind="cdc") == 1
        assert service.state.workers["citizen"].restarts == 0  # it never crashed: it waited
    finally:
        with dep.connect("citizen") as conn:
            conn.execute("ALTER ROLE civicsync_capture LOGIN")
        service.stop()
        cleanup(config, "citizen")


def metric_value(name: str, **labels: str) -> float | None:
    from civicsync.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_a_grant_revoked_mid_stream_stops_the_worker_instead_of_dead_lettering(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    with dep.connect("citizen") as conn:
        cid = "00000000-0000-4000-8000-00000000000a"
        conn.execute("INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", (cid,))
        conn.execute("INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S1', 'S', 'C', 'OPEN')")
        conn.execute("INSERT INTO applications (application_id, citizen_id, scheme_id, status) VALUES"
                     " (100, %s, 1, 'SUBMITTED')", (cid,))
    config = cdc_config(dep)
    service = Service(config, ServiceOptions(api=False, scheduler=False, flows=["F7"]))
    service.start()
    try:
        wait_for(lambda: service.state.workers["citizen"].phase == "running", 60, "the worker to stream")
        _grant(dep, "REVOKE INSERT ON application_documents FROM civicsync_apply")
        with dep.connect("citizen") as conn:
            conn.execute("INSERT INTO application_documents (document_id, application_id, doc_type, file_name,"
                         " storage_uri) VALUES (1, 100, 'ID', 'x.pdf', 's3://docs/x.pdf')")
        wait_for(lambda: service.state.workers["citizen"].restarts >= 1, 30, "the worker to stop and restart")
        with dep.connect("warehouse") as conn:
            assert conn.execute("SELECT count(*) FROM civicsync.dead_letters").fetchone() == (0,)
        _grant(dep, "GRANT INSERT ON application_documents TO civicsync_apply")
        with dep.connect("warehouse") as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM application_documents").fetchone() == (1,), 60,
                     "the document after the grant")
    finally:
        service.stop()
        cleanup(config, "citizen")
