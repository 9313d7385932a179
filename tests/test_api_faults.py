"""A database that goes away during a callback: 503 with Retry-After, nothing half-written, and the
same request succeeds once the database is back."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg

from fix_api import RunningApi, make_keys, seed_portal, serve
from fix_db import Deployment
from helpers import config_variant

KEY = {"scheme_id": 101, "horizon_date": "2031-03-01"}


def forecast(district: str, version: str, index: float = 0.5) -> dict[str, Any]:
    return {**KEY, "district": district, "model_version": version, "demand_index": index}


def stored(conn: psycopg.Connection[Any], district: str) -> Any:
    return conn.execute("SELECT model_version FROM scheme_forecasts WHERE district = %s", (district,)).fetchone()


def test_server_stopped_gives_503_with_retry_after_then_recovers(fresh_deployment: Deployment) -> None:
    """The PostgreSQL server itself is stopped (as test_cdc_runtime does) and started again."""
    dep = fresh_deployment
    # A request waits at most the pool's timeout for a session before its 503: 1 s here, not the 5 s
    # default, so the three requests made while the server is down do not take 15 s.
    config = config_variant(dep.environ, lambda raw: raw.setdefault("service", {}).setdefault("api", {})
                            .setdefault("pool", {}).update(timeout_seconds=1))
    seed_portal(dep)
    keys = make_keys(config)
    api_server = serve(config)
    try:
        with httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {keys['all']}"},
                          timeout=30) as client:
            assert client.post("/api/v1/forecasts", json=forecast("Before", "v1")).status_code == 200
            dep.server.stop("fast")
            try:
                down = client.post("/api/v1/forecasts", json=forecast("During", "v1"))
                alerts = client.post("/api/v1/alerts", json={"alert_id": "down-1", "severity": "info",
                                                             "alert_type": "t", "message": "m"})
                ready = client.get("/ready")
                status = client.get("/api/v1/status")
                health = client.get("/health")
            finally:
                dep.server.start()
            for response in (down, alerts, status):
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == str(config.model.service.api.retry_after_seconds)
                assert response.json()["error"] == "unavailable"
            assert ready.status_code == 503
            assert {r.split(" unreachable")[0] for r in ready.json()["reasons"]} == {
                "database warehouse", "database citizen"}
            assert health.status_code == 200
            with dep.connect("citizen") as conn:
                assert stored(conn, "During") is None and stored(conn, "Before") == ("v1",)
            again = client.post("/api/v1/forecasts", json=forecast("During", "v1"))
            assert again.status_code == 200 and again.json()["outcome"] == "created", again.text
    finally:
        api_server.stop()


def test_connection_killed_mid_transaction_writes_nothing(api: RunningApi) -> None:
    """The request has written one row and waits on a lock for the next when its session is killed."""
    with api.dep.connect("citizen") as conn:
        conn.execute("INSERT INTO scheme_forecasts (scheme_id, district, horizon_date, demand_index, model_version)"
                     " VALUES (101, 'Locked', '2031-03-01', 0.1, 'v1')")
    batch = {"items": [forecast("Fresh", "v1"), forecast("Locked", "v2")]}
    result: dict[str, httpx.Response] = {}
    with psycopg.connect(api.dep.citizen_dsn) as holder, api.dep.connect("citizen") as admin, \
            api.client() as client:
        holder.execute("SELECT 1 FROM scheme_forecasts WHERE district = 'Locked' FOR UPDATE")
        sender = threading.Thread(target=lambda: result.update(r=client.post("/api/v1/forecasts", json=batch)))
        sender.start()
        killed = 0
        deadline = time.monotonic() + 20
        while not killed and time.monotonic() < deadline:
            row = admin.execute(  # autocommit: pg_stat_activity is read once per transaction
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'civicsync:api%' AND wait_event_type = 'Lock'").fetchone()
            killed = row[0] if row else 0
            time.sleep(0.05)
        sender.join(30)
        holder.rollback()
    assert killed == 1
    response = result["r"]
    assert response.status_code == 503, response.text
    assert "Retry-After" in response.headers
    with api.dep.connect("citizen") as conn:
        assert stored(conn, "Fresh") is None  # written before the kill, rolled back with it
        assert stored(conn, "Locked") == ("v1",)
    with api.client() as client:
        again = client.post("/api/v1/forecasts", json=batch)
    assert [i["outcome"] for i in again.json()["items"]] == ["created", "replaced"]
