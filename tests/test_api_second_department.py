"""Issue 11 item 3: the ML callbacks' targets are declared in the config like any flow's mapping
(tables, columns, id types), validated at load. A second department with its own names and text ids
(no ``scheme_id bigint`` / ``citizen_id uuid`` anywhere) is served by the same code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from civicsync.api.keys import create_key
from civicsync.api.server import ApiServer
from civicsync.config import LoadedConfig
from civicsync.errors import ConfigError
from fix_api import serve
from fix_db import Deployment, q
from helpers import config_variant

DDL = """
CREATE SCHEMA portal;
CREATE TABLE portal.programs (program_code text PRIMARY KEY);
CREATE TABLE portal.residents (resident_key text PRIMARY KEY);
CREATE TABLE portal.ml_eta (program_code text, region text, for_day date, eta_days numeric(8,2),
    load_index numeric(8,4), model text NOT NULL, stored_at timestamptz,
    PRIMARY KEY (program_code, region, for_day));
CREATE TABLE portal.notices (notice_no bigserial PRIMARY KEY, sender text, sender_ref text, resident_key text,
    program_code text, region text, level text, kind text, body text, valid_until timestamptz,
    UNIQUE (sender, sender_ref));
INSERT INTO portal.programs VALUES ('PRG-7'), ('PRG-8');
INSERT INTO portal.residents VALUES ('R-0042');
"""

TABLES = {
    "portal.programs": {"key": ["program_code"], "columns": ["program_code"]},
    "portal.residents": {"key": ["resident_key"], "columns": ["resident_key"]},
    "portal.ml_eta": {"key": ["program_code", "region", "for_day"],
                      "columns": ["program_code", "region", "for_day", "eta_days", "load_index", "model", "stored_at"]},
    "portal.notices": {"key": ["notice_no"], "columns": ["notice_no", "sender", "sender_ref", "resident_key",
                                                         "program_code", "region", "level", "kind", "body",
                                                         "valid_until"]},
}
API = {
    "forecasts": {"table": "portal.ml_eta", "columns": {
        "scheme_id": "program_code", "district": "region", "horizon_date": "for_day", "expected_processing_days":
        "eta_days", "demand_index": "load_index", "model_version": "model", "received_at": "stored_at"}},
    "alerts": {"table": "portal.notices", "columns": {
        "portal_id": "notice_no", "client": "sender", "alert_id": "sender_ref", "citizen_id": "resident_key",
        "scheme_id": "program_code", "district": "region", "severity": "level", "alert_type": "kind",
        "message": "body", "expires_at": "valid_until"}},
    "citizen": {"table": "portal.residents", "column": "resident_key", "type": "text"},
    "scheme": {"table": "portal.programs", "column": "program_code", "type": "text"},
}


def department(environ: dict[str, str], api: dict[str, Any] | None = None) -> LoadedConfig:
    def mutate(raw: dict[str, Any]) -> None:
        raw["connections"]["citizen"]["tables"].update(TABLES)
        raw["service"] = {"api": api if api is not None else API}
        # The API no longer reads public.schemes: only F1 writes it, so its columns are derived.
        del raw["connections"]["citizen"]["tables"]["public.schemes"]["columns"]

    return config_variant(environ, mutate)


@pytest.fixture(scope="module")
def registry(deployment: Deployment) -> Iterator[tuple[ApiServer, str, Deployment]]:
    q(deployment, "citizen", DDL)
    config = department(deployment.environ)
    key = create_key(config, "registry-ml", ["forecasts:write", "alerts:write"])[0]
    server = serve(config)
    try:
        yield server, key, deployment
    finally:
        server.stop()


def post(server: ApiServer, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_forecasts_land_in_the_departments_table_with_text_ids(registry: tuple[ApiServer, str, Deployment]) -> None:
    server, key, dep = registry
    body = {"scheme_id": "PRG-7", "district": "Hills", "horizon_date": "2031-05-01", "expected_processing_days": 4.5,
            "model_version": "m2"}
    first = post(server, key, "/api/v1/forecasts", body)
    again = post(server, key, "/api/v1/forecasts", body)
    newer = post(server, key, "/api/v1/forecasts", {**body, "model_version": "m10", "demand_index": 0.25})
    assert first.status_code == 200, first.text
    assert (first.json()["outcome"], again.json()["outcome"], newer.json()["outcome"]) == (
        "created", "unchanged", "replaced")
    assert first.json()["scheme_id"] == "PRG-7"
    assert q(dep, "citizen", "SELECT program_code, region, eta_days::text, load_index::text, model,"
                             " stored_at IS NOT NULL FROM portal.ml_eta") == [
        ("PRG-7", "Hills", "4.50", "0.2500", "m10", True)]
    unknown = post(server, key, "/api/v1/forecasts", {**body, "scheme_id": "PRG-999"})
    number = post(server, key, "/api/v1/forecasts", {**body, "scheme_id": 7})
    assert unknown.status_code == 422 and [f["field"] for f in unknown.json()["fields"]] == ["scheme_id"]
    assert number.status_code == 422 and number.json()["fields"][0]["type"] == "string_type"


def test_alerts_land_in_the_departments_table_idempotently(registry: tuple[ApiServer, str, Deployment]) -> None:
    server, key, dep = registry
    body = {"alert_id": "n-1", "citizen_id": "R-0042", "scheme_id": "PRG-8", "severity": "warning",
            "alert_type": "deadline", "message": "Bring your papers.", "expires_at": "2031-01-01T00:00:00+05:30"}
    first = post(server, key, "/api/v1/alerts", body)
    again = post(server, key, "/api/v1/alerts", body)
    changed = post(server, key, "/api/v1/alerts", {**body, "message": "Other."})
    unknown = post(server, key, "/api/v1/alerts", {**body, "alert_id": "n-2", "citizen_id": "R-9999"})
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "created" and again.json() == {**first.json(), "outcome": "duplicate"}
    assert changed.status_code == 409
    assert unknown.status_code == 422 and [f["field"] for f in unknown.json()["fields"]] == ["citizen_id"]
    assert "R-99…" in unknown.text and "R-9999" not in unknown.text
    assert q(dep, "citizen", "SELECT notice_no, sender, sender_ref, resident_key, program_code, level, kind, body,"
                             " valid_until = '2030-12-31T18:30:00Z' FROM portal.notices") == [
        (first.json()["portal_alert_id"], "registry-ml", "n-1", "R-0042", "PRG-8", "warning", "deadline",
         "Bring your papers.", True)]


def test_openapi_shows_the_configured_id_types(registry: tuple[ApiServer, str, Deployment]) -> None:
    server, _, _ = registry
    schemas = httpx.get(server.url + "/openapi.json").json()["components"]["schemas"]
    assert schemas["Forecast"]["properties"]["scheme_id"]["type"] == "string"


@pytest.mark.parametrize(("change", "path", "says"), [
    (lambda a: a["forecasts"]["columns"].update(region="area"), "service.api.forecasts.columns.region",
     "unknown key"),
    (lambda a: a["forecasts"]["columns"].update(district="area"), "service.api.forecasts.columns.district",
     "column 'area' is not declared for table portal.ml_eta"),
    (lambda a: a["forecasts"]["columns"].update(demand_index="eta_days"), "service.api.forecasts.columns.demand_index",
     "already mapped from expected_processing_days"),
    (lambda a: a["forecasts"]["columns"].update(horizon_date="stored_at", received_at="for_day"),
     "service.api.forecasts.table", "must be the columns of (scheme_id, district, horizon_date)"),
    (lambda a: a["alerts"].update(table="portal.alerts"), "service.api.alerts.table",
     "table 'portal.alerts' is not declared under connections.citizen.tables"),
    (lambda a: a["citizen"].update(type="varchar"), "service.api.citizen.type", "Input should be"),
    (lambda a: a["scheme"].update(column="code"), "service.api.scheme",
     "column 'code' is not declared for table portal.programs"),
])
def test_a_wrong_mapping_is_refused_at_load_naming_the_key(change: Any, path: str, says: str) -> None:
    api = {k: {**v, "columns": dict(v["columns"])} if "columns" in v else dict(v) for k, v in API.items()}
    change(api)
    env = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c",
           "CIVICSYNC_PSEUDONYM_KEY": "k" * 20}
    with pytest.raises(ConfigError) as info:
        department(env, api)
    assert any(p.path.startswith(path) and says in p.message for p in info.value.problems), info.value.problems
