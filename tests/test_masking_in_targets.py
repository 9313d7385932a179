"""For every flow: no raw value of a masked source column appears in anything civicsync wrote.

Runs every flow of the reference config over seeded data, then reads back every table the flows
write (and civicsync's control schema) in each target database and searches it for the raw values
(for free-text redaction: the phone numbers, e-mail addresses and ids inside the source text).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import psycopg
from psycopg import sql

from civicsync.config import LoadedConfig
from civicsync.config.masking import BandMask, JsonMask, RedactMask, VocabularyMask
from civicsync.jobs.batch import run_batch
from civicsync.reference.seed import seed
from fix_db import Deployment
from helpers import config_variant

# Deliberately broader than the redaction patterns under test, so that a pattern's blind spot shows.
PII_FRAGMENTS = re.compile(r"[\w.+-]+@[\w.-]+|\+?\d[\d -]{7,}\d")


def raw_values(conn: psycopg.Connection[tuple[object, ...]], table: str, column: str, redact: bool) -> set[str]:
    query = sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL").format(
        sql.Identifier(column), sql.Identifier(*table.split(".")), sql.Identifier(column))
    values = {str(r[0]) for r in conn.execute(query)}
    if not redact:
        return {v for v in values if len(v) >= 6}
    return {frag.strip() for v in values for frag in PII_FRAGMENTS.findall(v)}


def written_text(conn: psycopg.Connection[tuple[object, ...]], tables: set[str]) -> str:
    control = {f"civicsync.{r[0]}" for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'civicsync'")}
    parts = []
    for table in sorted(tables | control):
        query = sql.SQL("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {} t").format(
            sql.Identifier(*table.split(".")))
        row = conn.execute(query).fetchone()
        parts.append(str(row[0]) if row else "")
    return "\n".join(parts)


def leaks(dep: Deployment, config: LoadedConfig, masks_from: LoadedConfig) -> tuple[list[str], list[str]]:
    """Run every flow of ``config``; search what it wrote for the raw values of the columns that
    ``masks_from`` masks. Returns (columns checked, leaked values)."""
    batch_flows = [n for n, f in config.model.flows.items() if f.kind != "cdc"]
    for name in batch_flows:
        run_batch(config, name).raise_for_error()
    protected: dict[str, set[str]] = defaultdict(set)   # target connection → raw values
    written: dict[str, set[str]] = defaultdict(set)     # target connection → tables civicsync writes
    # Banded amounts are plain numbers that other flows legitimately publish (a scheme's benefit
    # amount can equal a citizen's total): they are searched in their own flow's table and the
    # control schema only. Every other protected value is searched in the whole target database.
    banded: dict[tuple[str, str], set[str]] = defaultdict(set)
    checked = []
    for name, flow in masks_from.model.flows.items():
        if name not in batch_flows:
            continue
        written[flow.target.connection].add(flow.target.table)
        for column, spec in flow.columns.items():
            if spec.mask is None or spec.from_ is None or isinstance(spec.mask, VocabularyMask):
                continue  # a vocabulary passes its declared values by design
            assert not isinstance(spec.mask, JsonMask), "extend this test for json paths"
            with dep.connect(flow.source.connection) as src:
                raws = raw_values(src, flow.source.table, spec.from_, isinstance(spec.mask, RedactMask))
            assert raws, f"{name}.{column}: the seed gave nothing to check"
            if isinstance(spec.mask, BandMask):
                banded[(flow.target.connection, flow.target.table)] |= raws
            else:
                protected[flow.target.connection] |= raws
            checked.append(f"{flow.id}:{column}")
    searches = [(c, written[c], raws) for c, raws in protected.items()]
    searches += [(c, {table}, raws) for (c, table), raws in banded.items()]
    leaked: list[str] = []
    for connection, tables, raws in searches:
        with dep.connect(connection) as conn:
            text = written_text(conn, tables)
        digits_only = re.sub(r"[ -]", "", text)
        leaked += sorted(v for v in raws if v in text or re.sub(r"[ -]", "", v) in digits_only)
    return checked, leaked


def test_no_raw_protected_value_reaches_any_target(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 400)
    checked, leaked = leaks(dep, dep.config(), dep.config())
    assert {"F2:national_id_masked", "F8:benefits_band", "F12:citizen_ref", "F12:comment"} <= set(checked)
    assert leaked == [], f"raw values found: {leaked[:5]}"


def test_the_search_finds_a_leak_when_a_mask_is_missing(fresh_deployment: Deployment) -> None:
    """The check above can fail: with F12's redaction removed, raw PII is found."""
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 200)

    def unmasked(raw: dict[str, Any]) -> None:
        raw["flows"]["feedback"]["columns"]["comment"] = "comment"

    _, leaked = leaks(dep, config_variant(dep.environ, unmasked), dep.config())
    assert any("@" in v for v in leaked) and any(v[-1].isdigit() for v in leaked)
