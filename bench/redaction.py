"""Benchmark: flow F12 (feedback) with the free-text redaction of issue 10 beside the same flow without it,
measured in the same run (issue 10.8).

    .venv/bin/python bench/redaction.py [--rows 1000000] [--citizens 100000] [--repeat 3] [--json]

What it does
    Starts its own PostgreSQL (civicsync.localpg.LocalPostgres, durable) in a temp dir, creates the two
    reference databases (load_config + init_databases) and COPYs ``--citizens`` portal citizens (each with
    a phone and an e-mail, the values F12's known-value redaction looks up) and ``--rows`` feedback rows
    whose comments follow the reference seed (civicsync.reference.seed: about 40 % embed a phone number, an
    e-mail address or an id; about 6 % are empty). Then ``--repeat`` times, alternating which goes first,
    after resetting the target (TRUNCATE analytics.feedback and the flow's control rows) and a CHECKPOINT:

    redaction  the reference F12: keyed pseudonym, category vocabulary, comment redacted (normalised
               detection with libphonenumber, id shapes, e-mails, the citizen's own phone and e-mail
               from public.citizens via known_values)
    plain      the same flow with the comment copied as it is (no mask); everything else identical

    Each contender is one ``run_batch`` in this process; rows/s = N / its wall time (connects, snapshot,
    transform, stage, validate, merge, commit, run history; the known-value preload included). The
    process's CPU seconds per run are printed too: on a shared machine the redaction run, which is
    CPU-bound in Python while the plain one mostly waits for PostgreSQL, loses more wall time to other
    load than its own cost.
    Prints medians, the redaction/plain ratio and PASS/MISS against the target ratio >= 50 %.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import yaml

from benchrun import log, run_on_private_server
from civicsync.config import LoadedConfig
from civicsync.config.loader import parse_config, reference_config_path
from civicsync.jobs.batch import run_batch
from civicsync.localpg import LocalPostgres
from civicsync.provision.databases import init_databases
from civicsync.reference.seed.activity import _feedback_comment  # the reference seed's comment distribution

TARGET_RATIO = 0.5
RESET_SQL = ("TRUNCATE analytics.feedback",
             "DELETE FROM civicsync.watermarks WHERE flow = 'feedback'",
             "DELETE FROM civicsync.dead_letters WHERE flow = 'feedback'")


def configs(server: LocalPostgres) -> tuple[LoadedConfig, LoadedConfig]:
    """The reference config, and the same with F12's comment copied unmasked."""
    environ = {"CIVICSYNC_WAREHOUSE_DSN": server.dsn("bench_warehouse"),
               "CIVICSYNC_CITIZEN_DSN": server.dsn("bench_citizen"),
               "CIVICSYNC_PSEUDONYM_KEY": secrets.token_hex(16)}
    path = reference_config_path()
    raw = yaml.safe_load(path.read_text())
    redacting = parse_config(raw, str(path), environ)
    raw["flows"]["feedback"]["columns"]["comment"] = "comment"
    return redacting, parse_config(raw, str(path), environ)


def _copy(conn: psycopg.Connection[Any], table: str, columns: str, rows: Any, batch: int = 50_000) -> None:
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def prepare(config: LoadedConfig, rows: int, citizens: int) -> float:
    started = time.perf_counter()
    init_databases(config)
    rng = random.Random(42)
    pii = random.Random(43)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(citizens)]
    now = datetime.now(UTC)
    log(f"loading {citizens:,} citizens and {rows:,} feedback rows ...")
    with psycopg.connect(config.dsn("citizen")) as conn:
        _copy(conn, "public.citizens", "citizen_id, full_name, phone, email, updated_at",
              ((cid, f"Citizen {i}", f"{7_000_000_000 + i * 7:010d}", f"citizen.{i}@example.in", now)
               for i, cid in enumerate(ids)))
        _copy(conn, "public.feedback", "feedback_id, citizen_id, rating, category, comment, created_at",
              ((i + 1, ids[i % citizens], 1 + i % 5, *_feedback_comment(rng.random, pii),
                now - timedelta(hours=1, seconds=i % 3600)) for i in range(rows)))
        conn.commit()
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) public.citizens, public.feedback")
    seconds = time.perf_counter() - started
    log(f"loaded in {seconds:.1f}s")
    return seconds


