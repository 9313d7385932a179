"""Issue 11 item 16: batch runs, reconciliation and the API run as their own least-privilege roles,
made by `db init`. Each role does its real job (the flows' own code, the real HTTP API) and is
refused everything else (permission denied from PostgreSQL itself)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from civicsync.config import LoadedConfig
from civicsync.jobs.batch import run_batch
from civicsync.provision.databases import init_databases
from civicsync.reconcile import reconcile_flow
from civicsync.reference.seed import seed
from civicsync.runtime.state import ServiceState, WorkerState
from fix_api import make_keys, serve
from fix_db import Deployment, q
from helpers import config_variant

ROLES = {"batch": "civicsync_batch", "reconcile": "civicsync_reconcile", "api": "civicsync_api"}


def as_role(dsn: str, role: str) -> str:
    return f"{dsn} user={role}"


@pytest.fixture(scope="module")
def deployed(deployment: Deployment) -> Iterator[tuple[Deployment, LoadedConfig]]:
    """The reference deployment whose batch, reconcile and API work logs in as the three roles."""
    env = dict(deployment.environ)
    for db, dsn in (("WAREHOUSE", deployment.warehouse_dsn), ("CITIZEN", deployment.citizen_dsn)):
        for job, role in ROLES.items():
            env[f"CIVICSYNC_{db}_{job.upper()}_DSN"] = as_role(dsn, role)

    def mutate(raw: dict[str, Any]) -> None:
        for name in ("warehouse", "citizen"):
            for job in ROLES:
                raw["connections"][name][f"{job}_dsn_env"] = f"CIVICSYNC_{name.upper()}_{job.upper()}_DSN"

    config = config_variant(env, mutate)
    init_databases(config)  # idempotent: the module's databases were made without these roles' grants
    seed(deployment.warehouse_dsn, deployment.citizen_dsn, 60)
    yield deployment, config


def refused(dsn: str, statement: str) -> bool:
    """True if PostgreSQL refuses ``statement`` for lack of privilege."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


def test_the_batch_role_runs_every_batch_flow_and_nothing_more(deployed: tuple[Deployment, LoadedConfig]) -> None:
    dep, config = deployed
    for flow in ("F1", "F2", "F11", "F12", "F8"):
        result = run_batch(config, flow)
        assert result.ok, (flow, result.error)
    assert q(dep, "citizen", "SELECT count(*) FROM citizens")[0][0] >= 60
    # It really is the batch role that runs them: without its grant, F2 fails for lack of it.
    q(dep, "warehouse", "REVOKE SELECT ON citizen_profiles FROM civicsync_batch")
    try:
        denied = run_batch(config, "F2")
    finally:
        init_databases(config)
    assert not denied.ok and "permission denied" in str(denied.error)
    warehouse, citizen = as_role(dep.warehouse_dsn, ROLES["batch"]), as_role(dep.citizen_dsn, ROLES["batch"])
    assert refused(warehouse, "UPDATE citizen_profiles SET full_name = full_name")  # F2's source: read only
    assert refused(warehouse, "DELETE FROM schemes")
    assert refused(warehouse, "SELECT count(*) FROM application_decisions")  # no batch flow reads it
    assert refused(citizen, "SELECT count(*) FROM civicsync.api_keys")  # the control schema, but not the keys
    assert refused(citizen, "INSERT INTO scheme_forecasts (scheme_id, district, horizon_date, model_version)"
                            " VALUES (1, 'x', '2031-01-01', 'v')")
    assert refused(citizen, "DROP TABLE citizens")


def test_the_reconcile_role_finds_and_repairs_and_nothing_more(deployed: tuple[Deployment, LoadedConfig]) -> None:
    dep, config = deployed
    assert run_batch(config, "F1").ok
    scheme = q(dep, "citizen", "SELECT min(scheme_id) FROM schemes")[0][0]
    q(dep, "citizen", "UPDATE schemes SET category = 'wrong' WHERE scheme_id = %s", scheme)
    result = reconcile_flow(config, "F1", repair=True).as_dict()
    assert result["different"] == 1 and result["repaired"] == 1, result
    assert q(dep, "citizen", "SELECT category <> 'wrong' FROM schemes WHERE scheme_id = %s", scheme) == [(True,)]
    q(dep, "citizen", "REVOKE SELECT ON schemes FROM civicsync_reconcile")
    try:
        denied = reconcile_flow(config, "F1").as_dict()
    finally:
        init_databases(config)
    assert "permission denied" in str(denied.get("error")), denied
    warehouse, citizen = as_role(dep.warehouse_dsn, ROLES["reconcile"]), as_role(dep.citizen_dsn, ROLES["reconcile"])
    assert refused(warehouse, "DELETE FROM application_decisions")  # a source only: read, never written
    assert refused(citizen, "SELECT count(*) FROM scheme_forecasts")  # not a flow's table
    assert refused(citizen, "INSERT INTO citizen_alerts (severity, alert_type, message) VALUES ('i', 't', 'm')")
    assert refused(citizen, "SELECT count(*) FROM civicsync.api_keys")


def test_the_api_role_serves_callbacks_and_nothing_more(deployed: tuple[Deployment, LoadedConfig]) -> None:
    dep, config = deployed
    q(dep, "citizen", "DELETE FROM citizen_alerts")
    seed_portal_rows = q(dep, "citizen", "SELECT citizen_id::text FROM citizens LIMIT 1")
    scheme = q(dep, "citizen", "SELECT min(scheme_id) FROM schemes")[0][0]
    key = make_keys(config, "-roles")["all"]
    state = ServiceState()
    state.workers = {"all": WorkerState("all", [n for n, f in config.model.flows.items() if f.streams],
                                        phase="running")}
    server = serve(config, state)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            forecast = client.post("/api/v1/forecasts", json={"scheme_id": scheme, "district": "North",
                                                              "horizon_date": "2031-01-01", "model_version": "v1"})
            alert = client.post("/api/v1/alerts", json={"alert_id": "r-1", "citizen_id": seed_portal_rows[0][0],
                                                        "severity": "info", "alert_type": "t", "message": "m"})
            ready = client.get("/ready")
        sessions = q(dep, "citizen", "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
                                     " AND application_name = 'civicsync:api'")
    finally:
        server.stop()
    assert forecast.status_code == 200 and alert.status_code == 200, (forecast.text, alert.text)
    assert ready.json() == {"ready": True, "reasons": []}
    assert sessions == [("civicsync_api",)]  # the pool logs in as the API role
    warehouse, citizen = as_role(dep.warehouse_dsn, ROLES["api"]), as_role(dep.citizen_dsn, ROLES["api"])
    assert refused(warehouse, "SELECT count(*) FROM citizen_profiles")
    assert refused(citizen, "UPDATE citizens SET full_name = full_name")
    assert refused(citizen, "INSERT INTO civicsync.api_keys (key_id, name, client, scopes, key_sha256)"
                            " VALUES ('x', 'x', 'x', '{}', '')")
    assert refused(citizen, "DELETE FROM citizen_alerts")
    assert refused(citizen, "SELECT count(*) FROM feedback")


