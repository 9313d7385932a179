"""Type torture: every PostgreSQL type a department may use round-trips exactly, streamed and snapshotted.

A flow declared for tables the reference never had (the engine is config-driven) copies a table
of awkward values from the portal database to the warehouse database; the target rows must equal
the source rows exactly (compared as PostgreSQL's own text of the whole row), including unchanged
TOASTed values after updates to other columns.
"""

from __future__ import annotations

from typing import Any

import pytest

from civicsync.jobs.batch import run_batch
from fix_cdc import cdc_config, running, wait_for
from fix_db import Deployment

COLUMNS = {
    "id": "int PRIMARY KEY",
    "i8": "bigint", "num": "numeric", "num_nan": "numeric", "f8": "float8", "f4": "real",
    "d": "date", "ts": "timestamp", "tstz": "timestamptz", "t": "time", "ttz": "timetz", "iv": "interval",
    "b": "bytea", "j": "json", "jb": "jsonb", "arr": "int[]", "arr2": "int[][]", "tarr": "text[]",
    "mood": "mood", "r": "int4range", "tr": "tstzrange", "nr": "numrange",
    "ip": "inet", "net": "cidr", "mac": "macaddr", "u": "uuid", "m": "money", "x": "xml",
    "txt": "text", "flag": "boolean",
    "big_t": "text", "big_b": "bytea", "big_j": "jsonb", "big_a": "int[]",
}

ROWS = [
    {"id": 1, "i8": -9223372036854775808, "num": "123456789012345678901234567890.123456789012", "num_nan": "NaN",
     "f8": "NaN", "f4": "-Infinity", "d": "infinity", "ts": "-infinity", "tstz": "infinity", "t": "24:00:00",
     "ttz": "12:34:56.789+05:30", "iv": "1 year 2 mons 3 days 04:05:06.789", "b": "\\x00ff10",
     "j": '{"b": 1,   "a": [1, 2], "b": 2}', "jb": '{"z": {"y": [1, null, "x"]}, "a": 1.50}',
     "arr": "{1,2,3}", "arr2": "{{1,2},{3,4}}", "tarr": '{"a,b",NULL,"c\\"d","",NULL}', "mood": "ok",
     "r": "[1,10)", "tr": "[2026-01-01 00:00:00+00,infinity)", "nr": "empty",
     "ip": "192.168.0.1/24", "net": "10.0.0.0/8", "mac": "08:00:2b:01:02:03",
     "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "m": "1234.56", "x": '<a b="1">x &amp; y</a>',
     "txt": "tab\tnew\nline \\ back ünïcödé 😀 '\"", "flag": True},
    {"id": 2, "i8": 9223372036854775807, "num": "1e-20", "num_nan": "0", "f8": "1.0000000000000002",
     "f4": "3.4028235e+38", "d": "0044-03-15 BC", "ts": "1999-12-31 23:59:59.999999",
     "tstz": "0001-01-01 00:00:00+00 BC",
     "t": "00:00:00", "ttz": "00:00:00-12:00", "iv": "-1 years -00:00:00.000001", "b": "\\x",
     "j": "[]", "jb": "{}", "arr": "{}", "arr2": "{{{1}}}", "tarr": "{}", "mood": "sad", "r": "empty",
     "tr": "(,)", "nr": "[-1.5,2.25]", "ip": "::1", "net": "2001:db8::/32", "mac": "ff:ff:ff:ff:ff:ff",
     "u": "00000000-0000-0000-0000-000000000000", "m": "-0.01", "x": "<r/>", "txt": "", "flag": False},
    {"id": 3},  # every other column NULL
]


def big_values(n: int) -> dict[str, Any]:
    return {"big_t": "t" * 300_000, "big_b": bytes(range(256)) * 2000,
            "big_j": '{"k": "' + "j" * 300_000 + '"}', "big_a": "{" + ",".join(["7"] * 100_000) + "}"}


def create_tables(dep: Deployment) -> None:
    ddl = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    for db, table in (("citizen", "torture"), ("warehouse", "torture_copy")):
        with dep.connect(db) as conn:
            conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
            conn.execute(f"CREATE TABLE {table} ({ddl})")
            conn.execute("SET lc_monetary = 'C'")
            for col in ("big_t", "big_b", "big_j", "big_a"):
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN {col} SET STORAGE EXTERNAL")


def insert_rows(dep: Deployment) -> None:
    with dep.connect("citizen") as conn:
        for row in ROWS:
            values = {**row, **(big_values(row["id"]) if row["id"] != 3 else {})}
            cols = ", ".join(values)
            conn.execute(f"INSERT INTO torture ({cols}) VALUES ({', '.join(['%s'] * len(values))})",
                         list(values.values()))


def declare(raw: dict[str, Any]) -> None:
    cols = list(COLUMNS)
    raw["connections"]["citizen"]["tables"]["public.torture"] = {"key": ["id"], "columns": cols}
    raw["connections"]["warehouse"]["tables"]["public.torture_copy"] = {"key": ["id"], "columns": cols}
    common = {"source": {"connection": "citizen", "table": "public.torture"},
              "target": {"connection": "warehouse", "table": "public.torture_copy"},
              "columns": {c: c for c in cols}}
    raw["flows"]["torture_stream"] = {"id": "T1", "kind": "cdc", "cdc": {}, **common}
    raw["flows"]["torture_batch"] = {"id": "T2", "kind": "batch", "mode": "full", **common}


def rows_text(dep: Deployment, db: str, table: str) -> list[tuple[Any, ...]]:
    with dep.connect(db) as conn:
        return conn.execute(f"SELECT id, t::text FROM {table} t ORDER BY id").fetchall()


@pytest.mark.parametrize("path", ["stream", "snapshot", "batch"])
def test_every_type_round_trips_exactly(fresh_deployment: Deployment, path: str) -> None:
    dep = fresh_deployment
    create_tables(dep)
    config = cdc_config(dep, declare)
    if path == "batch":
        insert_rows(dep)
        run_batch(config, "T2").raise_for_error()
        assert rows_text(dep, "warehouse", "torture_copy") == rows_text(dep, "citizen", "torture")
        return
    if path == "snapshot":
        insert_rows(dep)
    with running(config, "citizen", ["T1"]):
        if path == "stream":
            insert_rows(dep)
        expected = rows_text(dep, "citizen", "torture")
        wait_for(lambda: rows_text(dep, "warehouse", "torture_copy") == expected, what="identical rows")
        # Updates that leave the TOASTed columns alone: they arrive as 'unchanged' and must stay.
        with dep.connect("citizen") as conn:
            conn.execute("UPDATE torture SET txt = 'changed', arr2 = '{{5,6},{7,8}}' WHERE id IN (1, 2)")
        expected = rows_text(dep, "citizen", "torture")
        wait_for(lambda: rows_text(dep, "warehouse", "torture_copy") == expected, what="the update")
    with dep.connect("warehouse") as conn:
        assert conn.execute("SELECT length(big_t), length(big_b) FROM torture_copy WHERE id = 1").fetchone() \
            == (300_000, 512_000)
