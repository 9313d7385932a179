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
from fidelity import any_deployment_fixture, create_pair, dead_letters, odd_server_fixture, pair_config, texts
from fix_cdc import cdc_config, running, wait_for
from fix_db import Deployment, q

FIXTURES = (any_deployment_fixture, odd_server_fixture)  # used by name

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
    raw["connections"]["warehouse"]["tables"]["public.torture_copy"] = {"key": ["id"]}  # columns derived
    common = {"source": {"connection": "citizen", "table": "public.torture"},
              "target": {"connection": "warehouse", "table": "public.torture_copy"},
              "columns": {c: c for c in cols}}
    raw["flows"]["torture_stream"] = {"id": "T1", "kind": "cdc", **common}
    raw["flows"]["torture_batch"] = {"id": "T2", "kind": "batch", **common}


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


# ---------------------------------------------------------------------------------------------------------
# Issue 9 item 5: the whole torture sequence, snapshot and streaming, on a default server and on one with odd
# text-output defaults, under the default replica identity and REPLICA IDENTITY FULL.

TORTURE = {
    "id": "int PRIMARY KEY", "i2": "smallint", "i8": "bigint", "num": "numeric", "f4": "real", "f8": "float8",
    "d": "date", "ts": "timestamp", "tz": "timestamptz", "t": "time", "ttz": "timetz", "iv": "interval",
    "b": "bytea", "bits": "bit(8)", "vb": "varbit", "flag": "boolean", "ch": "char(3)", "vc": "varchar(10)",
    "txt": "text", "j": "json", "jb": "jsonb", "x": "xml", "u": "uuid", "m": "money",
    "ip": "inet", "cidr": "cidr", "mac": "macaddr", "mac8": "macaddr8",
    "p": "point", "ln": "line", "ls": "lseg", "bx": "box", "pa": "path", "pg": "polygon", "c": "circle",
    "tsv": "tsvector", "tsq": "tsquery", "arr": "int[]", "arr2": "numeric[]", "tarr": "text[]", "jarr": "json[]",
    "r": "int4range", "dr": "daterange", "tsr": "tstzrange", "mr": "int4multirange", "nmr": "nummultirange",
    "mood": "mood", "moods": "mood[]", "pr": "pair", "jd": "jdoc", "pi": "posint",
    "big_t": "text", "big_b": "bytea", "big_j": "jsonb",
}
T_ROWS = [
    "1, -32768, -9223372036854775808, 'NaN', '-Infinity', '-0', 'infinity', '-infinity', '4713-01-01 00:00:00+00 BC',"
    " '24:00', '12:34:56.789+05:30', '-178000000 years', '\\x00ff', B'10101010', B'1', true, 'a', 'ünï',"
    " E'tab\\t\\nnl \\\\ ''\"', '{\"b\": 1,  \"b\": 2}', '{\"a\": 1.50}', '<a b=\"1\">x &amp; y</a>',"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '-92233720368547758.08', '192.168.0.1/24', '10.0.0.0/8',"
    " '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '(1.5,-0)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)',"
    " '[(0,0),(1,1),(2,0)]', '((0,0),(1,0),(1,1))', '<(0,0),1.5>', 'a:1A fat:2B cat', 'fat & (rat | !cat)',"
    " '{1,NULL,3}', '{{1.50,2},{NaN,-0}}', '{\"a,b\",NULL,\"c\\\"d\",\"\"}', ARRAY['{}'::json, '[1]'], '[1,10)',"
    " '[2024-02-29,infinity)', '(,)', '{[1,3),[5,7)}', '{}', 'ok', '{sad,happy}', ROW('{\"x\": [1]}', '(1,2)', 1.5),"
    " '{\"d\": 1}', 7",
    "2, 32767, 9223372036854775807, '1.5', 'NaN', '0', '0044-03-15 BC', '1999-12-31 23:59:59.999999',"
    " '2024-02-29 12:00:00+05:30', '00:00', '00:00-12', '30 days', '\\x', B'00000000', B'', false, 'abc', '',"
    " '', '[]', '1.0', '<r/>', '00000000-0000-0000-0000-000000000000', '0', '::1', '2001:db8::/32',"
    " 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff', '(1e300,-1e-300)', '{0,1,0}', '[(1,1),(1,1)]',"
    " '(0,0),(0,0)', '((0,0))', '((1,1))', '<(1,1),0>', '', '!a', '{}', '{1.5}', '{}', '{}', 'empty',"
    " 'empty', '[2026-01-01 00:00:00+00,infinity)', '{}', '{[1.5,2.25]}', 'sad', '{}', ROW(NULL, NULL, NULL),"
    " '[]', 1",
    "3",  # every other column NULL
]
# An update of only the representation: '=' says equal, the text says otherwise.
T_REPRESENTATION = ("num = 1.50, f8 = '-0', iv = '1 mon', jb = '1.00', arr2 = '{1.50}', p = '(1e300,-1e-300)',"
                    " pr = ROW(NULL, NULL, NULL)")


