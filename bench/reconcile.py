"""Benchmark: reconciling 1,000,000 rows per side with 10 planted differences, beside the floor and a
strawman measured in the same run.

    .venv/bin/python bench/reconcile.py [--rows 1000000] [--repeat 3] [--flows F7,F2] [--json]

What it does
    Starts its own PostgreSQL (civicsync.localpg, a temp dir, a free port; fsync off: nothing here
    measures durable writes) and, per flow, a pair of reference databases:

    F7 (document metadata, portal → warehouse, a plain copy of 7 columns)
        ``--rows`` portal documents generated with generate_series; the warehouse gets exactly the rows
        F7 derives from them (the same generate_series, without the columns F7 never sends).
        Planted: 3 target rows deleted (missing), 3 source rows deleted (extra), 4 target rows with one
        column changed each (different).
    F2 (profile pre-fill, warehouse → portal: national id masked in SQL, six newest_wins fields
        compared through the three-way bases)
        ``db seed --only profiles`` with ``--rows`` citizens, then F2 itself runs (the target and its
        ``civicsync.field_base`` bases are what the flow wrote). Planted: 5 portal rows deleted
        (missing) and 5 registry-owned fields changed in the portal (different). F2 keeps target rows
        the source does not derive (``on_missing: keep``), so it has no "extra" class.

    Then VACUUM ANALYZE, and ``--repeat`` times, after one unmeasured warm-up of each:

    floor      ``SELECT count(*), sum(hashtext(t::text)) FROM t`` on the source table and on the
               target table, both at once (one thread each), as reconcile runs its two sides; the
               sum of the two run one after the other is printed too.
    civicsync  ``reconcile_flow(config, flow)``: plan, catalog, boundaries, checksum scans on both
               sides, drill-down, verify (with the re-check round), recording the run. All 10 planted
               differences must be found with their class (asserted).
    strawman   fetch every source row (COPY) and send it through the flow's Python chain, fetch every
               target row (COPY), compare the two by key in Python (a hash of each row's text).

    Prints medians, civicsync / floor (target: <= 3x) and strawman / civicsync. Removes the server at
    the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from benchrun import log, run_on_private_server
from civicsync.config import LoadedConfig
from civicsync.config.loader import load_config, reference_config_path
from civicsync.db.connect import connect
from civicsync.extract.source import stream_query
from civicsync.jobs.batch import run_batch
from civicsync.localpg import LocalPostgres
from civicsync.provision.databases import init_databases
from civicsync.reconcile import build_plan, reconcile_flow
from civicsync.reference.seed import seed
from civicsync.transform.chain import build_transform

TARGET_RATIO = 3.0
Planted = dict[str, set[tuple[str, ...]]]


def make_config(server: LocalPostgres, tag: str) -> LoadedConfig:
    environ = {"CIVICSYNC_WAREHOUSE_DSN": server.dsn(f"bench_wh_{tag}"),
               "CIVICSYNC_CITIZEN_DSN": server.dsn(f"bench_cz_{tag}"),
               "CIVICSYNC_PSEUDONYM_KEY": secrets.token_hex(16)}
    config = load_config(reference_config_path(), environ=environ)
    init_databases(config)
    return config


def run(config: LoadedConfig, connection: str, *statements: str) -> None:
    with connect(config.dsn(connection), purpose="bench", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


# --------------------------------------------------------------------------- data

DOCS = """SELECT g AS document_id, 1 + g % 10000 AS application_id,
    (ARRAY['PHOTO', 'INCOME_CERT', 'BANK_PASSBOOK', 'RATION_CARD'])[1 + g % 4] AS doc_type,
    (ARRAY['application/pdf', 'image/jpeg', 'image/png'])[1 + g % 3] AS mime_type,
    40000 + (g * 7919) % 4000000 AS size_bytes, md5(g::text) || md5((g + 1)::text) AS sha256,
    timestamptz '2026-01-01' + g * interval '7 seconds' AS uploaded_at FROM generate_series(1::bigint, {n}) g"""


def prepare_f7(config: LoadedConfig, rows: int) -> Planted:
    """Source and target as F7 leaves them, then 10 planted differences."""
    cid = "00000000-0000-4000-8000-000000000001"
    docs = DOCS.format(n=rows)
    run(config, "citizen",
        f"INSERT INTO citizens (citizen_id, full_name) VALUES ('{cid}', 'Bench')",
        "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'B1', 'Bench', 'c', 'OPEN')",
        f"INSERT INTO applications (application_id, citizen_id, scheme_id, status) SELECT g, '{cid}', 1, 'SUBMITTED'"
        " FROM generate_series(1, 10000) g",
        "INSERT INTO application_documents (document_id, application_id, doc_type, file_name, mime_type, size_bytes,"
        " storage_uri, sha256, uploaded_at) SELECT document_id, application_id, doc_type, 'f' || document_id || '.pdf',"
        f" mime_type, size_bytes, 's3://portal/' || document_id, sha256, uploaded_at FROM ({docs}) d")
    run(config, "warehouse",
        "INSERT INTO application_documents (document_id, application_id, doc_type, mime_type, size_bytes, sha256,"
        f" uploaded_at) SELECT * FROM ({docs}) d")
    spread = [rows * k // 11 for k in range(1, 11)]
    missing, extra, different = spread[:3], spread[3:6], spread[6:]
    run(config, "warehouse", f"DELETE FROM application_documents WHERE document_id IN ({_ids(missing)})",
        *(f"UPDATE application_documents SET {change} WHERE document_id = {i}" for i, change in zip(different, (
            "size_bytes = size_bytes + 1", "sha256 = 'x'", "mime_type = 'text/plain'",
            "uploaded_at = uploaded_at + interval '1 ms'"), strict=True)))
    run(config, "citizen", f"DELETE FROM application_documents WHERE document_id IN ({_ids(extra)})")
    return {"missing": _keys(missing), "extra": _keys(extra), "different": _keys(different)}


def prepare_f2(config: LoadedConfig, rows: int) -> Planted:
    """The seeded registry, F2 run over it, then 10 planted differences."""
    seed(config.dsn("warehouse"), config.dsn("citizen"), rows, only="profiles")
    log("running F2 to fill the portal ...")
    run_batch(config, "F2").raise_for_error()
    with connect(config.dsn("citizen"), purpose="bench", autocommit=True) as conn:
        picked = [str(r[0]) for r in conn.execute(
            "SELECT citizen_id FROM (SELECT citizen_id, row_number() OVER (ORDER BY citizen_id) AS n FROM citizens) x"
            " WHERE n %% %s = 0 ORDER BY 1 LIMIT 10", (max(rows // 11, 1),))]
    missing, different = picked[:5], picked[5:]
    run(config, "citizen", f"DELETE FROM citizens WHERE citizen_id IN ({_ids(missing, quote=True)})",
        *(f"UPDATE citizens SET {change} WHERE citizen_id = '{c}'" for c, change in zip(different, (
            "full_name = full_name || ' x'", "national_id_masked = '123412341234'", "gender = 'X'",
            "date_of_birth = date_of_birth + 1", "profile_source = 'portal'"), strict=True)))
    return {"missing": _keys(missing), "extra": set(), "different": _keys(different)}


def _ids(values: list[Any], quote: bool = False) -> str:
    return ", ".join(f"'{v}'" if quote else str(v) for v in values)


def _keys(values: list[Any]) -> set[tuple[str, ...]]:
    return {(str(v),) for v in values}


def vacuum(config: LoadedConfig) -> None:
    for connection in ("warehouse", "citizen"):
        run(config, connection, "VACUUM ANALYZE", "CHECKPOINT")


# --------------------------------------------------------------------------- the three contenders

def floor(config: LoadedConfig, flow: str) -> tuple[float, float]:
    """(both scans at once, one after the other) in seconds."""
    model = config.model.flows[config.model.flow_name(flow)]
    sides = [(model.source.connection, model.source.table), (model.target.connection, model.target.table)]

    def scan(side: tuple[str, str]) -> float:
        with connect(config.dsn(side[0]), purpose="bench-floor", autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute(sql.SQL("SELECT count(*), sum(hashtext(t::text)) FROM {} t").format(
                sql.Identifier(*side[1].split(".")))).fetchone()
            return time.perf_counter() - started

    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        list(pool.map(scan, sides))
        together = time.perf_counter() - started
    return together, sum(scan(s) for s in sides)


def civicsync(config: LoadedConfig, flow: str, planted: Planted) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def progress(phase: str, _done: int, _total: int | None) -> None:
        phases.setdefault(phase, time.perf_counter() - started)

    result = reconcile_flow(config, flow, progress=progress)
    seconds = time.perf_counter() - started
    assert result.error is None, result.error
    got = {kind: {d.key for d in result.differences if d.kind == kind} for kind in planted}
    assert got == planted and result.found == 10, (got, planted, result.notes)
    return seconds, {"method": result.method, "ranges": result.ranges, "candidates": result.candidates,
                     "source_rows": result.source_rows, "target_rows": result.target_rows,
                     "phases_at": {k: round(v, 3) for k, v in phases.items()}}


def strawman(config: LoadedConfig, flow: str, planted: Planted) -> float:
    """Everything out of both databases, compared by key in Python."""
    started = time.perf_counter()
    plan = build_plan(config, flow)
    transform = build_transform(plan.flow, plan.source, config.secrets, run_time="")
    columns = list(plan.staged)
    idx = [transform.target_columns.index(c) for c in columns]
    nkey = len(plan.key)
    derived: dict[tuple[Any, ...], int] = {}
    with connect(config.dsn(plan.flow.source.connection), purpose="bench-strawman") as src:
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, transform.source_columns)),
                                                   sql.Identifier(*plan.flow.source.table.split(".")))
        for row in stream_query(src, query):
            out = transform(row)
            if out is not None:
                values = tuple(out[i] for i in idx)
                derived[values[:nkey]] = hash(values)
    held: dict[tuple[Any, ...], int] = {}
    with connect(config.dsn(plan.flow.target.connection), purpose="bench-strawman") as tgt:
        for row in stream_query(tgt, sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(*plan.flow.target.table.split(".")))):
            held[row[:nkey]] = hash(tuple(row))
    found = {"missing": {k for k in derived if k not in held},
             "extra": {k for k in held if k not in derived} if plan.extras != "ignored" else set(),
             "different": {k for k, h in derived.items() if k in held and held[k] != h}}
    seconds = time.perf_counter() - started
    assert found == planted, {k: len(v) for k, v in found.items()}
    return seconds


# --------------------------------------------------------------------------- the run

def measure_flow(server: LocalPostgres, flow: str, rows: int, repeat: int) -> dict[str, Any]:
    config = make_config(server, f"{flow.lower()}_{rows}")
    log(f"{flow}: preparing {rows:,} rows per side ...")
    started = time.perf_counter()
    planted = (prepare_f7 if flow == "F7" else prepare_f2)(config, rows)
    vacuum(config)
    log(f"{flow}: prepared in {time.perf_counter() - started:.0f}s; warming up")
    floor(config, flow)
    civicsync(config, flow, planted)
    samples: dict[str, list[float]] = {"floor": [], "floor_sequential": [], "civicsync": [], "strawman": []}
    detail: dict[str, Any] = {}
    for i in range(repeat):
        together, sequential = floor(config, flow)
        samples["floor"].append(together)
        samples["floor_sequential"].append(sequential)
        seconds, detail = civicsync(config, flow, planted)
        samples["civicsync"].append(seconds)
        samples["strawman"].append(strawman(config, flow, planted))
        log(f"{flow} repeat {i + 1}: floor {together:.2f}s (sequential {sequential:.2f}s), civicsync {seconds:.2f}s, "
            f"strawman {samples['strawman'][-1]:.2f}s")
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"flow": flow, "rows": rows, "planted": {k: len(v) for k, v in planted.items()},
            "median_seconds": {k: round(v, 3) for k, v in med.items()},
            "ratio_to_floor": round(med["civicsync"] / med["floor"], 2),
            "ratio_to_sequential_floor": round(med["civicsync"] / med["floor_sequential"], 2),
            "strawman_over_civicsync": round(med["strawman"] / med["civicsync"], 1),
            "pass": med["civicsync"] <= TARGET_RATIO * med["floor"], "last_run": detail,
            "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()}}


def print_report(report: dict[str, Any]) -> None:
    print(f"\nPostgreSQL {report['server_version']}, {report['cores']} cores; medians of {report['repeat']}\n")
    print(f"{'flow':5} {'rows/side':>10} {'floor':>8} {'(seq.)':>8} {'civicsync':>10} {'x floor':>8} "
          f"{'strawman':>9} {'strawman/civ':>13}  verdict (target <= {TARGET_RATIO:g}x floor)")
    for r in report["flows"]:
        m = r["median_seconds"]
        print(f"{r['flow']:5} {r['rows']:>10,} {m['floor']:>7.2f}s {m['floor_sequential']:>7.2f}s "
              f"{m['civicsync']:>9.2f}s {r['ratio_to_floor']:>7.2f}x {m['strawman']:>8.2f}s "
              f"{r['strawman_over_civicsync']:>12.1f}x  {'PASS' if r['pass'] else 'MISS'}")
    for r in report["flows"]:
        print(f"  {r['flow']}: planted {r['planted']}, all found; last run {json.dumps(r['last_run'])}")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per side (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="measured repeats (default 3)")
    parser.add_argument("--flows", default="F7,F2", help="flows to measure, of F7 and F2 (default both)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    flows = [f.strip().upper() for f in args.flows.split(",") if f.strip()]
    if args.repeat < 1 or args.rows < 1000 or not set(flows) <= {"F7", "F2"}:
        parser.error("need --repeat >= 1, --rows >= 1000 and --flows of F7, F2")
    signal.signal(signal.SIGTERM, _terminate)

    def measure(server: LocalPostgres) -> dict[str, Any]:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        return {"server_version": version, "cores": os.cpu_count(), "repeat": args.repeat,
                "flows": [measure_flow(server, f, args.rows, args.repeat) for f in flows]}

    return run_on_private_server(measure, print_report, as_json=args.json, durable=False,
                                 prefix="civicsync-bench-reconcile-")


if __name__ == "__main__":
    sys.exit(main())
