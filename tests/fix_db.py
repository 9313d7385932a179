"""Fixtures: fresh warehouse/citizen databases per test module, and a loaded reference config."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from civicsync.config import LoadedConfig, load_config
from civicsync.localpg import LocalPostgres
from civicsync.provision.databases import init_databases

PSEUDONYM_KEY = "test-pseudonym-key-0123456789"


@dataclass
class Deployment:
    """The reference deployment on fresh databases: config plus handy DSNs."""

    server: LocalPostgres
    warehouse_db: str
    citizen_db: str

    @property
    def warehouse_dsn(self) -> str:
        return self.server.dsn(self.warehouse_db)

    @property
    def citizen_dsn(self) -> str:
        return self.server.dsn(self.citizen_db)

    @property
    def environ(self) -> dict[str, str]:
        return {
            "CIVICSYNC_WAREHOUSE_DSN": self.warehouse_dsn,
            "CIVICSYNC_CITIZEN_DSN": self.citizen_dsn,
            "CIVICSYNC_PSEUDONYM_KEY": PSEUDONYM_KEY,
        }

    def config(self) -> LoadedConfig:
        return load_config(environ=self.environ)

    def connect(self, which: str) -> psycopg.Connection[tuple[object, ...]]:
        dsn = self.warehouse_dsn if which == "warehouse" else self.citizen_dsn
        return psycopg.connect(dsn, autocommit=True)

    def drop(self) -> None:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            for db in (self.warehouse_db, self.citizen_db):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def q(dep: Deployment, db: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on ``db`` ('warehouse' or 'citizen'); its rows, if it returns any."""
    with dep.connect(db) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def new_deployment(server: LocalPostgres) -> Deployment:
    """Fresh, empty reference databases with random names (tests never collide)."""
    tag = secrets.token_hex(4)
    dep = Deployment(server, f"wh_{tag}", f"cz_{tag}")
    init_databases(dep.config())
    return dep


@pytest.fixture(scope="module")
def deployment(pg_server: LocalPostgres) -> Iterator[Deployment]:
    """Fresh reference databases for one test module."""
    dep = new_deployment(pg_server)
    try:
        yield dep
    finally:
        dep.drop()


@pytest.fixture()
def fresh_deployment(pg_server: LocalPostgres) -> Iterator[Deployment]:
    """Fresh reference databases for one test."""
    dep = new_deployment(pg_server)
    try:
        yield dep
    finally:
        dep.drop()
