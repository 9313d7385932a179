"""Issue 10 item 5 and issue 11 item 9 through the real HTTP server: no personal data in error
messages or in what the status API shows without ``admin:read``; date-times out of range are a 422
naming the field, never a stored alert that makes every resend a 500."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from civicsync.jobs.batch import run_batch
from civicsync.reconcile import reconcile_flow
from civicsync.reference.seed import seed
from fix_api import RunningApi
from fix_db import q

ALERTS = "/api/v1/alerts"
UNKNOWN = "5b0c9e3a-1d2f-4c3b-9a8e-7f6d5c4b3a21"


def alert(alert_id: str, **changes: object) -> dict[str, object]:
    return {"alert_id": alert_id, "severity": "info", "alert_type": "notice", "message": "Office closed.", **changes}


def test_an_unknown_citizen_is_named_by_field_and_a_shortened_id(api: RunningApi) -> None:
    with api.client("alerts") as client:
        single = client.post(ALERTS, json=alert("pd-1", citizen_id=UNKNOWN))
        batch = client.post(ALERTS, json={"items": [alert("pd-2"), alert("pd-3", citizen_id=UNKNOWN)]})
    assert single.status_code == 422 and batch.status_code == 422
    for response in (single, batch):
        assert UNKNOWN not in response.text and UNKNOWN[:9] not in response.text
        assert "5b0c…" in response.text
    assert [f["field"] for f in batch.json()["fields"]] == ["items.1.citizen_id"]
    assert batch.json()["message"] == "unknown citizen id(s) at items.1.citizen_id"


def test_status_shows_counts_not_keys_of_people_without_admin_read(api: RunningApi) -> None:
    dep = api.dep
    seed(dep.warehouse_dsn, dep.citizen_dsn, 30, only="profiles")
    run_batch(api.config, "F2").raise_for_error()
    citizens = [str(r[0]) for r in q(dep, "warehouse", "SELECT citizen_id FROM citizen_profiles ORDER BY 1 LIMIT 3")]
    q(dep, "citizen", "UPDATE citizens SET full_name = 'Changed' WHERE citizen_id = ANY(%s::uuid[])", citizens)
    result = reconcile_flow(api.config, "F2")
    assert result.as_dict()["different"] >= 3
    with api.client(None) as anonymous, api.client("forecasts") as other_scope, api.client("reader") as reader:
        public = anonymous.get("/api/v1/status")
        scoped = other_scope.get("/api/v1/status")
        full = reader.get("/api/v1/status")
        bad_key = anonymous.get("/api/v1/status", headers={"Authorization": "Bearer csk_000000000000_" + "x" * 43})
    for response in (public, scoped):
        assert response.status_code == 200, response.text
        assert not any(c in response.text for c in citizens), "a citizen id in the status without admin:read"
        f2 = next(r for r in response.json()["reconciliation"] if r["id"] == "F2")
        assert "samples" not in f2 and f2["sample_counts"]["different"] >= 3
    assert full.status_code == 200
    f2 = next(r for r in full.json()["reconciliation"] if r["id"] == "F2")
    assert {s["key"]["citizen_id"] for s in f2["samples"]["different"]} >= set(citizens)
    assert bad_key.status_code == 401


OFFSET = st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23),
                   st.integers(0, 59)) | st.just("Z")
EXTREME = st.builds(
    lambda y, mo, d, h, mi, s, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{off}",
    st.sampled_from([1, 2, 1970, 2030, 9998, 9999]) | st.integers(1, 9999), st.integers(1, 12),
    st.integers(1, 28) | st.sampled_from([31]), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), OFFSET)


@pytest.mark.parametrize("expires_at", ["0001-01-01T00:00:00+05:30", "9999-12-31T23:59:59-12:00"])
def test_the_reported_extremes_are_a_422_naming_expires_at(api: RunningApi, expires_at: str) -> None:
    with api.client("alerts") as client:
        first = client.post(ALERTS, json=alert("edge-" + expires_at[:4], expires_at=expires_at))
        again = client.post(ALERTS, json=alert("edge-" + expires_at[:4], expires_at=expires_at))
    for response in (first, again):
        assert response.status_code == 422, response.text
        assert [f["field"] for f in response.json()["fields"]] == ["expires_at"]
        assert "years 1 to 9999" in response.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expires_at=EXTREME)
@example(expires_at="0001-01-01T00:00:00+00:01")
@example(expires_at="9999-12-31T23:59:59-00:01")
def test_any_expiry_is_stored_and_resent_or_refused_never_a_500(api: RunningApi, expires_at: str) -> None:
    body = alert(f"hyp-{uuid.uuid4().hex}", expires_at=expires_at)
    with api.client("alerts") as client:
        first = client.post(ALERTS, json=body)
        again = client.post(ALERTS, json=body)
    assert first.status_code in (200, 422), first.text
    if first.status_code == 422:
        assert [f["field"] for f in first.json()["fields"]] == ["expires_at"], first.text
        assert again.status_code == 422
    else:
        assert again.status_code == 200, again.text
        assert again.json()["outcome"] == "duplicate", json.dumps(again.json())
