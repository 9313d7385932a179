"""Benchmark: flow F2 (profile_prefill) against a raw COPY-to-COPY baseline, measured in the same run.

    .venv/bin/python bench/batch_profiles.py [--rows 1000000] [--small 100000] [--repeat 3] [--json]

What it does
    Starts its own PostgreSQL (civicsync.localpg.LocalPostgres, durable=True: fsync, synchronous_commit
    and full_page_writes on, the settings are printed) in a temp dir, and for each size (``--small`` and
    ``--rows``) creates a pair of reference databases (load_config + init_databases) and seeds
    ``only="profiles"``. Then ``--repeat`` times, alternating which goes first, after a CHECKPOINT each:

    baseline   ``COPY (SELECT <the source columns F2 reads>, 'registry') TO STDOUT`` on the warehouse
               piped block by block into ``COPY bench_baseline (<the columns F2 writes>) FROM STDIN`` on the
               citizen database, then commit. ``bench_baseline`` is ``LIKE public.citizens INCLUDING ALL``
               (same types, defaults and primary key), truncated before each repeat. The constant
               ``profile_source`` is selected as a literal so both sides write the same 13 columns.
    civicsync  the target is reset to a first load (TRUNCATE public.citizens CASCADE and the control tables
               watermarks, field_base, conflicts, dead_letters), then F2 runs in a fresh child process
               (bench/f2_child.py). Rows/s = N / the wall time measured inside the child around
               ``run_batch`` (connects, snapshot, transform, stage, validate, conflict bookkeeping, merge,
               commit, run history; not interpreter start-up). Peak RSS is the child's ``ru_maxrss`` from
               ``os.wait4`` on that child alone (cross-checked with the child's own RUSAGE_SELF).

    Prints medians per size, the civicsync/baseline ratio, peak RSS, the RSS ratio (rows/small) and
    PASS/MISS against the targets: ratio >= 50 %, peak RSS < 300 MB, RSS(rows) <= 1.5 x RSS(small).
    The server and its data are removed at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchrun import log, run_on_private_server
from civicsync.config import LoadedConfig
from civicsync.config.loader import load_config, reference_config_path
from civicsync.db.connect import connect
from civicsync.localpg import LocalPostgres
from civicsync.provision.databases import init_databases
from civicsync.reference.seed import seed
from civicsync.transform.chain import build_transform

HERE = Path(__file__).resolve().parent
CHILD = HERE / "f2_child.py"
FLOW = "F2"
TARGET_RATIO = 0.5
TARGET_RSS_MB = 300.0
TARGET_RSS_GROWTH = 1.5
SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
            "work_mem", "maintenance_work_mem", "temp_buffers", "max_wal_size", "checkpoint_timeout")
RESET_SQL = ("TRUNCATE public.citizens CASCADE",
             "TRUNCATE civicsync.watermarks, civicsync.field_base, civicsync.conflicts, civicsync.dead_letters")

_current_child: subprocess.Popen[bytes] | None = None


@dataclass
class SizeResult:
    rows: int
    seed_seconds: float = 0.0
    baseline_rps: list[float] = field(default_factory=list)
    civicsync_rps: list[float] = field(default_factory=list)
    civicsync_process_seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    rss_self_mb: list[float] = field(default_factory=list)
    rss_before_run_mb: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        base = statistics.median(self.baseline_rps)
        civ = statistics.median(self.civicsync_rps)
        return {
            "rows": self.rows,
            "seed_seconds": round(self.seed_seconds, 1),
            "baseline_rows_per_s": round(base),
            "civicsync_rows_per_s": round(civ),
            "ratio": round(civ / base, 4),
            "civicsync_peak_rss_mb": round(statistics.median(self.rss_mb), 1),
            "samples": {
                "baseline_rows_per_s": [round(x) for x in self.baseline_rps],
                "civicsync_rows_per_s": [round(x) for x in self.civicsync_rps],
                "civicsync_process_seconds": [round(x, 2) for x in self.civicsync_process_seconds],
                "civicsync_peak_rss_mb": [round(x, 1) for x in self.rss_mb],
                "civicsync_peak_rss_self_mb": [round(x, 1) for x in self.rss_self_mb],
                "civicsync_rss_before_run_mb": [round(x, 1) for x in self.rss_before_run_mb],
            },
        }


# --------------------------------------------------------------------------- setup


def make_config(server: LocalPostgres, rows: int, key: str) -> tuple[LoadedConfig, dict[str, str]]:
    environ = {
        "CIVICSYNC_WAREHOUSE_DSN": server.dsn(f"bench_warehouse_{rows}"),
        "CIVICSYNC_CITIZEN_DSN": server.dsn(f"bench_citizen_{rows}"),
        "CIVICSYNC_PSEUDONYM_KEY": key,
    }
    return load_config(reference_config_path(), environ=environ), environ


def prepare(config: LoadedConfig, rows: int) -> float:
    init_databases(config)
    log(f"seeding {rows:,} profiles ...")
    counts = seed(config.dsn("warehouse"), config.dsn("citizen"), rows, only="profiles")
    # Settle the fresh table (hint bits, visibility map, statistics) so no measured run pays for it.
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) public.citizen_profiles")
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_baseline")
        conn.execute("CREATE TABLE public.bench_baseline (LIKE public.citizens INCLUDING ALL)")
    log(f"seeded {rows:,} profiles in {counts.seconds:.1f}s")
    return counts.seconds


def server_settings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
                for name in SETTINGS}


def checkpoint(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------- the two contenders


def copy_statements(config: LoadedConfig) -> tuple[sql.Composed, sql.Composed]:
    """The baseline's COPY-out and COPY-in, with exactly the columns F2 reads and writes."""
    flow = config.model.flows[config.model.flow_name(FLOW)]
    source = config.model.connections[flow.source.connection].tables[flow.source.table]
    transform = build_transform(flow, source, config.secrets, "1970-01-01T00:00:00+00:00")
    select: list[sql.Composable] = []
    for target_col in transform.target_columns:
        spec = flow.columns[target_col]
        if spec.from_ is not None:
            select.append(sql.Identifier(spec.from_))
        elif spec.const is not None:
            select.append(sql.SQL("{}::text").format(sql.Literal(str(spec.const))))
        else:
            raise SystemExit(f"baseline: column {target_col} of {FLOW} is neither from nor const")
    missing = set(transform.source_columns) - {flow.columns[c].from_ for c in transform.target_columns}
    if missing:
        raise SystemExit(f"baseline: F2 reads {sorted(missing)} which no target column takes")
    schema, table = flow.source.table.split(".", 1)
    out = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        sql.SQL(", ").join(select), sql.Identifier(schema, table))
    into = sql.SQL("COPY public.bench_baseline ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in transform.target_columns))
    return out, into


def run_baseline(config: LoadedConfig, rows: int, out: sql.Composed, into: sql.Composed) -> float:
    """One timed raw pipe; returns rows/s."""
    with connect(config.dsn("citizen"), purpose="bench-baseline", autocommit=True) as conn:
        conn.execute("TRUNCATE public.bench_baseline")
        conn.execute("CHECKPOINT")
    with connect(config.dsn("warehouse"), purpose="bench-baseline", autocommit=True) as src, \
            connect(config.dsn("citizen"), purpose="bench-baseline") as dst:
        started = time.perf_counter()
        cur = dst.cursor()
        with src.cursor().copy(out) as reader, cur.copy(into) as writer:
            for block in reader:
                writer.write(block)
        dst.commit()
        seconds = time.perf_counter() - started
        copied = cur.rowcount
    if copied != rows:
        raise SystemExit(f"baseline copied {copied} rows, expected {rows}")
    return rows / seconds


@dataclass
class ChildRun:
    rows_per_s: float
    peak_rss_mb: float  # ru_maxrss of this child from os.wait4
    peak_rss_self_mb: float  # the child's own RUSAGE_SELF at its end (should equal the above)
    rss_before_run_mb: float  # the child's high-water mark after imports and load_config, before run_batch
    process_seconds: float  # the child process's whole life, start-up included


def run_civicsync(config: LoadedConfig, environ: dict[str, str], rows: int) -> ChildRun:
    """One F2 first load in a fresh child process."""
    global _current_child
    with connect(config.dsn("citizen"), purpose="bench-reset", autocommit=True) as conn:
        for statement in RESET_SQL:
            conn.execute(statement)
        conn.execute("CHECKPOINT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICSYNC_")}
    env.update(environ)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(CHILD)], stdout=subprocess.PIPE, env=env)
    _current_child = proc
    assert proc.stdout is not None
    output = proc.stdout.read()
    # wait4 on this pid: the rusage (ru_maxrss) of this child alone, not a max over all children.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    _current_child = None
    process_seconds = time.perf_counter() - started
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"F2 child failed (exit {proc.returncode})")
    report = json.loads(output.decode().strip().splitlines()[-1])
    written = report["counts"]["rows_written"]
    if written != rows:
        raise SystemExit(f"F2 wrote {written} rows, expected {rows}")
    return ChildRun(rows / report["seconds"], usage.ru_maxrss / 1024, report["maxrss_self_kb"] / 1024,
                    report["rss_before_run_kb"] / 1024, process_seconds)


