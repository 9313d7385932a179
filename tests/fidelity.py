"""Helpers for the CDC fidelity tests: one table declared on both sides, a CDC and a batch flow over it.

The flows are declared for tables the reference never had (the engine is config-driven): the portal
database's ``public.<name>`` is copied to the warehouse database's ``public.<name>_copy`` column by
column, and tests compare every column's PostgreSQL text output, source against target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from civicsync.config import LoadedConfig
from civicsync.localpg import LocalPostgres, free_port
from fix_cdc import cdc_config
from fix_db import Deployment, new_deployment

# A server whose defaults shape text output differently from PostgreSQL's (issue 9 item 4).
ODD_SETTINGS = {"DateStyle": "'SQL, DMY'", "IntervalStyle": "sql_standard", "extra_float_digits": "0",
                "TimeZone": "'Pacific/Chatham'", "bytea_output": "escape"}
# The tests' own comparison session: full float precision, whatever the server's defaults.
COMPARE = ("SET extra_float_digits = 3; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = postgres;"
           " SET TimeZone = 'UTC'; SET bytea_output = hex")


@pytest.fixture(scope="module", name="odd_server")
def odd_server_fixture() -> Iterator[LocalPostgres]:
    """A second private PostgreSQL whose postgresql.conf sets :data:`ODD_SETTINGS`."""
    base = Path(tempfile.mkdtemp(prefix="civicsync-test-oddpg-", dir=os.environ.get("CIVICSYNC_TEST_TMP")))
    server = LocalPostgres(base, free_port(), durable=False)
    server.init()
    with (server.pgdata / "postgresql.conf").open("a") as fh:
        fh.write("".join(f"{k} = {v}\n" for k, v in ODD_SETTINGS.items()))
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["default", "odd"], name="any_deployment")
def any_deployment_fixture(request: pytest.FixtureRequest, pg_server: LocalPostgres) -> Iterator[Deployment]:
    """Fresh reference databases on the default server, then on the odd-settings one."""
    server = pg_server if request.param == "default" else request.getfixturevalue("odd_server")
    dep = new_deployment(server)
    try:
        yield dep
    finally:
        dep.drop()

TYPES_SQL = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE TYPE pair AS (j json, p point, n numeric)",
    "CREATE DOMAIN jdoc AS json CHECK (VALUE::text <> '')",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
]


def create_pair(dep: Deployment, name: str, columns: dict[str, str], *, types: bool = True,
                identity_full: bool = False) -> None:
    """``public.<name>`` in the portal database and ``public.<name>_copy`` in the warehouse one."""
    ddl = ", ".join(f"{c} {kind}" for c, kind in columns.items())
    for db, table in (("citizen", name), ("warehouse", f"{name}_copy")):
        with dep.connect(db) as conn:
            if types:
                for stmt in TYPES_SQL:
                    conn.execute(stmt)
            conn.execute(f"CREATE TABLE {table} ({ddl})")
            if identity_full and db == "citizen":
                conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")


def declare_pair(name: str, columns: list[str], key: list[str], *, cdc: dict[str, Any] | None = None,
                 ) -> Callable[[dict[str, Any]], None]:
    """A config mutation declaring the pair, a CDC flow ``FX`` and a batch flow ``FB`` over it."""
    def mutate(raw: dict[str, Any]) -> None:
        raw["connections"]["citizen"]["tables"][f"public.{name}"] = {"key": key, "columns": columns}
        raw["connections"]["warehouse"]["tables"][f"public.{name}_copy"] = {"key": key}  # columns derived
        common = {"source": {"connection": "citizen", "table": f"public.{name}"},
                  "target": {"connection": "warehouse", "table": f"public.{name}_copy"},
                  "columns": {c: c for c in columns}}
        raw["flows"][f"{name}_stream"] = {"id": "FX", "kind": "cdc", **({"cdc": cdc} if cdc else {}), **common}
        raw["flows"][f"{name}_batch"] = {"id": "FB", "kind": "batch", **common}
    return mutate


def pair_config(dep: Deployment, name: str, columns: list[str], key: list[str], *,
                cdc: dict[str, Any] | None = None) -> LoadedConfig:
    return cdc_config(dep, declare_pair(name, columns, key, cdc=cdc))


def texts(dep: Deployment, db: str, table: str, columns: list[str], order: str = "1") -> list[tuple[Any, ...]]:
    """Every column's text output, in a fixed session format (the comparison's own settings)."""
    cols = ", ".join(f"{c}::text" for c in columns)
    with dep.connect(db) as conn:
        conn.execute(COMPARE)
        return conn.execute(f"SELECT {cols} FROM {table} ORDER BY {order}").fetchall()


def dead_letters(dep: Deployment, db: str = "warehouse") -> list[tuple[Any, ...]]:
    with dep.connect(db) as conn:
        return conn.execute("SELECT flow, row_key, error_kind, error FROM civicsync.dead_letters"
                            " WHERE status = 'pending'").fetchall()
