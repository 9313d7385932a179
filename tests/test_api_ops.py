"""Health, readiness, the status API, metrics, the OpenAPI document, dead-letter admin and body limits."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from civicsync.config import load_config
from civicsync.runtime.state import ServiceState, WorkerState
from fix_api import RunningApi, serve
from fix_db import q

FORECAST = {"scheme_id": 101, "district": "North", "horizon_date": "2031-01-01", "model_version": "v1"}


def streaming_flows(api: RunningApi) -> list[str]:
    return [n for n, f in api.config.model.flows.items() if f.streams]


def test_health_needs_nothing(api: RunningApi) -> None:
    with api.client(None) as client:
        response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_ready_is_503_naming_each_flow_not_running_when_the_api_runs_alone(api: RunningApi) -> None:
    with api.client(None) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["ready"] is False
    assert sorted(response.json()["reasons"]) == sorted(f"flow {n} is not running" for n in streaming_flows(api))


def test_ready_follows_the_service_workers(api: RunningApi) -> None:
    state = ServiceState()
    flows = streaming_flows(api)
    state.workers = {"warehouse": WorkerState("warehouse", flows[:-1], phase="running"),
                     "citizen": WorkerState("citizen", flows[-1:], phase="running")}
    server = serve(api.config, state)
    try:
        with api.client(None, base_url=server.url) as client:
            assert client.get("/ready").json() == {"ready": True, "reasons": []}
            state.update_worker("citizen", phase="restarting", last_error="connection lost")
            down = client.get("/ready")
            assert down.status_code == 503 and down.json()["reasons"] == [f"flow {flows[-1]} is not running"]
            report = client.get("/api/v1/status").json()
            state.stopping = True
            assert "the service is stopping" in client.get("/ready").json()["reasons"]
    finally:
        server.stop()
    row = next(f for f in report["flows"] if f["flow"] == flows[-1])
    assert row["health"] == "error" and row["worker"]["phase"] == "restarting"
    assert "CDC worker restarting: connection lost" in row["problems"]
    assert report["service"]["workers"][1]["last_error"] == "connection lost"


def test_status_lists_every_flow_with_a_verdict(api: RunningApi) -> None:
    with api.client(None) as client:
        response = client.get("/api/v1/status")
    assert response.status_code == 200
    report = response.json()
    assert {f["id"] for f in report["flows"]} == {f.id for f in api.config.model.flows.values()}
    assert report["service"] is None and isinstance(report["reconciliation"], list)
    f1 = next(f for f in report["flows"] if f["id"] == "F1")
    assert f1["state"] == "never run" and f1["health"] == "warning"
    f3 = next(f for f in report["flows"] if f["id"] == "F3")
    assert f3["health"] == "error" and f3["state"] == "not started" and report["healthy"] is False


def test_metrics_count_requests_by_route_template(api: RunningApi) -> None:
    with api.client() as client:
        client.get("/api/v1/dead-letters", params={"flow": "F2"})
        client.get("/no/such/thing")
        text = client.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert any(line.startswith('civicsync_api_requests_total{method="GET",route="/api/v1/dead-letters",status="200"}')
               for line in lines)
    assert any('route="unmatched",status="404"' in line for line in lines)
    assert not any("/no/such/thing" in line for line in lines)
    assert any(line.startswith("civicsync_api_request_duration_seconds_bucket") for line in lines)
    assert any(line.startswith("process_resident_memory_bytes") for line in lines)


def test_openapi_documents_security_and_errors(api: RunningApi) -> None:
    with api.client(None) as client:
        doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerKey"]["scheme"] == "bearer" and schemes["apiKeyHeader"]["name"] == "X-API-Key"
    post = doc["paths"]["/api/v1/forecasts"]["post"]
    assert {"bearerKey": []} in post["security"]
    assert {"401", "403", "409", "413", "422", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]
    assert {} in doc["paths"]["/api/v1/status"]["get"]["security"]  # status_public (the default): a key is optional
    batch = doc["components"]["schemas"]["ForecastBatch"]["properties"]["items"]
    assert batch["maxItems"] == api.config.model.service.api.max_items


# --------------------------------------------------------------------------- dead letters


@pytest.fixture()
def dead_letter(api: RunningApi) -> Iterator[int]:
    """A pending dead letter of F2 whose source row no longer exists."""
    with api.dep.connect("citizen") as conn:
        row = conn.execute(
            "INSERT INTO civicsync.dead_letters (flow, row_key, error_kind, error) VALUES ('profile_prefill', %s,"
            " 'rule', 'full_name is required') RETURNING dead_letter_id",
            (Jsonb({"citizen_id": "00000000-0000-4000-8000-0000000000aa"}),)).fetchone()
    assert row is not None
    yield int(row[0])
    with api.dep.connect("citizen") as conn:
        conn.execute("DELETE FROM civicsync.dead_letters WHERE dead_letter_id = %s", (row[0],))


def test_dead_letters_list_and_replay(api: RunningApi, dead_letter: int) -> None:
    ref = f"citizen:{dead_letter}"
    with api.client("reader") as reader, api.client() as admin:
        listed = reader.get("/api/v1/dead-letters", params={"flow": "F2"})
        assert listed.status_code == 200
        (item,) = listed.json()["items"]
        assert item["id"] == ref and item["flow"] == "profile_prefill" and item["status"] == "pending"
        assert item["key"] == {"citizen_id": "00000000-0000-4000-8000-0000000000aa"}
        assert reader.get("/api/v1/dead-letters", params={"flow": "F99"}).json()["fields"][0]["field"] == "query.flow"
        assert admin.post("/api/v1/dead-letters/replay", json={"id": "citizen:999999"}).status_code == 404
        assert admin.post("/api/v1/dead-letters/replay", json={"flow": "F2", "all": True}).status_code == 422
        replayed = admin.post("/api/v1/dead-letters/replay", json={"id": ref})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {"replayed": 1, "still_pending": 0}
        assert reader.get("/api/v1/dead-letters").json()["items"] == []
        everything = reader.get("/api/v1/dead-letters", params={"status": "all"}).json()["items"]
        assert [d["status"] for d in everything if d["id"] == ref] == ["replayed"]


# --------------------------------------------------------------------------- body size


def test_oversized_body_is_413_before_parsing(api: RunningApi) -> None:
    limit = api.config.model.service.api.max_body_bytes
    padding = "x" * (limit + 10)
    with api.client() as client:
        declared = client.post("/api/v1/forecasts", content=json.dumps({**FORECAST, "district": padding}),
                               headers={"Content-Type": "application/json"})
        chunked = client.post("/api/v1/forecasts", headers={"Content-Type": "application/json"},
                              content=iter([b'{"district": "', padding.encode(), b'"}']))
        no_key = api.client(None).post("/api/v1/forecasts", content=b"[" + b" " * limit + b"]")
    for response in (declared, chunked, no_key):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "payload_too_large"
    assert api.count("scheme_forecasts WHERE district LIKE 'xxx%'") == 0


def test_chunked_body_within_the_limit_is_accepted(api: RunningApi) -> None:
    body = json.dumps({**FORECAST, "district": "Chunked"}).encode()
    with api.client() as client:
        response = client.post("/api/v1/forecasts", headers={"Content-Type": "application/json"},
                               content=iter([body[:10], body[10:]]))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "created"


def test_ready_is_false_while_the_api_cannot_write(api: RunningApi) -> None:
    """Issue 11 item 2: /ready said ready while every authenticated call answered 500."""
    state = ServiceState()  # a service whose workers all run: only the API's database can be at fault
    flows = streaming_flows(api)
    state.workers = {"all": WorkerState("all", flows, phase="running")}
    server = serve(api.config, state)
    dep = api.dep
    role = f"ro_{dep.citizen_db}"
    try:
        with api.client(None, base_url=server.url) as client:
            assert client.get("/ready").json() == {"ready": True, "reasons": []}
            with psycopg.connect(dep.server.dsn(), autocommit=True) as admin:  # from outside the database
                # It applies to new sessions only: the DBA also ends the API's pooled ones (the pool replaces them).
                kick = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                        " AND application_name LIKE 'civicsync:api%%'")
                admin.execute(f"ALTER DATABASE {dep.citizen_db} SET default_transaction_read_only = on")
                admin.execute(kick, (dep.citizen_db,))
                try:
                    down = client.get("/ready")
                finally:
                    admin.execute(f"ALTER DATABASE {dep.citizen_db} RESET default_transaction_read_only")
                    admin.execute(kick, (dep.citizen_db,))
            assert down.status_code == 503
            assert down.json()["reasons"] == ["the API's database is read-only: callbacks cannot be stored"]
            q(dep, "citizen", "ALTER TABLE citizen_alerts RENAME TO citizen_alerts_moved")
            try:
                moved = client.get("/ready").json()["reasons"]
            finally:
                q(dep, "citizen", "ALTER TABLE citizen_alerts_moved RENAME TO citizen_alerts")
            assert moved == ["table public.citizen_alerts does not exist (run civicsync db init)"]
        # A role that may log in and read, but not write the callbacks' tables.
        q(dep, "citizen", f"CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA civicsync TO {role};"
                          f" GRANT SELECT ON ALL TABLES IN SCHEMA public, civicsync TO {role}")
        env = {**dep.environ, "CIVICSYNC_CITIZEN_DSN": dep.citizen_dsn + f" user={role}"}
        reader = serve(load_config(environ=env), state)
        try:
            with api.client(None, base_url=reader.url) as client:
                reasons = client.get("/ready").json()["reasons"]
        finally:
            reader.stop()
        assert reasons == ["the API's role lacks INSERT, UPDATE on public.scheme_forecasts",
                           "the API's role lacks INSERT on public.citizen_alerts"]
    finally:
        server.stop()
        if q(dep, "citizen", "SELECT 1 FROM pg_roles WHERE rolname = %s", role):
            q(dep, "citizen", f"DROP OWNED BY {role}; DROP ROLE {role}")