# --------------------------------------------------------------------------- report


def verdicts(small: dict[str, Any], big: dict[str, Any]) -> dict[str, Any]:
    growth = big["civicsync_peak_rss_mb"] / small["civicsync_peak_rss_mb"]
    return {
        "rss_ratio_big_over_small": round(growth, 3),
        "targets": {
            f"ratio >= {TARGET_RATIO:.0%} at {big['rows']:,}": "PASS" if big["ratio"] >= TARGET_RATIO else "MISS",
            f"peak RSS < {TARGET_RSS_MB:.0f} MB at {big['rows']:,}":
                "PASS" if big["civicsync_peak_rss_mb"] < TARGET_RSS_MB else "MISS",
            f"RSS({big['rows']:,}) <= {TARGET_RSS_GROWTH}x RSS({small['rows']:,})":
                "PASS" if growth <= TARGET_RSS_GROWTH else "MISS",
        },
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["server"]
    print(f"PostgreSQL {s['server_version']} (private cluster, durable): fsync={s['fsync']} "
          f"synchronous_commit={s['synchronous_commit']} full_page_writes={s['full_page_writes']} "
          f"wal_level={s['wal_level']} shared_buffers={s['shared_buffers']} work_mem={s['work_mem']} "
          f"temp_buffers={s['temp_buffers']} max_wal_size={s['max_wal_size']}")
    print(f"{report['cpus']} CPUs; medians of {report['repeat']} repeats; CHECKPOINT before every measured run; "
          "civicsync rows/s = N / wall time inside the child around run_batch()")
    print()
    header = (f"{'rows':>10}  {'baseline rows/s':>15}  {'civicsync rows/s':>16}  {'ratio':>6}  "
              f"{'civicsync peak RSS':>18}")
    print(header)
    print("-" * len(header))
    for size in report["sizes"]:
        print(f"{size['rows']:>10,}  {size['baseline_rows_per_s']:>15,}  {size['civicsync_rows_per_s']:>16,}  "
              f"{size['ratio']:>6.1%}  {size['civicsync_peak_rss_mb']:>15.1f} MB")
    print()
    for size in report["sizes"]:
        smp = size["samples"]
        print(f"  {size['rows']:,} samples: baseline {smp['baseline_rows_per_s']}, civicsync "
              f"{smp['civicsync_rows_per_s']}, peak RSS MB {smp['civicsync_peak_rss_mb']} "
              f"(of which before run_batch: {smp['civicsync_rss_before_run_mb']})")
    print("  peak RSS: the civicsync client process only (os.wait4 ru_maxrss), not the PostgreSQL backends")
    print()
    v = report["verdict"]
    print(f"RSS ratio {report['sizes'][-1]['rows']:,} / {report['sizes'][0]['rows']:,}: "
          f"{v['rss_ratio_big_over_small']:.2f}")
    for target, outcome in v["targets"].items():
        print(f"  {outcome:4}  {target}")


# --------------------------------------------------------------------------- main


def measure(args: argparse.Namespace, server: LocalPostgres) -> dict[str, Any]:
    key = secrets.token_hex(16)
    results = []
    settings: dict[str, str] = {}
    for rows in (args.small, args.rows):
        config, environ = make_config(server, rows, key)
        res = SizeResult(rows, seed_seconds=prepare(config, rows))
        settings = settings or server_settings(config.dsn("citizen"))
        out, into = copy_statements(config)
        for i in range(args.repeat):
            order = ("baseline", "civicsync") if i % 2 == 0 else ("civicsync", "baseline")
            for which in order:
                if which == "baseline":
                    rps = run_baseline(config, rows, out, into)
                    res.baseline_rps.append(rps)
                    log(f"{rows:,} repeat {i + 1}: baseline {rps:,.0f} rows/s")
                else:
                    run = run_civicsync(config, environ, rows)
                    res.civicsync_rps.append(run.rows_per_s)
                    res.rss_mb.append(run.peak_rss_mb)
                    res.rss_self_mb.append(run.peak_rss_self_mb)
                    res.rss_before_run_mb.append(run.rss_before_run_mb)
                    res.civicsync_process_seconds.append(run.process_seconds)
                    log(f"{rows:,} repeat {i + 1}: civicsync {run.rows_per_s:,.0f} rows/s, peak RSS "
                        f"{run.peak_rss_mb:.1f} MB ({run.rss_before_run_mb:.1f} MB before run_batch; "
                        f"child process {run.process_seconds:.1f}s)")
        results.append(res.summary())
        # Free the disk before the next size.
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            for db in (f"bench_warehouse_{rows}", f"bench_citizen_{rows}"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
    return {
        "server": settings, "cpus": os.cpu_count(), "repeat": args.repeat, "sizes": results,
        "verdict": verdicts(results[0], results[-1]),
    }


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="profiles for the main size (default 1,000,000)")
    parser.add_argument("--small", type=int, default=100_000, help="profiles for the RSS comparison (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="measured repeats per size (default 3)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.small < 1 or args.rows < args.small:
        parser.error("need --repeat >= 1 and 1 <= --small <= --rows")
    signal.signal(signal.SIGTERM, _terminate)
    return run_on_private_server(lambda server: measure(args, server), print_table, as_json=args.json,
                                 cleanup=_kill_child)


def _kill_child() -> None:
    if _current_child is not None and _current_child.poll() is None:
        _current_child.kill()
        _current_child.wait()


if __name__ == "__main__":
    sys.exit(main())
