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


_TEMPLATES: dict[str, Deployment] = {}


def _template(server: LocalPostgres) -> Deployment:
    """The server's migrated reference databases, made once and then only copied (``CREATE DATABASE
    ... TEMPLATE``: ~0.3 s a deployment instead of ~1 s of migrations, over some 400 of them)."""
    tmpl = _TEMPLATES.get(str(server.datadir))
    if tmpl is None:
        tag = secrets.token_hex(4)
        tmpl = Deployment(server, f"tmpl_wh_{tag}", f"tmpl_cz_{tag}")
        init_databases(tmpl.config())
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            for db in (tmpl.warehouse_db, tmpl.citizen_db):
                # Nobody connects to a template again: a session on it would make every copy fail.
                conn.execute(f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true')
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
        _TEMPLATES[str(server.datadir)] = tmpl
    return tmpl


def new_deployment(server: LocalPostgres) -> Deployment:
    """Fresh reference databases with random names (tests never collide), as `db init` leaves them:
    copies of the server's migrated template, then `db init` again for what a copy does not carry
    (database-level grants; the cluster's roles and origins exist already)."""
    tag = secrets.token_hex(4)
    dep = Deployment(server, f"wh_{tag}", f"cz_{tag}")
    tmpl = _template(server)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for db, source in ((dep.warehouse_db, tmpl.warehouse_db), (dep.citizen_db, tmpl.citizen_db)):
            conn.execute(f'CREATE DATABASE "{db}" TEMPLATE "{source}"')
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
