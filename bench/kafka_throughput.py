"""Benchmark: F4 through Kafka (civicsync capture → broker → apply --group with 1 and 2 workers) beside the
direct CDC path and the COPY limit, in one run; broker start-up; peak RSS of capture and of each worker.

    .venv/bin/python bench/kafka_throughput.py [--changes 20000] [--txn-rows 100] [--citizens 30000] [--json]
    .venv/bin/python bench/kafka_throughput.py --latency-only [--latency-runs 3] [--rate 1000] [--seconds 15]

What it does
    Starts its own PostgreSQL and a real Kafka 4.3.0 broker (KRaft, 512 MB heap; its start-up time is
    reported), seeds the reference databases like bench/cdc_throughput.py (same change plan and writer
    procedure: every F4 decision moves its application forward), then:

    capture   `civicsync capture warehouse` runs on a thread of this process (masked: F4's transform runs
              here) while the procedure writes ``--changes`` decisions; capture rate = records delivered
              (every one acknowledged by the broker, then the slot) / (last acknowledgement - write start).
              Its peak RSS is this process's VmHWM (the process also holds the seeding's memory: an upper bound).
    apply     the topic then holds the whole backlog; for 1 and then 2 workers, the target is reset and
              `civicsync apply --group G --flow F4` processes (fresh group each time) drain it: drain rate =
              changes / (all offsets stored - first offset stored), and end to end including process
              start-up (the drain clock starts when the first batch is committed, polled every 0.1 s).
              Peak RSS per worker from /proc/PID/status VmHWM. Checked against the expected statuses.
    direct    the direct CDC path's backlog drain of the same number of changes (bench/cdc_throughput.py's
              run_civicsync) and the COPY limit (run_baseline_f4, UPDATE from a stage at batch_max_changes).
    latency   capture and one worker as threads of this process at a steady ``--rate`` changes/s for
              ``--seconds`` (10 decisions per source transaction): source commit → target commit per
              record. ``--latency-runs`` runs with the consumer's default ``max_wait_ms`` beside as many
              with the old default 50 ms (the baseline), alternating; medians of p50 and p99 reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from benchrun import log, run_on_private_server
from cdc_harness import environ_for
from cdc_throughput import (
    F4,
    check_f4,
    f4_plan,
    load_plan,
    prepare,
    reset_f4_target,
    run_baseline_f4,
    run_civicsync,
    write_changes,
)
from civicsync.config import LoadedConfig
from civicsync.config.loader import parse_config, reference_config_path
from civicsync.kafka.capture import KafkaCapture
from civicsync.kafka.consume import GroupApplier
from civicsync.kafka.declared import declared_topics
from civicsync.kafka.local import single_broker
from civicsync.kafka.topics import admin_client, ensure_topics
from civicsync.localpg import LocalPostgres

BOOTSTRAP_ENV = "CIVICSYNC_KAFKA_BOOTSTRAP"
CLI = str(Path(sys.executable).parent / "civicsync")


def kafka_config(environ: dict[str, str], partitions: int) -> tuple[LoadedConfig, dict[str, Any]]:
    raw = yaml.safe_load(reference_config_path().read_text())
    tag = secrets.token_hex(3)
    for conn in ("warehouse", "citizen"):  # as cdc_harness.run_config: own slot, streaming from now on
        raw["connections"][conn]["capture"] = {"slot": f"bk_{conn}_{tag}", "publication": f"bk_{conn}_{tag}",
                                               "snapshot": "never"}
    raw["kafka"] = {"bootstrap_env": BOOTSTRAP_ENV, "topic_prefix": f"bench{secrets.token_hex(3)}",
                    "topics": {"defaults": {"partitions": partitions, "replication_factor": 1}}}
    return parse_config(raw, "bench.yaml", environ), raw


def peak_rss_mb(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stored_span(config: LoadedConfig, group: str) -> tuple[int, float | None, float | None]:
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        row = cz.execute("SELECT coalesce(sum(next_offset), 0), extract(epoch FROM min(updated_at)),"
                         " extract(epoch FROM max(updated_at)) FROM civicsync.kafka_offsets WHERE group_id = %s",
                         (group,)).fetchone()
    assert row is not None
    return int(row[0]), (float(row[1]) if row[1] is not None else None), (float(row[2]) if row[2] else None)


def run_capture(config: LoadedConfig, changes: int, txn_rows: int, first_id: int) -> dict[str, Any]:
    stop = threading.Event()
    cap = KafkaCapture(config, "warehouse", stop=stop)
    cap.prepare()
    thread = threading.Thread(target=cap.run, daemon=True)
    thread.start()
    started = time.time()
    write_seconds = write_changes(config, F4, txn_rows, first_id)
    while cap.stats.records < changes or cap.producer.flush(0) > 0:
        time.sleep(0.05)
    acked = time.time()
    stop.set()
    thread.join(60)
    return {"records": cap.stats.records, "write_seconds": write_seconds, "rate": changes / (acked - started),
            "peak_rss_mb_upper_bound": peak_rss_mb("self")}


def run_group(config: LoadedConfig, raw: dict[str, Any], env: dict[str, str], workers: int, changes: int,
              timeout: float) -> dict[str, Any]:
    reset_f4_target(config)
    group = f"bench{workers}-{secrets.token_hex(3)}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(raw, f)
    launched = time.time()
    procs = [subprocess.Popen([CLI, "apply", "--group", group, "--flow", F4, "-c", f.name], env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    rss: dict[int, float] = {}
    try:
        deadline = time.monotonic() + timeout
        first: float | None = None
        while (applied := stored_span(config, group)[0]) < changes:
            if applied and first is None:
                first = time.time()  # the first batch committed (the workers are up and assigned)
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"{workers} workers: did not drain the topic")
            rss = {p.pid: peak_rss_mb(p.pid) for p in procs}
            time.sleep(0.1)
        done = time.time()
        rss = {p.pid: peak_rss_mb(p.pid) for p in procs}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        os.unlink(f.name)
    assert first is not None
    return {"workers": workers, "drain_rate": changes / max(done - first, 1e-6),
            "end_to_end_with_startup_rate": changes / (done - launched), "peak_rss_mb": sorted(rss.values())}


class TimedApplier(GroupApplier):
    """A worker that notes, per applied record, source commit → target commit (the wall clock right
    after the batch's COMMIT minus the source commit time the record carries)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latencies: list[float] = []

    def _committed(self, batch: Any) -> None:
        super()._committed(batch)
        now = time.time()
        for m in batch.changes:
            if m.value() is not None:
                self.latencies.append(now - json.loads(m.value())["source"]["ts_us"] / 1e6)


def run_latency(config: LoadedConfig, rate: int, seconds: float, first_id: int) -> dict[str, Any]:
    """Capture and one worker (threads) at a steady ``rate`` changes/s: 10 decisions per source
    transaction, one transaction every 10/rate seconds, from the plan table."""
    reset_f4_target(config)
    stop = threading.Event()
    cap = KafkaCapture(config, "warehouse", stop=stop)
    cap.prepare()
    # A new group starts at the records written from now on (not at the backlog of the drain runs).
    worker = TimedApplier(config, f"lat-{secrets.token_hex(3)}", [F4], stop=stop,
                          start=datetime.now(UTC).isoformat())
    threads = [threading.Thread(target=cap.run, daemon=True), threading.Thread(target=worker.run, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(3)  # the worker joins its group and is assigned the partitions
    total = int(rate * seconds)
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as wh:
        began = time.monotonic()
        for i in range(0, total, 10):
            wh.execute("INSERT INTO public.application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                       " decision_code, reason, amount_sanctioned, officer_id, decided_at, updated_at)"
                       " SELECT %s + seq, application_id, citizen_id, scheme_id, code, reason, amount, officer,"
                       " clock_timestamp(), clock_timestamp() FROM public.bench_f4_plan WHERE seq >= %s AND seq < %s",
                       (first_id, i, i + 10))
            pause = began + (i + 10) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        achieved = total / (time.monotonic() - began)
    deadline = time.monotonic() + 60
    while len(worker.latencies) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(60)
    lat = sorted(worker.latencies)
    return {"rate_target": rate, "rate_achieved": achieved, "applied": len(lat),
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)]}


