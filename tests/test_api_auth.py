"""API keys: 401 without / with a bad or revoked key, 403 without the scope, never logged; the apikey CLI."""

from __future__ import annotations

import json
import logging

import pytest

from civicsync.api.keys import create_key, key_id_of, revoke_key
from fix_api import RunningApi
from fix_cli import civicsync

ALERT = {"alert_id": "auth-1", "severity": "info", "alert_type": "notice", "message": "hello"}


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer not-a-key"},
    {"Authorization": "Bearer csk_000000000000_" + "A" * 43},
    {"X-API-Key": "csk_000000000000_" + "A" * 43},
])
def test_missing_or_invalid_key_is_401_with_a_challenge(api: RunningApi, headers: dict[str, str]) -> None:
    with api.client(None, headers=headers) as client:
        for method, path in (("POST", "/api/v1/alerts"), ("POST", "/api/v1/forecasts"),
                             ("GET", "/api/v1/dead-letters"), ("POST", "/api/v1/dead-letters/replay")):
            response = client.request(method, path, json=ALERT if "alerts" in path else {"all": True})
            assert response.status_code == 401, (path, response.text)
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="civicsync"')
            assert response.json()["error"] == "unauthorized"


def test_a_key_with_a_wrong_secret_is_401(api: RunningApi) -> None:
    real = api.keys["all"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    with api.client(None, headers={"Authorization": f"Bearer {forged}"}) as client:
        assert client.post("/api/v1/alerts", json=ALERT).status_code == 401


def test_revoked_key_is_401_at_once(api: RunningApi) -> None:
    key, _ = create_key(api.config, "short-lived", ["alerts:write"])
    with api.client(None, headers={"X-API-Key": key}) as client:
        assert client.post("/api/v1/alerts", json=ALERT).status_code == 200
        revoke_key(api.config, "short-lived")
        response = client.post("/api/v1/alerts", json=ALERT)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("label", "method", "path", "body"), [
    ("forecasts", "POST", "/api/v1/alerts", ALERT),
    ("alerts", "POST", "/api/v1/forecasts", {"scheme_id": 101, "district": "N", "horizon_date": "2031-01-01",
                                             "model_version": "v1"}),
    ("alerts", "GET", "/api/v1/dead-letters", None),
    ("reader", "POST", "/api/v1/dead-letters/replay", {"all": True}),
])
def test_a_key_without_the_scope_is_403(api: RunningApi, label: str, method: str, path: str,
                                         body: object) -> None:
    with api.client(label) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden" and "lacks the scope" in response.json()["message"]


def test_keys_never_appear_in_logs(api: RunningApi, caplog: pytest.LogCaptureFixture,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    revoked, _ = create_key(api.config, "to-revoke", ["alerts:write"])
    revoke_key(api.config, "to-revoke")
    secrets = [api.keys["all"], api.keys["reader"], revoked]
    with api.client() as good, api.client("reader") as reader, \
            api.client(None, headers={"Authorization": f"Bearer {revoked}"}) as bad:
        assert good.post("/api/v1/alerts", json=ALERT).status_code == 200
        assert good.post("/api/v1/alerts", json={**ALERT, "message": "other"}).status_code == 409
        assert reader.post("/api/v1/alerts", json=ALERT).status_code == 403
        assert bad.get("/api/v1/dead-letters").status_code == 401
        assert good.get(f"/no/such/{api.keys['all']}").status_code == 404  # a key pasted into a path
        assert good.get("/api/v1/status", params={"key": api.keys["all"]}).status_code == 200
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not the client's
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in server_side) + "".join(capfd.readouterr())
    access = [r.getMessage() for r in caplog.records if r.name == "civicsync.api.access"]
    assert any("POST /api/v1/alerts 409" in line and f"key={key_id_of(api.keys['all'])}" in line
               for line in access), access
    for secret in secrets:
        assert secret not in logged
        assert secret.split("_", 2)[2] not in logged  # not even the secret part alone


# --------------------------------------------------------------------------- the apikey CLI


def test_apikey_cli_create_list_revoke(api: RunningApi) -> None:
    env = api.dep.environ
    made = civicsync("apikey", "create", "cli-ml", "--scope", "alerts:write", "--scope", "forecasts:write",
                     "--json", env=env)
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    assert record["name"] == "cli-ml" and record["scopes"] == ["forecasts:write", "alerts:write"]
    assert record["key"].startswith(f"csk_{record['key_id']}_") and record["revoked_at"] is None
    with api.client(None, headers={"X-API-Key": record["key"]}) as client:
        assert client.post("/api/v1/alerts", json={**ALERT, "alert_id": "cli-1"}).status_code == 200

    listed = json.loads(civicsync("apikey", "list", "--json", env=env).stdout)
    mine = [k for k in listed if k["name"] == "cli-ml"]
    assert len(mine) == 1 and "key" not in mine[0] and mine[0]["key_id"] == record["key_id"]
    assert record["key"] not in civicsync("apikey", "list", env=env).stdout

    twice = civicsync("apikey", "create", "cli-ml", "--scope", "alerts:write", env=env)
    assert twice.returncode == 2 and "in force already" in twice.stderr  # bad input (issue 11.7)
    bad_scope = civicsync("apikey", "create", "x", "--scope", "alerts:delete", env=env)
    assert bad_scope.returncode == 2 and "alerts:delete" in bad_scope.stderr

    revoked = civicsync("apikey", "revoke", record["key_id"], "--json", env=env)
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"] is not None
    with api.client(None, headers={"X-API-Key": record["key"]}) as client:
        assert client.post("/api/v1/alerts", json={**ALERT, "alert_id": "cli-2"}).status_code == 401
    again = civicsync("apikey", "revoke", "cli-ml", env=env)
    assert again.returncode == 2 and "no key in force" in again.stderr  # an unknown key is bad input