def _torture_big(dep: Deployment, ids: str) -> None:
    q(dep, "citizen", f"UPDATE torture SET big_t = repeat('t', 300000) || id, big_b = decode(repeat('00ff', 100000),"
                      f" 'hex'), big_j = jsonb_build_object('k', repeat('j', 300000)) WHERE id IN ({ids})")


def _torture_same(dep: Deployment) -> bool:
    cols = list(TORTURE)
    return texts(dep, "citizen", "torture", cols) == texts(dep, "warehouse", "torture_copy", cols)


@pytest.mark.parametrize("identity_full", [False, True], ids=["default_identity", "identity_full"])
def test_torture_snapshot_and_stream(any_deployment: Deployment, identity_full: bool) -> None:
    dep = any_deployment
    create_pair(dep, "torture", TORTURE, identity_full=identity_full)
    for db, table in (("citizen", "torture"), ("warehouse", "torture_copy")):
        for col in ("big_t", "big_b", "big_j"):
            q(dep, db, f"ALTER TABLE {table} ALTER COLUMN {col} SET STORAGE EXTERNAL")
    for row in T_ROWS:
        q(dep, "citizen", f"INSERT INTO torture VALUES ({row})")
    _torture_big(dep, "1")
    config = pair_config(dep, "torture", list(TORTURE), ["id"], cdc={"truncate": "propagate"})
    with running(config, "citizen", ["FX"]):
        wait_for(lambda: _torture_same(dep), what="the snapshot")
        # Streamed inserts (with TOAST values), then every kind of update.
        for new_id, like in ((4, 1), (5, 2), (6, 3)):
            q(dep, "citizen", f"INSERT INTO torture SELECT {new_id}, " + ", ".join(list(TORTURE)[1:])
              + f" FROM torture WHERE id = {like}")
        _torture_big(dep, "4, 5")
        wait_for(lambda: _torture_same(dep), what="the streamed inserts")
        q(dep, "citizen", "UPDATE torture SET txt = 'small change' WHERE id = 4")                 # TOAST unchanged
        q(dep, "citizen", f"UPDATE torture SET {T_REPRESENTATION} WHERE id = 5")                 # representation
        q(dep, "citizen", "UPDATE torture SET id = 40 WHERE id = 4")                              # key, TOAST unsent
        q(dep, "citizen", "UPDATE torture SET (" + ", ".join(list(TORTURE)[1:-3]) + ") = (SELECT "
          + ", ".join(list(TORTURE)[1:-3]) + " FROM torture WHERE id = 1) WHERE id = 6")         # NULL -> value
        q(dep, "citizen", "UPDATE torture SET " + ", ".join(f"{c} = NULL" for c in list(TORTURE)[1:-3])
          + " WHERE id = 5")                                                                      # value -> NULL
        wait_for(lambda: _torture_same(dep), what="the updates")
        q(dep, "citizen", "DELETE FROM torture WHERE id IN (1, 40)")
        wait_for(lambda: _torture_same(dep), what="the deletes")
        q(dep, "citizen", "TRUNCATE torture")
        q(dep, "citizen", f"INSERT INTO torture VALUES ({T_ROWS[1]})")
        wait_for(lambda: _torture_same(dep), what="the truncate")
    assert texts(dep, "warehouse", "torture_copy", ["id"]) == [("2",)]
    assert dead_letters(dep) == []
