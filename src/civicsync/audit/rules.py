"""Protected sets, derived from the config's masking declarations and read from the sources.

Each flow contributes, for its target database:

- every masked source column (``keep_last``, ``hmac``, ``drop``, ``redact``, ``json``): its values
  (for ``redact``: the numbers and addresses inside the text; for ``json``: every member not declared
  ``keep`` or as a vocabulary); ``band`` and ``vocabulary`` columns publish their declared labels
  by design and are not protected sets;
- the values a redaction declares as the person's known values (``known_values`` columns);
- every text column of its source table that the flow never reads (never-sent columns: an officer
  id, a storage URI).

Values that are keys of a table in the target database (a citizen id where the citizen's record
lives) are not personal data there and are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from civicsync.audit.needles import Needles
from civicsync.config import LoadedConfig
from civicsync.config.masking import (
    BandMask,
    JsonMask,
    KnownValues,
    MaskSpec,
    RedactMask,
    VocabularyMask,
    known_values_of,
)
from civicsync.config.models import Flow
from civicsync.db.connect import connect
from civicsync.transform.chain import source_columns_of
from civicsync.transform.jsonmask import canonical_key

TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


@dataclass
class ProtectedSet:
    """Values that must not appear raw in ``target``; ``name`` says where they come from (no values)."""

    name: str
    target: str
    needles: Needles = field(default_factory=Needles)


def _stream(conn: psycopg.Connection[tuple[object, ...]], table: str, column: str) -> Iterator[str]:
    query = sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL").format(
        sql.Identifier(column), sql.Identifier(*table.split(".")), sql.Identifier(column))
    with conn.cursor() as cur:
        for (value,) in cur.stream(query):
            yield str(value)


def text_columns(conn: psycopg.Connection[tuple[object, ...]]) -> dict[tuple[str, str], str]:
    """(schema.table, column) → data type, for every text/json column of a base table."""
    rows = conn.execute(
        "SELECT c.table_schema || '.' || c.table_name, c.column_name, c.data_type"
        " FROM information_schema.columns c JOIN information_schema.tables t"
        " ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'"
        " WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') AND c.data_type = ANY(%s)",
        (list(TEXT_TYPES),)).fetchall()
    return {(str(t), str(c)): str(d) for t, c, d in rows}


def _json_leaves(node: Any, path: tuple[str, ...], skip: set[tuple[str, ...]]) -> Iterator[str]:
    if path in skip:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_leaves(v, (*path, canonical_key(k)), skip)
    elif isinstance(node, list):
        for v in node:
            yield from _json_leaves(v, path, skip)
    elif node is not None and not isinstance(node, bool):
        yield str(node)


def _passing_paths(mask: JsonMask) -> set[tuple[str, ...]]:
    """The JSON paths whose values pass by design (``keep``, vocabularies)."""
    out = set()
    for path, rule in mask.paths.items():
        if rule == "keep" or isinstance(rule, VocabularyMask | BandMask):
            out.add(() if path == "$" else tuple(canonical_key(s) for s in path.split(".")))
    return out


def _add_masked(needles: Needles, mask: MaskSpec, values: Iterator[str]) -> None:
    if isinstance(mask, RedactMask):
        needles.add_values(values, whole=False)
    elif isinstance(mask, JsonMask):
        skip = _passing_paths(mask)
        for doc in values:
            try:
                needles.add_values(_json_leaves(json.loads(doc), (), skip))
            except ValueError:
                needles.add_value(doc)
    else:
        needles.add_values(values)


class _Deriver:
    def __init__(self, config: LoadedConfig) -> None:
        self.config = config
        self.model = config.model
        self.conns: dict[str, psycopg.Connection[tuple[object, ...]]] = {}
        self.types: dict[str, dict[tuple[str, str], str]] = {}

    def conn(self, name: str) -> psycopg.Connection[tuple[object, ...]]:
        if name not in self.conns:
            self.conns[name] = connect(self.config.dsn(name), purpose="audit", autocommit=True, label=name)
        return self.conns[name]

    def is_text(self, connection: str, table: str, column: str) -> bool:
        if connection not in self.types:
            self.types[connection] = text_columns(self.conn(connection))
        return (table, column) in self.types[connection]

    def keys_in(self, connection: str) -> set[str]:
        return {k for t in self.model.connections[connection].tables.values() for k in t.key}

    def flow_sets(self, name: str, flow: Flow) -> list[ProtectedSet]:
        src_conn, target = flow.source.connection, flow.target.connection
        src = self.conn(src_conn)
        keys = self.keys_in(target)
        sets = []
        for column, spec in flow.columns.items():
            mask = spec.mask
            if mask is None or spec.from_ is None or isinstance(mask, BandMask | VocabularyMask):
                continue
            if spec.from_ in keys and not isinstance(mask, RedactMask | JsonMask):
                continue
            ps = ProtectedSet(f"{flow.id} {flow.source.table}.{spec.from_} (masked into {column})", target)
            _add_masked(ps.needles, mask, _stream(src, flow.source.table, spec.from_))
            sets.append(ps)
            known = known_values_of(mask)
            if known is not None:
                sets.append(self.known_set(flow, known))
        if flow.aggregate is None:
            sets += self.never_sent(flow)
        return [s for s in sets if len(s.needles)]

    def known_set(self, flow: Flow, known: KnownValues) -> ProtectedSet:
        ps = ProtectedSet(f"{flow.id} known values {known.table}.{','.join(known.columns)}", flow.target.connection)
        for col in known.columns:
            ps.needles.add_values(_stream(self.conn(flow.source.connection), known.table, col))
        return ps

    def never_sent(self, flow: Flow) -> list[ProtectedSet]:
        decl = self.model.connections[flow.source.connection].tables[flow.source.table]
        read = set(source_columns_of(flow, decl))
        keys = self.keys_in(flow.target.connection)
        sets = []
        for col in decl.columns:
            if col in read or col in keys or not self.is_text(flow.source.connection, flow.source.table, col):
                continue
            ps = ProtectedSet(f"{flow.id} {flow.source.table}.{col} (never sent)", flow.target.connection)
            ps.needles.add_values(_stream(self.conn(flow.source.connection), flow.source.table, col))
            sets.append(ps)
        return sets

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


def protected_sets(config: LoadedConfig) -> list[ProtectedSet]:
    """Every protected set the config declares, with its values read from the sources."""
    deriver = _Deriver(config)
    try:
        return [s for name, flow in config.model.flows.items() for s in deriver.flow_sets(name, flow)]
    finally:
        deriver.close()


def legitimate_columns(config: LoadedConfig, connection: str) -> set[tuple[str, str]]:
    """(table, column) of ``connection`` that hold personal data by design: the database's own records
    (every column of a table that flows read from it) and what flows copy into it unmasked; a column
    that a flow writes masked is never one of them."""
    model = config.model
    own: set[tuple[str, str]] = set()
    masked: set[tuple[str, str]] = set()
    for flow in model.flows.values():
        if flow.source.connection == connection:
            decl = model.connections[connection].tables[flow.source.table]
            own.update((flow.source.table, c) for c in decl.columns)
        if flow.target.connection == connection:
            for c, spec in flow.columns.items():
                plain = spec.from_ is not None and spec.mask is None and spec.map is None
                (own if plain else masked).add((flow.target.table, c))
    return own - masked
