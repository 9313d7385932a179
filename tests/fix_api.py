"""Fixtures for API tests: the real app served by ApiServer on 127.0.0.1:0 over fresh databases,
with a few portal rows to refer to and keys of every kind (registered in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from civicsync.api.app import create_app
from civicsync.api.keys import SCOPES, create_key
from civicsync.api.server import ApiServer
from civicsync.config import LoadedConfig
from civicsync.runtime.state import ServiceState
from fix_db import Deployment

CITIZENS = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002")
SCHEMES = (101, 102, 103)

KEY_SCOPES: dict[str, list[str]] = {
    "all": list(SCOPES),
    "forecasts": ["forecasts:write"],
    "alerts": ["alerts:write"],
    "reader": ["admin:read"],
}


@dataclass
class RunningApi:
    """The API under test: its server, config, deployment and keys (by label)."""

    server: ApiServer
    config: LoadedConfig
    dep: Deployment
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str | None = "all", headers: dict[str, str] | None = None, base_url: str | None = None,
               **kwargs: Any) -> httpx.Client:
        """An HTTP client (to this server, or ``base_url``) sending the key labelled ``key`` (None: no
        key) and ``headers``."""
        sent = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=base_url or self.url, headers={**sent, **(headers or {})}, timeout=30,
                            **kwargs)

    def count(self, table: str) -> int:
        with self.dep.connect("citizen") as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def seed_portal(dep: Deployment) -> None:
    """Schemes and citizens the callbacks may refer to."""
    with dep.connect("citizen") as conn:
        for scheme in SCHEMES:
            conn.execute("INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (%s, %s, %s, 'welfare',"
                         " 'OPEN')", (scheme, f"S{scheme}", f"Scheme {scheme}"))
        for citizen in CITIZENS:
            conn.execute("INSERT INTO citizens (citizen_id, full_name, district) VALUES (%s, 'A Citizen', 'North')",
                         (citizen,))


def serve(config: LoadedConfig, state: ServiceState | None = None) -> ApiServer:
    """The app for ``config`` served on a free loopback port."""
    return ApiServer(create_app(config, state), "127.0.0.1", 0).start()


def make_keys(config: LoadedConfig, tag: str = "") -> dict[str, str]:
    """One key per entry of KEY_SCOPES."""
    return {label: create_key(config, f"{label}{tag}", scopes)[0] for label, scopes in KEY_SCOPES.items()}


@pytest.fixture(scope="module")
def api(deployment: Deployment) -> Iterator[RunningApi]:
    """The API alone (no service state) over the module's deployment."""
    config = deployment.config()
    seed_portal(deployment)
    server = serve(config)
    try:
        yield RunningApi(server, config, deployment, make_keys(config))
    finally:
        server.stop()
