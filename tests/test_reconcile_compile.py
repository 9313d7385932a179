"""The Python chain stays the one definition of what a flow derives: for every rule reconciliation
compiles to SQL, the compiled SQL gives exactly what the chain gives, on generated values (filters
pass the same rows, the same rows are refused, every column has the same target value)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from civicsync.config import LoadedConfig
from civicsync.config.loader import parse_config
from civicsync.db.catalog import column_types
from civicsync.errors import RowRejectedError
from civicsync.extract.source import stream_query
from civicsync.reconcile import build_plan
from civicsync.reconcile.catalog import load_catalog
from civicsync.reconcile.compile import NotCompilable, compile_rules
from civicsync.transform.chain import build_transform
from fix_db import PSEUDONYM_KEY, Deployment

SOURCE = """CREATE TABLE rc_src (id bigint PRIMARY KEY, t text, t2 text, n numeric, f double precision, i integer,
    u uuid, ts timestamptz, d date, b boolean, j jsonb, c character(6))"""
TARGET = """CREATE TABLE rc_tgt (id bigint PRIMARY KEY, plain_t text, plain_n numeric, f_as_numeric numeric,
    i_as_bigint bigint, u_as_text text, ts_c timestamptz, ts_as_text text, d_c date, b_as_text text, j_c jsonb,
    c_as_text text, const_c text, const_masked text, tmpl text, mapped text, mapped_strict text, mapped_null text,
    keep_plain text, keep_tmpl text, keep_zero text, band_n text, band_f text, band_strict text, band_i text,
    dropped text, pseudonym text, required_t text)"""
COLUMNS = {
    "id": "id", "plain_t": "t", "plain_n": "n", "f_as_numeric": "f", "i_as_bigint": "i", "u_as_text": "u",
    "ts_c": "ts", "ts_as_text": "ts", "d_c": "d", "b_as_text": "b", "j_c": "j", "c_as_text": "c",
    "const_c": {"const": True},
    "const_masked": {"const": "9876543210", "mask": {"kind": "keep_last", "n": 2}},
    "tmpl": {"template": "{t} / {i}: {{braces}} {b}"},
    "mapped": {"from": "t", "map": {"a": "A", "ACTIVE": "OPEN", "b": None}, "default": "OTHER"},
    "mapped_strict": {"from": "t2", "map": {"a": "A", "": "EMPTY", "x y": "XY"}},
    "mapped_null": {"from": "b", "map": {"t": "yes"}, "default": "no"},
    "keep_plain": {"from": "t", "mask": {"kind": "keep_last", "n": 4}},
    "keep_tmpl": {"from": "t2", "mask": {"kind": "keep_last", "n": 3, "mask_char": "*",
                                         "template": "id-{last}/{last}"}},
    "keep_zero": {"from": "t", "mask": {"kind": "keep_last", "n": 0, "mask_char": "#"}},
    "band_n": {"from": "n", "mask": {"kind": "band", "bands": [{"below": -1.5, "label": "neg"}, {"below": 0.75,
                                                                                                  "label": "low"},
                                                               {"below": 10000, "label": "mid"}, {"label": "top"}]}},
    "band_f": {"from": "f", "mask": {"kind": "band", "bands": [{"below": 0.1, "label": "a"}, {"label": "b"}]}},
    "band_strict": {"from": "n", "mask": {"kind": "band", "bands": [{"below": 100, "label": "small"}]}},
    "band_i": {"from": "i", "mask": {"kind": "band", "bands": [{"below": 0, "label": "-"}, {"label": "+"}]}},
    "dropped": {"from": "t", "mask": {"kind": "drop"}},
    "pseudonym": {"from": "u", "mask": {"kind": "hmac", "secret": "pseudonym_key", "length": 20, "prefix": "p_"}},
    "required_t": "t2",
}
FILTERS: list[dict[str, Any]] = [
    {"column": "t", "op": "eq", "value": "a"}, {"column": "t", "op": "ne", "value": "a"},
    {"column": "t2", "op": "in", "values": ["a", "", "x y"]}, {"column": "t2", "op": "not_in", "values": ["a"]},
    {"column": "t", "op": "is_null"}, {"column": "n", "op": "not_null"},
    {"column": "n", "op": "gt", "value": 0.75}, {"column": "i", "op": "lte", "value": 3},
    {"column": "f", "op": "gte", "value": -2}, {"column": "t", "op": "lt", "value": "b"},
    {"column": "b", "op": "eq", "value": "t"}, {"column": "i", "op": "eq", "value": 3},
    {"column": "c", "op": "ne", "value": "ab"},
]


def config_for(dep: Deployment, columns: dict[str, Any] | None = None) -> LoadedConfig:
    """A config with one flow carrying every compiled column rule, and one flow per filter."""
    tables = {"public.rc_src": {"key": ["id"], "columns": ["id", "t", "t2", "n", "f", "i", "u", "ts", "d", "b", "j",
                                                            "c"]},
              "public.rc_tgt": {"key": ["id"]}}  # written only: its columns are derived from the flows
    endpoints = {"source": {"connection": "warehouse", "table": "public.rc_src"},
                 "target": {"connection": "warehouse", "table": "public.rc_tgt"}}
    flows: dict[str, Any] = {"rules": {"id": "R", "kind": "batch", **endpoints, "columns": columns or COLUMNS,
                                       "validate": {"required": ["required_t"]},
                                       "reconcile": {"hmac_in_source": True}}}
    for i, flt in enumerate(FILTERS if columns is None else []):
        flows[f"filter{i}"] = {"id": f"X{i}", "kind": "batch", **endpoints, "filters": [flt], "columns": {"id": "id"}}
    raw = {"version": 1, "connections": {"warehouse": {"dsn_env": "CIVICSYNC_WAREHOUSE_DSN", "tables": tables}},
           "secrets": {"pseudonym_key": {"env": "CIVICSYNC_PSEUDONYM_KEY"}}, "flows": flows,
           "service": {"api": {"enabled": False}}}
    return parse_config(raw, "compile.yaml", {"CIVICSYNC_WAREHOUSE_DSN": dep.warehouse_dsn,
                                              "CIVICSYNC_PSEUDONYM_KEY": PSEUDONYM_KEY})


@pytest.fixture(scope="module")
def scratch(deployment: Deployment) -> Iterator[tuple[psycopg.Connection[Any], LoadedConfig]]:
    with deployment.connect("warehouse") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        conn.execute(SOURCE)
        conn.execute(TARGET)
        yield conn, config_for(deployment)


words = st.sampled_from(["a", "b", "", " ", "x y", "ACTIVE", "1234-5678-9012", "12 3", "-", "--", "ab cd-ef", "é-ü 9"])
texts = st.one_of(st.none(), words, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                            max_size=12))
numbers = st.one_of(st.none(), st.decimals(min_value=-20000, max_value=20000, places=4),
                    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("0.75"),
                                     Decimal("-1.5"), Decimal("10000"), Decimal("0.7500"), Decimal("100")]))
rows = st.lists(st.tuples(
    texts, texts, numbers, st.one_of(st.none(), st.floats(), st.sampled_from([0.1, -2.0, 0.1 + 1e-17])),
    st.one_of(st.none(), st.integers(-(2 ** 31), 2 ** 31 - 1), st.sampled_from([0, 3, -1])),
    st.one_of(st.none(), st.uuids()),
    st.one_of(st.none(), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                                      timezones=st.just(UTC))),
    st.one_of(st.none(), st.dates(min_value=date(1, 1, 1))), st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.dictionaries(words, st.one_of(st.integers(), words), max_size=3)),
    st.one_of(st.none(), st.sampled_from(["ab", "ab    ", "abcdef", " x"]))), min_size=1, max_size=25)


def chain_side(conn: psycopg.Connection[Any], config: LoadedConfig, flow: str) -> dict[int, Any]:
    """id → None (filtered), 'refused', or the target values as the target types print them."""
    model = config.model.flows[flow]
    source = config.model.connections["warehouse"].tables["public.rc_src"]
    transform = build_transform(model, source, config.secrets, "")
    query = sql.SQL("SELECT {} FROM rc_src ORDER BY id").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in transform.source_columns))
    out: dict[int, Any] = {}
    for row in stream_query(conn, query):  # COPY text: exactly what the chain receives from a batch run
        key = int(str(row[0]))
        try:
            derived = transform(row)
        except RowRejectedError:
            out[key] = "refused"
            continue
        out[key] = None if derived is None else dict(zip(transform.target_columns, derived, strict=True))
    rows = [v for v in out.values() if isinstance(v, dict)]
    for column, ctype in column_types(conn, "public.rc_tgt").items():
        if rows and column in rows[0]:  # through the target type, as loading the row does
            typed = conn.execute(sql.SQL("SELECT v::{}::text FROM unnest(%s::text[]) WITH ORDINALITY u(v, n)"
                                         " ORDER BY n").format(sql.SQL(ctype)), ([r[column] for r in rows],))
            for row, (value,) in zip(rows, typed, strict=True):
                row[column] = value
    return out


def sql_side(conn: psycopg.Connection[Any], config: LoadedConfig, flow: str) -> dict[int, Any]:
    plan = build_plan(config, flow)
    derivation = compile_rules(plan, load_catalog(conn, conn, plan).source, config.secrets)
    for name, value in derivation.settings:
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    columns = list(derivation.columns)
    query = sql.SQL("SELECT s.id, {}, {}, {} FROM rc_src s ORDER BY s.id").format(
        derivation.where, derivation.rejected or sql.SQL("false"),
        sql.SQL(", ").join(sql.SQL("({})::text").format(derivation.columns[c]) for c in columns))
    out: dict[int, Any] = {}
    for key, passes, refused, *values in conn.execute(query):
        out[key] = None if not passes else "refused" if refused else dict(zip(columns, values, strict=True))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows)
def test_compiled_rules_equal_the_chain(scratch: tuple[psycopg.Connection[Any], LoadedConfig],
                                        generated: list[tuple[Any, ...]]) -> None:
    conn, config = scratch
    conn.execute("TRUNCATE rc_src")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO rc_src VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [(i, *(psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in row))
                         for i, row in enumerate(generated)])
    for flow in config.model.flows:
        assert sql_side(conn, config, flow) == chain_side(conn, config, flow), flow


def test_rules_without_an_exact_sql_twin_are_not_compiled(scratch: tuple[psycopg.Connection[Any], LoadedConfig],
                                                          deployment: Deployment) -> None:
    conn, _ = scratch
    for rule in ({"from": "t", "mask": {"kind": "redact"}}, {"from": "j", "mask": {"kind": "json", "paths": {"a": {
            "kind": "drop"}}}}, {"from": "t", "mask": {"kind": "band", "bands": [{"label": "x"}]}},
                 {"template": "{t:>5}"}):
        variant = config_for(deployment, {**COLUMNS, "plain_t": rule})
        plan = build_plan(variant, "rules")
        with pytest.raises(NotCompilable):
            compile_rules(plan, load_catalog(conn, conn, plan).source, variant.secrets)
