"""`civicsync audit pii` (issue 10.6/10.7): it passes on clean targets and finds a planted leak in a target
column and in a dead-letter table, reporting columns and counts, never values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from civicsync.audit import run_audit
from civicsync.jobs.batch import run_batch
from civicsync.reference.seed import seed
from fix_db import Deployment, q


def civicsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args], capture_output=True, text=True,
                          timeout=300, env={"PATH": os.environ["PATH"], "COLUMNS": "200", **env}, check=False)


@pytest.fixture
def synced(fresh_deployment: Deployment) -> Deployment:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 300)
    config = dep.config()
    for name, flow in config.model.flows.items():
        if flow.batches:
            run_batch(config, name).raise_for_error()
    return dep


def _a_raw_phone(dep: Deployment) -> str:
    [(phone,)] = q(dep, "citizen", "SELECT phone FROM citizens WHERE phone IS NOT NULL ORDER BY citizen_id LIMIT 1")
    return str(phone)


def test_clean_targets_pass(synced: Deployment) -> None:
    report = run_audit(synced.config())
    assert report.clean, report.as_dict()["hits"]
    # the protected sets were really derived and filled from the sources
    names = " | ".join(report.protected)
    for expected in ("F12 public.feedback.comment", "F12 known values public.citizens.phone,email",
                     "F2 public.citizen_profiles.national_id", "F4 public.application_decisions.officer_id"):
        assert expected in names
    assert report.columns_scanned > 20 and report.rows_scanned > 0
    proc = civicsync("audit", "pii", "--json", env=synced.environ)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["clean"] is True


def test_planted_leak_in_a_target_column_is_found(synced: Deployment) -> None:
    dep = synced
    phone = _a_raw_phone(dep)
    # written the way a person would: grouped, with a non-breaking space, in Devanagari digits
    devanagari = "".join(chr(0x0966 + int(c)) for c in phone[5:])
    planted = f"call {phone[:5]}\u00a0{devanagari} please"
    [(fid,)] = q(dep, "warehouse", "SELECT min(feedback_id) FROM analytics.feedback")
    q(dep, "warehouse", "UPDATE analytics.feedback SET comment = %s WHERE feedback_id = %s", planted, fid)
    proc = civicsync("audit", "pii", "--json", env=dep.environ)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [(h["connection"], h["column"], h["rows"]) for h in report["hits"]] == [
        ("warehouse", "analytics.feedback.comment", 1)]
    assert any("known values" in s for s in report["hits"][0]["sets"])
    assert phone not in proc.stdout and phone[5:] not in proc.stdout  # counts, never values
    table = civicsync("audit", "pii", env=dep.environ)
    assert table.returncode == 1 and "analytics.feedback.comment" in table.stdout and phone not in table.stdout


def test_planted_leak_in_dead_letters_is_found(synced: Deployment) -> None:
    dep = synced
    [(national_id,)] = q(dep, "warehouse", "SELECT national_id FROM citizen_profiles LIMIT 1")
    spaced = " ".join(str(national_id))  # every digit spaced
    q(dep, "citizen", "INSERT INTO civicsync.dead_letters (flow, row_key, error_kind, error)"
                      " VALUES ('profile_prefill', '{\"citizen_id\": \"x\"}', 'constraint', %s)",
      f"check failed for {spaced}")
    report = run_audit(dep.config())
    assert [(h.connection, h.column) for h in report.hits] == [("citizen", "civicsync.dead_letters.error")]
    assert str(national_id) not in json.dumps(report.as_dict())


def test_officer_id_and_email_in_other_shapes_are_found(synced: Deployment) -> None:
    dep = synced
    [(officer,)] = q(dep, "warehouse", "SELECT officer_id FROM application_decisions LIMIT 1")
    [(email,)] = q(dep, "citizen", "SELECT email FROM citizens WHERE email IS NOT NULL LIMIT 1")
    local, domain = str(email).split("@")
    q(dep, "citizen", "UPDATE applications SET decision_note = %s"
                      " WHERE application_id = (SELECT min(application_id) FROM applications)",
      f"approved by {officer}.")
    q(dep, "warehouse", "INSERT INTO applications (application_id, citizen_ref, scheme_id, status, form_data,"
                        " updated_at) VALUES (999999, 'x', (SELECT min(scheme_id) FROM schemes), 'SUBMITTED',"
                        " jsonb_build_object('form', %s::text), now())",
      json.dumps({"note": f"write to {local} ＠ {domain}"}))  # JSON inside a string inside JSON
    report = run_audit(dep.config())
    assert sorted((h.connection, h.column) for h in report.hits) == [
        ("citizen", "public.applications.decision_note"), ("warehouse", "public.applications.form_data")]


def test_the_service_schedules_the_audit_and_publishes_its_metric(synced: Deployment) -> None:
    from civicsync import metrics
    from civicsync.audit.job import JOB_ID, run_pii_audit_job
    from civicsync.runtime.scheduler import BatchScheduler, cron_trigger
    from civicsync.runtime.state import ServiceState

    dep = synced
    config = dep.config()
    scheduler = BatchScheduler(config, ServiceState(), config.model.service.scheduler, flows=[])
    scheduler.start()
    try:
        job = scheduler._scheduler.get_job(JOB_ID)
        schedule = config.model.audit.pii.schedule
        assert schedule is not None and job is not None and str(job.trigger) == str(cron_trigger(schedule))
    finally:
        scheduler.shutdown()
    report = run_pii_audit_job(config)
    assert report is not None and report.clean
    assert metrics.PII_AUDIT_LEAKING_ROWS._value.get() == 0
    q(dep, "citizen", "INSERT INTO civicsync.dead_letters (flow, row_key, error_kind, error)"
                      " VALUES ('x', '{}', 'constraint', %s)", f"phone {_a_raw_phone(dep)}")
    report = run_pii_audit_job(config)
    assert report is not None and not report.clean
    assert metrics.PII_AUDIT_LEAKING_ROWS._value.get() == 1
    assert metrics.PII_AUDIT_LAST_RUN._value.get() > 0