def redacted_comments(config: LoadedConfig) -> int:
    """Comments in the target that hold a redaction token (after a redaction run)."""
    with psycopg.connect(config.dsn("warehouse")) as conn:
        row = conn.execute("SELECT count(*) FROM analytics.feedback WHERE comment ~ '\\[(PHONE|EMAIL|ID)\\]'"
                           ).fetchone()
    return int(row[0]) if row else 0


def run_once(config: LoadedConfig, rows: int) -> tuple[float, float]:
    """One timed F12 run: (rows/s by wall time, this process's CPU seconds)."""
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as conn:
        for statement in RESET_SQL:
            conn.execute(statement)
        conn.execute("CHECKPOINT")
    started, cpu = time.perf_counter(), time.process_time()
    result = run_batch(config, "F12").raise_for_error()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.counts.rows_written != rows:
        raise SystemExit(f"F12 wrote {result.counts.rows_written} rows, expected {rows}")
    return rows / seconds, cpu


def measure(args: argparse.Namespace, server: LocalPostgres) -> dict[str, Any]:
    redacting, plain = configs(server)
    load_seconds = prepare(redacting, args.rows, args.citizens)
    samples: dict[str, list[float]] = {"redaction": [], "plain": []}
    redacted = 0
    cpu_seconds: dict[str, list[float]] = {"redaction": [], "plain": []}
    for i in range(args.repeat):
        order = ("plain", "redaction") if i % 2 == 0 else ("redaction", "plain")
        for which in order:
            rps, cpu = run_once(redacting if which == "redaction" else plain, args.rows)
            samples[which].append(rps)
            cpu_seconds[which].append(cpu)
            if which == "redaction":
                redacted = redacted_comments(redacting)
            log(f"repeat {i + 1}: {which} {rps:,.0f} rows/s, client CPU {cpu:.1f} s")
    with_r, without = statistics.median(samples["redaction"]), statistics.median(samples["plain"])
    return {"rows": args.rows, "citizens": args.citizens, "repeat": args.repeat, "load_seconds": round(load_seconds, 1),
            "redaction_rows_per_s": round(with_r), "plain_rows_per_s": round(without),
            "ratio": round(with_r / without, 4), "comments_redacted": redacted,
            "samples": {k: [round(v) for v in vs] for k, vs in samples.items()},
            "client_cpu_seconds": {k: round(statistics.median(v), 2) for k, v in cpu_seconds.items()},
            "client_cpu_us_per_row_added": round((statistics.median(cpu_seconds["redaction"])
                                                  - statistics.median(cpu_seconds["plain"])) / args.rows * 1e6, 2),
            "target": f"ratio >= {TARGET_RATIO:.0%}: " + ("PASS" if with_r / without >= TARGET_RATIO else "MISS")}


def render(report: dict[str, Any]) -> None:
    print(f"F12 over {report['rows']:,} feedback rows ({report['citizens']:,} citizens); "
          f"medians of {report['repeat']} alternating repeats, same run, same server")
    print(f"  plain (comment copied)   {report['plain_rows_per_s']:>10,} rows/s   samples {report['samples']['plain']}")
    print(f"  redaction                {report['redaction_rows_per_s']:>10,} rows/s   "
          f"samples {report['samples']['redaction']}")
    print(f"  ratio redaction / plain  {report['ratio']:.1%}   ({report['comments_redacted']:,} comments "
          "held a token after a redaction run)")
    cpu = report["client_cpu_seconds"]
    print(f"  civicsync process CPU    plain {cpu['plain']} s, redaction {cpu['redaction']} s: "
          f"+{report['client_cpu_us_per_row_added']} us per row (machine load does not inflate CPU time as much "
          "as wall time)")
    print(f"  {report['target']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="feedback rows (default 1,000,000)")
    parser.add_argument("--citizens", type=int, default=100_000, help="portal citizens (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="measured repeats per contender (default 3)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 1 or args.citizens < 1:
        parser.error("need --repeat, --rows and --citizens >= 1")
    return run_on_private_server(lambda server: measure(args, server), render, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
