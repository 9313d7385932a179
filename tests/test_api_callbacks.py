"""F9 forecasts and F10 alerts through the real HTTP server: validation, idempotency, all or nothing."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from fix_api import CITIZENS, RunningApi

FORECASTS = "/api/v1/forecasts"
ALERTS = "/api/v1/alerts"


def forecast(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"scheme_id": 101, "district": "North", "horizon_date": "2031-01-01",
                            "expected_processing_days": 12.5, "demand_index": 0.75, "model_version": "v1.2"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def alert(alert_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"alert_id": alert_id, "severity": "warning", "alert_type": "deadline",
                            "message": "Your application needs a document by Friday."}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def fields(response: Any) -> list[str]:
    return [f["field"] for f in response.json()["fields"]]


def stored_forecast(api: RunningApi, district: str, day: str = "2031-01-01") -> tuple[Any, ...] | None:
    with api.dep.connect("citizen") as conn:
        return conn.execute("SELECT model_version, expected_processing_days, demand_index FROM scheme_forecasts"
                            " WHERE scheme_id = 101 AND district = %s AND horizon_date = %s",
                            (district, day)).fetchone()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("body", "field", "kind"), [
    (forecast(scheme_id="101"), "scheme_id", "int_type"),
    (forecast(scheme_id=1.5), "scheme_id", "int_type"),
    (forecast(horizon_date=20310101), "horizon_date", "value_error"),
    (forecast(horizon_date="2031-02-30"), "horizon_date", "date_from_datetime_parsing"),
    (forecast(demand_index=True), "demand_index", "value_error"),
    (forecast(demand_index="lots"), "demand_index", "decimal_parsing"),
    (forecast(demand_index=-1), "demand_index", "greater_than_equal"),
    (forecast(expected_processing_days=10**7), "expected_processing_days", "less_than_equal"),
    (forecast(district="Nor\x00th"), "district", "string_pattern_mismatch"),
    (forecast(district=""), "district", "string_too_short"),
    (forecast(model_version=None), "model_version", "missing"),
    (forecast(colour="blue"), "colour", "extra_forbidden"),
    ({"items": [forecast(), forecast(district=7)]}, "items.1.district", "string_type"),
    ({"items": []}, "items", "too_short"),
    ({"items": [forecast()], "extra": 1}, "extra", "extra_forbidden"),
    ([forecast()], "body", "model_attributes_type"),
])
def test_invalid_forecasts_get_422_naming_the_field(api: RunningApi, body: Any, field: str, kind: str) -> None:
    with api.client() as client:
        before = api.count("scheme_forecasts")
        response = client.post(FORECASTS, json=body)
    assert response.status_code == 422, response.text
    found = {f["field"]: f["type"] for f in response.json()["fields"]}
    assert found.get(field) == kind, found
    assert response.json()["error"] == "validation_failed"
    assert api.count("scheme_forecasts") == before


@pytest.mark.parametrize(("body", "field"), [
    (alert("a", citizen_id="not-a-uuid"), "citizen_id"),
    (alert("a", citizen_id=12), "citizen_id"),
    (alert("a", severity="loud"), "severity"),
    (alert("a", expires_at="2031-01-01T00:00:00"), "expires_at"),  # no time zone
    (alert("a", message=None), "message"),
    (alert("a", message="x" * 2001), "message"),
    (alert("has space"), "alert_id"),
    (alert("a", citizen_id=CITIZENS[0], district="North"), "body"),
    (alert("a", message="lone \ud800 surrogate"), "message"),
])
def test_invalid_alerts_get_422_naming_the_field(api: RunningApi, body: Any, field: str) -> None:
    with api.client() as client:  # json.dumps escapes what UTF-8 cannot carry (a lone surrogate)
        response = client.post(ALERTS, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in fields(response)


def test_malformed_json_and_wrong_content_are_422(api: RunningApi) -> None:
    with api.client() as client:
        broken = client.post(FORECASTS, content=b'{"scheme_id": 101,', headers={"Content-Type": "application/json"})
        text = client.post(ALERTS, content=b"hello", headers={"Content-Type": "text/plain"})
    assert broken.status_code == 422 and broken.json()["fields"][0]["type"] == "json_invalid"
    assert "malformed JSON" in broken.json()["fields"][0]["message"]
    assert text.status_code == 422


def test_unknown_scheme_or_citizen_is_422_naming_it_not_500(api: RunningApi) -> None:
    with api.client() as client:
        scheme = client.post(FORECASTS, json={"items": [forecast(), forecast(scheme_id=999)]})
        citizen = client.post(ALERTS, json={"items": [alert("u1"), alert("u2", citizen_id=CITIZENS[0]),
                                                      alert("u3", citizen_id="00000000-0000-4000-8000-0000000000ff")]})
    assert scheme.status_code == 422 and fields(scheme) == ["items.1.scheme_id"]
    assert scheme.json()["fields"][0]["type"] == "unknown_reference"
    assert citizen.status_code == 422 and fields(citizen) == ["items.2.citizen_id"]
    assert "0000000000ff" not in citizen.text and "0000…" in citizen.json()["fields"][0]["message"]  # issue 10.5
    assert stored_forecast(api, "North") is None  # the valid first item was not written either
    assert api.count("citizen_alerts WHERE source_alert_id LIKE 'u%'") == 0


def test_too_many_items_is_refused(api: RunningApi) -> None:
    limit = api.config.model.service.api.max_items
    body = {"items": [forecast(district=f"D{i}") for i in range(limit + 1)]}
    with api.client() as client:
        response = client.post(FORECASTS, json=body)
    assert response.status_code == 422 and fields(response) == ["items"]
    assert api.count("scheme_forecasts") == 0 or stored_forecast(api, "D0") is None


# --------------------------------------------------------------------------- forecasts: idempotency and versions


def test_forecast_resend_is_unchanged_and_writes_nothing(api: RunningApi) -> None:
    body = forecast(district="East", demand_index=0.123456)
    with api.client() as client:
        first = client.post(FORECASTS, json=body)
        with api.dep.connect("citizen") as conn:
            xmin = conn.execute("SELECT xmin::text FROM scheme_forecasts WHERE district = 'East'").fetchone()
        again = client.post(FORECASTS, json=body)
    assert first.status_code == again.status_code == 200
    assert first.json()["outcome"] == "created" and again.json()["outcome"] == "unchanged"
    assert {k: v for k, v in first.json().items() if k != "outcome"} == \
        {k: v for k, v in again.json().items() if k != "outcome"}
    assert stored_forecast(api, "East") == ("v1.2", Decimal("12.50"), Decimal("0.1235"))  # rounded to the scale
    with api.dep.connect("citizen") as conn:
        assert conn.execute("SELECT xmin::text FROM scheme_forecasts WHERE district = 'East'").fetchone() == xmin
        assert conn.execute("SELECT count(*) FROM scheme_forecasts WHERE district = 'East'").fetchone() == (1,)


def test_newer_model_version_replaces_and_older_is_superseded(api: RunningApi) -> None:
    with api.client() as client:
        first = client.post(FORECASTS, json=forecast(district="West", model_version="v2.9"))
        newer = client.post(FORECASTS, json=forecast(district="West", model_version="v2.10", demand_index=0.9))
        older = client.post(FORECASTS, json=forecast(district="West", model_version="v2.9", demand_index=0.1))
    assert first.json()["outcome"] == "created" and newer.json()["outcome"] == "replaced"
    assert older.status_code == 200
    assert older.json()["outcome"] == "superseded" and older.json()["current_model_version"] == "v2.10"
    assert stored_forecast(api, "West") == ("v2.10", Decimal("12.50"), Decimal("0.9000"))


def test_same_model_version_with_other_figures_is_409_and_nothing_written(api: RunningApi) -> None:
    with api.client() as client:
        client.post(FORECASTS, json=forecast(district="South"))
        response = client.post(FORECASTS, json={"items": [forecast(district="South2"),
                                                          forecast(district="South", demand_index=0.5)]})
    assert response.status_code == 409, response.text
    assert fields(response) == ["items.1.model_version"]
    assert stored_forecast(api, "South") == ("v1.2", Decimal("12.50"), Decimal("0.7500"))
    assert stored_forecast(api, "South2") is None


def test_forecast_batch_reports_each_item_in_order(api: RunningApi) -> None:
    items = [forecast(district="B1"), forecast(district="B2", horizon_date="2031-02-01"),
             forecast(district="B1", model_version="v1.3")]
    with api.client() as client:
        response = client.post(FORECASTS, json={"items": items})
        again = client.post(FORECASTS, json={"items": items})
    assert [i["outcome"] for i in response.json()["items"]] == ["created", "created", "replaced"]
    assert [i["outcome"] for i in again.json()["items"]] == ["superseded", "unchanged", "unchanged"]
    assert stored_forecast(api, "B1")[0] == "v1.3"  # type: ignore[index]


# --------------------------------------------------------------------------- alerts


def test_alert_resend_returns_the_same_id_and_writes_nothing(api: RunningApi) -> None:
    body = alert("ml-1", citizen_id=CITIZENS[0], scheme_id=101, expires_at="2031-01-01T10:00:00+05:30")
    with api.client() as client:
        first = client.post(ALERTS, json=body)
        before = api.count("citizen_alerts")
        again = client.post(ALERTS, json=body)
        same_instant = client.post(ALERTS, json={**body, "expires_at": "2031-01-01T04:30:00Z"})
    assert first.status_code == again.status_code == same_instant.status_code == 200
    assert first.json()["outcome"] == "created" and again.json()["outcome"] == "duplicate"
    assert first.json()["portal_alert_id"] == again.json()["portal_alert_id"] == same_instant.json()["portal_alert_id"]
    assert api.count("citizen_alerts") == before
    with api.dep.connect("citizen") as conn:
        row = conn.execute("SELECT citizen_id::text, scheme_id, source, source_alert_id FROM citizen_alerts"
                           " WHERE alert_id = %s", (first.json()["portal_alert_id"],)).fetchone()
    assert row == (CITIZENS[0], 101, "all", "ml-1")


def test_alert_id_reused_for_other_content_is_409(api: RunningApi) -> None:
    with api.client() as client:
        client.post(ALERTS, json=alert("ml-2"))
        before = api.count("citizen_alerts")
        response = client.post(ALERTS, json={"items": [alert("ml-3"), alert("ml-2", severity="critical")]})
    assert response.status_code == 409
    assert fields(response) == ["items.1.alert_id"] and "severity" in response.json()["fields"][0]["message"]
    assert api.count("citizen_alerts") == before  # ml-3 was not written either


def test_broadcast_and_targeted_alerts(api: RunningApi) -> None:
    items = [alert("b-1", district="North", scheme_id=102), alert("b-2"), alert("t-1", citizen_id=CITIZENS[1]),
             alert("b-1", district="North", scheme_id=102)]
    with api.client() as client:
        response = client.post(ALERTS, json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    assert [r["outcome"] for r in results] == ["created", "created", "created", "duplicate"]
    assert results[0]["portal_alert_id"] == results[3]["portal_alert_id"]
    with api.dep.connect("citizen") as conn:
        rows = conn.execute("SELECT source_alert_id, citizen_id IS NULL, district, scheme_id FROM citizen_alerts"
                            " WHERE source_alert_id IN ('b-1', 'b-2', 't-1') ORDER BY 1").fetchall()
    assert rows == [("b-1", True, "North", 102), ("b-2", True, None, None), ("t-1", False, None, None)]


def test_alert_ids_belong_to_their_client(api: RunningApi) -> None:
    """Two clients may use the same alert id; a rotated key of the same client shares its ids."""
    from civicsync.api.keys import create_key

    other, _ = create_key(api.config, "other-ml", ["alerts:write"])
    rotated, _ = create_key(api.config, "all-rotated", ["alerts:write"], client="all")
    with api.client() as mine, api.client(None, headers={"X-API-Key": other}) as theirs, \
            api.client(None, headers={"X-API-Key": rotated}) as rotated_client:
        a = mine.post(ALERTS, json=alert("shared-1")).json()
        b = theirs.post(ALERTS, json=alert("shared-1")).json()
        c = rotated_client.post(ALERTS, json=alert("shared-1")).json()
    assert a["outcome"] == b["outcome"] == "created" and a["portal_alert_id"] != b["portal_alert_id"]
    assert c == {**a, "outcome": "duplicate"}


def test_concurrent_resends_make_one_row(api: RunningApi) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def send(path: str, body: dict[str, Any]) -> dict[str, Any]:
        with api.client() as client:
            response = client.post(path, json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    with ThreadPoolExecutor(8) as pool:
        alerts = list(pool.map(lambda _: send(ALERTS, alert("race-1", scheme_id=103)), range(8)))
        forecasts = list(pool.map(lambda _: send(FORECASTS, forecast(district="Race")), range(8)))
    assert sorted(a["outcome"] for a in alerts) == ["created"] + ["duplicate"] * 7
    assert len({a["portal_alert_id"] for a in alerts}) == 1
    assert sorted(f["outcome"] for f in forecasts) == ["created"] + ["unchanged"] * 7
    assert api.count("citizen_alerts WHERE source_alert_id = 'race-1'") == 1