def latency_runs(args: argparse.Namespace, raw: dict[str, Any], env: dict[str, str], first_id: int) -> dict[str, Any]:
    """``--latency-runs`` latency runs each with the consumer's default ``max_wait_ms`` and with the
    old default of 50 ms (the baseline), alternating so that load on the box hits both alike; the
    median p50 and p99 of each."""
    settings: dict[str, list[dict[str, Any]]] = {"default (5 ms)": [], "max_wait_ms 50 (old default)": []}
    per_run = int(args.rate * args.seconds)
    for run in range(args.latency_runs):
        for label, wait in (("default (5 ms)", None), ("max_wait_ms 50 (old default)", 50)):
            variant = json.loads(json.dumps(raw))
            if wait is not None:
                variant["kafka"]["consumer"] = {"max_wait_ms": wait}
            config = parse_config(variant, "bench.yaml", env)
            lat = run_latency(config, args.rate, args.seconds, first_id)
            first_id += per_run
            settings[label].append(lat)
            log(f"latency run {run + 1} [{label}] at {lat['rate_achieved']:,.0f} changes/s: "
                f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms ({lat['applied']:,} applied)")
    return {label: {"runs": runs, "median_p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "median_p99_ms": statistics.median(r["p99_ms"] for r in runs),
                    "p99_under_100_ms": f"{sum(r['p99_ms'] < 100 for r in runs)} of {len(runs)}"}
            for label, runs in settings.items()}


def measure(args: argparse.Namespace, server: LocalPostgres) -> dict[str, Any]:
    environ = environ_for(server, "kafka", secrets.token_hex(16))
    workdir = Path(tempfile.mkdtemp(prefix="civicsync-bench-kafka-"))
    broker = single_broker(workdir)
    broker_start = broker.start()
    log(f"broker ready in {broker_start:.1f}s (format + start)")
    try:
        env = {**environ, BOOTSTRAP_ENV: broker.bootstrap}
        os.environ[BOOTSTRAP_ENV] = broker.bootstrap  # the capture on this process's thread reads it
        config, raw = kafka_config(env, args.partitions)
        world, _ = prepare(config, args.citizens)
        ensure_topics(admin_client(broker.bootstrap), declared_topics(config, [F4]))
        rng = random.Random(20261202)
        plan = f4_plan(config, world, args.changes, rng)
        load_plan(config, "bench_f4_plan", plan.rows)
        report: dict[str, Any] = {"changes": args.changes, "partitions": args.partitions,
                                  "broker_start_seconds": broker_start,
                                  "broker_rss_mb": broker.rss_bytes() / 2**20}
        if args.latency_only:
            report["latency"] = latency_runs(args, raw, env, world.next_decision)
            return report
        reset_f4_target(config)
        report["capture"] = cap = run_capture(config, args.changes, args.txn_rows, world.next_decision)
        world.next_decision += args.changes
        log(f"capture: {cap['rate']:,.0f} records/s delivered and acknowledged")
        report["apply"] = []
        for workers in (1, 2):
            res = run_group(config, raw, env, workers, args.changes, args.timeout)
            res["check"] = check_f4(config, plan)
            report["apply"].append(res)
            log(f"apply with {workers} worker(s): drain {res['drain_rate']:,.0f} events/s, "
                f"{res['end_to_end_with_startup_rate']:,.0f} with start-up; RSS {res['peak_rss_mb']} MB; "
                f"{res['check']}")
        world.next_decision += args.changes
        report["latency"] = latency_runs(args, raw, env, world.next_decision)
        world.next_decision += 2 * args.latency_runs * int(args.rate * args.seconds)
        reset_f4_target(config)
        direct = run_civicsync(environ, F4, "backlog", args.changes, args.txn_rows, world.next_decision,
                               args.timeout, lambda: check_f4(config, plan))
        report["direct_backlog_drain_rate"] = direct.drain_rate
        log(f"direct path: drain {direct.drain_rate:,.0f} events/s")
        reset_f4_target(config)
        report["copy_limit_rows_per_s"] = run_baseline_f4(config, plan.target_rows, 5000, False)
        log(f"COPY limit: {report['copy_limit_rows_per_s']:,.0f} rows/s")
        return report
    finally:
        broker.destroy()


def print_report(report: dict[str, Any]) -> None:
    print(yaml.safe_dump(report, sort_keys=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--txn-rows", type=int, default=100)
    parser.add_argument("--citizens", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--rate", type=int, default=1000, help="changes/s of the latency run (default 1,000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency run (default 15 s)")
    parser.add_argument("--latency-runs", type=int, default=3,
                        help="latency runs per consumer setting (default 3; medians reported)")
    parser.add_argument("--latency-only", action="store_true", help="skip the drains, the direct path and COPY")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return run_on_private_server(lambda server: measure(args, server), print_report, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
