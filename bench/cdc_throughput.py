"""Benchmark: CDC throughput of F4 (decision_updates) and F3 (eligibility_hints) against a COPY baseline, same run.

    .venv/bin/python bench/cdc_throughput.py [--changes 100000] [--txn-rows 100] [--citizens 150000]
                                             [--repeat 1] [--also-wait-ms 50] [--json]

What it does
    Starts its own PostgreSQL (civicsync.localpg.LocalPostgres, durable=True: fsync, synchronous_commit and
    full_page_writes on, track_commit_timestamp on; the settings are printed), creates the two reference
    databases (load_config + init_databases) and seeds them (``--citizens``, default 150,000: about 64,000 portal
    applications and 127,000 portal citizens). Every portal application is set to SUBMITTED before each F4 run
    so each decision moves its application forward; eligibility_hints is pre-filled once for every portal
    citizen with F3's own recompute (a steady state, not an empty table). The worker uses the config model's
    capture defaults (printed) with snapshot: never; each run has its own slot and publication,
    dropped afterwards.

    Source changes   ``--changes`` rows, written by a server-side procedure that COMMITs every ``--txn-rows``
                     rows (so the writer costs no client round trips and no Python time in this process):
                     F4  INSERTs into warehouse application_decisions; per application UNDER_REVIEW, then APPR
                         (70 %) or REJ, then DISB after APPR: every decision advances its application.
                     F3  40 % INSERTs of new predictions (a scheme the citizen has none for yet), 60 % UPDATEs
                         of existing ones (new score, hence status), all for citizens that have a portal account;
                         no prediction twice in one transaction.

    Each flow is measured in two ways per repeat (the figures are labelled in the output):
    live     the worker runs (CdcWorker on a thread of this process) while the procedure writes:
             end to end = N / (last target commit - first source commit).
    backlog  the slot is created, the procedure writes everything with the worker stopped, then the worker
             starts: drain = N / (last target commit - worker start); end to end = N / (last target commit -
             first source commit), which includes the write phase while the worker was not running.
    sensitivity  (``--also-wait-ms``, default 50, -1 to skip) one more backlog drain per flow and repeat with
             that batch_max_wait_ms instead of the configured default, printed apart and labelled: it shows
             how much of the figure is the batching policy. It is never used for PASS/MISS.
    Source commit times are the commit timestamps the stream carries (pgoutput Begin/Commit), the target
    commit time is the wall clock in the worker's on_batch callback, right after its target COMMIT.
    All N events must be applied (worker stats) and the result is checked (F4: every application's status
    against the expected final status; F3: the top-5 of 300 touched citizens recomputed in SQL).

    baseline  the rate at which the same target absorbs the same rows with no CDC work: on the citizen
              database, COPY into a temp stage + one statement, COMMIT per batch, into a fresh copy of the
              target table (LIKE ... INCLUDING ALL; F3's copy also gets the two foreign keys):
              F4  ``UPDATE ... FROM stage`` and ``INSERT ... ON CONFLICT DO UPDATE`` of (application_id, status,
                  decision_note, updated_at) (+ citizen_id, scheme_id for the insert), duplicates within a
                  batch reduced to the last one first; at batch_max_changes rows per commit and at the
                  worker's mean batch size in the backlog drain. The F4 limit is the fastest of these.
              F3  ``INSERT ... ON CONFLICT DO UPDATE`` of one hint row per changed prediction.
              Rows/s = N source rows / wall time of the COPY + statement + COMMIT loop.

    Prints medians, F4 / limit with PASS/MISS against >= 50 %, F3's figures, and where the worker's time went
    (phase timers wrapped around the worker's own methods, CPU seconds of the worker thread and of the
    walsender, the target backend and, for F3, the source-reading backend). The server and its data are removed
    at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchrun import log, run_on_private_server
from cdc_harness import (
    WorkerRun,
    backend_cpu,
    checkpoint,
    cleanup,
    environ_for,
    run_config,
    server_settings,
    settings_line,
)
from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.config import LoadedConfig
from civicsync.config.loader import load_config, reference_config_path
from civicsync.config.models import slot_name
from civicsync.db.connect import connect
from civicsync.localpg import LocalPostgres
from civicsync.provision.databases import init_databases
from civicsync.reference.seed import seed

TARGET_RATIO = 0.5
F4, F3 = "F4", "F3"
INSERT_SHARE = 0.4  # F3: share of new predictions among the changes
APPROVE_SHARE = 0.7  # F4: APPR vs REJ after review
REASONS = {"APPR": "Approved by the district welfare officer.", "REJ": "Declared income is above the scheme limit."}
F3_REASONS = ('["income below the scheme limit"]', '["age within the scheme range", "resident of the state"]',
              '["household size matches"]', '["occupation: farmer", "land holding below 2 ha"]')

PROCEDURES = (
    """
    CREATE OR REPLACE PROCEDURE public.bench_write_f4(txn_rows int, first_id bigint) LANGUAGE plpgsql AS $$
    DECLARE total int;
    BEGIN
      SELECT count(*) INTO total FROM public.bench_f4_plan;
      FOR b IN 0 .. (total - 1) / txn_rows LOOP
        INSERT INTO public.application_decisions (decision_id, application_id, citizen_id, scheme_id, decision_code,
            reason, amount_sanctioned, officer_id, decided_at, updated_at)
          SELECT first_id + seq, application_id, citizen_id, scheme_id, code, reason, amount, officer,
                 clock_timestamp(), clock_timestamp()
          FROM public.bench_f4_plan WHERE seq >= b * txn_rows AND seq < (b + 1) * txn_rows ORDER BY seq;
        COMMIT;
      END LOOP;
    END $$""",
    """
    CREATE OR REPLACE PROCEDURE public.bench_write_f3(txn_rows int) LANGUAGE plpgsql AS $$
    DECLARE total int;
    BEGIN
      SELECT count(*) INTO total FROM public.bench_f3_plan;
      FOR b IN 0 .. (total - 1) / txn_rows LOOP
        INSERT INTO public.eligibility_predictions (prediction_id, citizen_id, scheme_id, score, status,
            model_version, reasons, predicted_at, updated_at)
          SELECT prediction_id, citizen_id, scheme_id, score, status, model_version, reasons,
                 clock_timestamp(), clock_timestamp()
          FROM public.bench_f3_plan WHERE op = 'i' AND seq >= b * txn_rows AND seq < (b + 1) * txn_rows ORDER BY seq;
        UPDATE public.eligibility_predictions p SET score = x.score, status = x.status,
               model_version = x.model_version, reasons = x.reasons, updated_at = clock_timestamp()
          FROM public.bench_f3_plan x
          WHERE x.op = 'u' AND x.seq >= b * txn_rows AND x.seq < (b + 1) * txn_rows
            AND p.prediction_id = x.prediction_id;
        COMMIT;
      END LOOP;
    END $$""",
    "CREATE TABLE IF NOT EXISTS public.bench_f4_plan (seq int PRIMARY KEY, application_id bigint, citizen_id uuid,"
    " scheme_id bigint, code text, reason text, amount numeric(12,2), officer text)",
    "CREATE TABLE IF NOT EXISTS public.bench_f3_plan (seq int PRIMARY KEY, op \"char\", prediction_id bigint,"
    " citizen_id uuid, scheme_id bigint, score numeric(5,4), status text, model_version text, reasons jsonb)",
)


# --------------------------------------------------------------------------- results


@dataclass
class CivicRun:
    """One civicsync run of one flow in one mode."""

    flow: str
    mode: str  # live | backlog
    wait_ms: int | None  # batch_max_wait_ms override (None: the config model's default)
    events: int
    write_seconds: float  # first → last source commit
    e2e_seconds: float  # first source commit → last target commit
    drain_seconds: float | None  # worker start → last target commit (backlog only)
    batches: int
    mean_batch: float
    dead_letters: int
    worker_thread_cpu: float
    backend_cpu: dict[str, float]
    timers: dict[str, float]
    check: str

    @property
    def e2e_rate(self) -> float:
        return self.events / self.e2e_seconds

    @property
    def write_rate(self) -> float:
        return self.events / self.write_seconds

    @property
    def drain_rate(self) -> float | None:
        return None if self.drain_seconds is None else self.events / self.drain_seconds


@dataclass
class Baseline:
    name: str
    batch: int
    rows_per_s: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- set-up


@dataclass
class World:
    """What the change generators need to know about the seeded data."""

    apps: list[tuple[int, str, int]]  # (application_id, citizen_id, scheme_id) of every portal application
    citizens: list[str]  # portal citizen ids
    schemes: list[int]  # portal scheme ids
    owned: dict[str, set[int]]  # citizen → schemes it has a prediction for
    predictions: dict[int, tuple[str, int]]  # prediction_id → (citizen, scheme), portal citizens only
    updatable: list[int]
    next_prediction: int
    next_decision: int


def prepare(config: LoadedConfig, citizens: int) -> tuple[World, float]:
    init_databases(config)
    log(f"seeding {citizens:,} citizens ...")
    counts = seed(config.dsn("warehouse"), config.dsn("citizen"), citizens)
    log(f"seeded in {counts.seconds:.1f}s: " + ", ".join(
        f"{k.split('.', 1)[1]} {v:,}" for k, v in counts.rows.items()
        if k.endswith(("applications", "citizens", "eligibility_predictions", "application_decisions"))))
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as wh:
        for statement in PROCEDURES:
            wh.execute(statement)
        wh.execute("VACUUM (ANALYZE)")
        next_decision = int(wh.execute("SELECT coalesce(max(decision_id), 0) + 1 FROM application_decisions")
                            .fetchone()[0])  # type: ignore[index]
        next_prediction = int(wh.execute("SELECT coalesce(max(prediction_id), 0) + 1 FROM eligibility_predictions")
                              .fetchone()[0])  # type: ignore[index]
        predictions = wh.execute("SELECT prediction_id, citizen_id::text, scheme_id FROM eligibility_predictions"
                                 " ORDER BY prediction_id").fetchall()
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        apps = [(int(a), str(c), int(s)) for a, c, s in cz.execute(
            "SELECT application_id, citizen_id::text, scheme_id FROM applications ORDER BY application_id")]
        portal = [str(c) for (c,) in cz.execute("SELECT citizen_id::text FROM citizens ORDER BY citizen_id")]
        schemes = [int(s) for (s,) in cz.execute("SELECT scheme_id FROM schemes ORDER BY scheme_id")]
    members = set(portal)
    owned: dict[str, set[int]] = {c: set() for c in portal}
    kept: dict[int, tuple[str, int]] = {}
    for pid, cid, sid in predictions:
        if cid in members:
            owned[cid].add(int(sid))
            kept[int(pid)] = (str(cid), int(sid))
    world = World(apps, portal, schemes, owned, kept, list(kept), next_prediction, next_decision)
    log(f"{len(apps):,} portal applications, {len(portal):,} portal citizens, {len(kept):,} of their predictions")
    prefill_hints(config, portal)
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        cz.execute("VACUUM (ANALYZE)")
    return world, counts.seconds


def prefill_hints(config: LoadedConfig, citizens: list[str]) -> None:
    """F3's steady state: every portal citizen's top 5, computed by F3's own recompute."""
    started = time.perf_counter()
    applier = CdcFlowApplier(config, config.model.flow_name(F3))
    outcome = FlowOutcome()
    with connect(config.dsn("citizen"), purpose="bench-prefill") as tgt, \
            connect(config.dsn("warehouse"), purpose="bench-prefill", autocommit=True) as src:
        for i in range(0, len(citizens), 5000):
            applier.recompute(tgt, src, {(c,) for c in citizens[i:i + 5000]}, outcome)
            tgt.commit()
    log(f"pre-filled eligibility_hints: {outcome.written:,} rows in {time.perf_counter() - started:.1f}s")


# --------------------------------------------------------------------------- the source changes


@dataclass
class F4Plan:
    rows: list[tuple[Any, ...]]  # bench_f4_plan rows
    final: dict[int, str]  # application_id → expected portal status
    target_rows: list[tuple[Any, ...]]  # (application_id, citizen_id, scheme_id, status, decision_note, updated_at)


def f4_plan(config: LoadedConfig, world: World, changes: int, rng: random.Random) -> F4Plan:
    spec = config.model.flows[config.model.flow_name(F4)].columns["status"]
    status_of = dict(spec.map or {})
    nxt: dict[str | None, str | None] = {None: "UNDER_REVIEW", "APPR": "DISB", "REJ": None, "DISB": None}
    last: dict[int, str | None] = {}
    rows: list[tuple[Any, ...]] = []
    target: list[tuple[Any, ...]] = []
    order = list(world.apps)
    at = datetime(2026, 11, 2, tzinfo=UTC)
    while len(rows) < changes:
        rng.shuffle(order)
        progressed = False
        for app_id, citizen, scheme in order:
            prev = last.get(app_id)
            code = ("APPR" if rng.random() < APPROVE_SHARE else "REJ") if prev == "UNDER_REVIEW" else nxt[prev]
            if code is None:
                continue
            last[app_id] = code
            reason = REASONS.get(code)
            rows.append((len(rows), app_id, citizen, scheme, code, reason,
                         "12000.00" if code in ("APPR", "DISB") else None, f"OFF-{rng.randrange(1000, 10000)}"))
            target.append((app_id, citizen, scheme, status_of[code], reason,
                           (at + timedelta(microseconds=len(rows))).isoformat()))
            progressed = True
            if len(rows) == changes:
                break
        if not progressed:
            raise SystemExit(f"only {len(rows):,} decisions possible for {len(world.apps):,} applications: "
                             "raise --citizens")
    return F4Plan(rows, {a: status_of[c] for a, c in last.items() if c is not None}, target)


@dataclass
class F3Plan:
    rows: list[tuple[Any, ...]]  # bench_f3_plan rows
    citizens: list[str]  # touched citizens
    target_rows: list[tuple[Any, ...]]  # (citizen_id, scheme_id, rank, score_band, reasons, updated_at)


def f3_plan(world: World, changes: int, txn_rows: int, rng: random.Random) -> F3Plan:
    rows: list[tuple[Any, ...]] = []
    touched: set[str] = set()
    target: list[tuple[Any, ...]] = []
    at = datetime(2026, 11, 2, tzinfo=UTC)
    while len(rows) < changes:
        in_txn: set[int] = set()
        inserted: list[int] = []
        for _ in range(min(txn_rows, changes - len(rows))):
            score = rng.randrange(10_001) / 10_000
            status = "ELIGIBLE" if score >= 0.75 else "LIKELY" if score >= 0.5 else "INELIGIBLE"
            reasons = F3_REASONS[rng.randrange(len(F3_REASONS))]
            citizen: str | None = None
            if rng.random() < INSERT_SHARE:
                citizen = world.citizens[rng.randrange(len(world.citizens))]
                free = [s for s in world.schemes if s not in world.owned[citizen]]
                if free:
                    scheme = free[rng.randrange(len(free))]
                    pid = world.next_prediction
                    world.next_prediction += 1
                    world.owned[citizen].add(scheme)
                    world.predictions[pid] = (citizen, scheme)
                    inserted.append(pid)
                    op = "i"
                else:
                    citizen = None
            if citizen is None:
                while True:
                    pid = world.updatable[rng.randrange(len(world.updatable))]
                    if pid not in in_txn:
                        break
                citizen, scheme = world.predictions[pid]
                op = "u"
            in_txn.add(pid)
            touched.add(citizen)
            rows.append((len(rows), op, pid, citizen, scheme, f"{score:.4f}", status, "elig-2026.11", reasons))
            target.append((citizen, scheme, 1, "HIGH" if score >= 0.75 else "MEDIUM", reasons,
                           (at + timedelta(microseconds=len(rows))).isoformat()))
        world.updatable.extend(inserted)
    return F3Plan(rows, sorted(touched), target)


def load_plan(config: LoadedConfig, table: str, rows: list[tuple[Any, ...]]) -> None:
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as wh:
        wh.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("public", table)))
        with wh.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier("public", table))) as copy:
            for row in rows:
                copy.write_row(row)
        wh.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("public", table)))


def write_changes(config: LoadedConfig, flow: str, txn_rows: int, first_id: int) -> float:
    """CALL the writer procedure; returns its wall seconds."""
    started = time.perf_counter()
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as wh:
        if flow == F4:
            wh.execute(sql.SQL("CALL public.bench_write_f4({}, {})").format(sql.Literal(txn_rows),
                                                                           sql.Literal(first_id)))
        else:
            wh.execute(sql.SQL("CALL public.bench_write_f3({})").format(sql.Literal(txn_rows)))
    return time.perf_counter() - started


def reset_f4_target(config: LoadedConfig) -> None:
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        cz.execute("UPDATE public.applications SET status = 'SUBMITTED', decision_note = NULL"
                   " WHERE status <> 'SUBMITTED' OR decision_note IS NOT NULL")
        cz.execute("VACUUM (ANALYZE) public.applications")


# --------------------------------------------------------------------------- checks


def check_f4(config: LoadedConfig, plan: F4Plan) -> str:
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        cz.execute("CREATE TEMP TABLE bench_expect (application_id bigint, status text)")
        with cz.cursor().copy("COPY bench_expect FROM STDIN") as copy:
            for row in plan.final.items():
                copy.write_row(row)
        wrong = cz.execute("SELECT count(*) FROM bench_expect e JOIN public.applications a USING (application_id)"
                           " WHERE a.status <> e.status").fetchone()[0]  # type: ignore[index]
    return "ok" if wrong == 0 else f"{wrong} applications with a wrong status"


def check_f3(config: LoadedConfig, plan: F3Plan, rng: random.Random) -> str:
    sample = rng.sample(plan.citizens, min(300, len(plan.citizens)))
    with psycopg.connect(config.dsn("warehouse"), autocommit=True) as wh:
        expected = set(wh.execute(
            "SELECT citizen_id::text, scheme_id, rn FROM (SELECT citizen_id, scheme_id, row_number() OVER"
            " (PARTITION BY citizen_id ORDER BY score DESC, prediction_id) AS rn FROM eligibility_predictions"
            " WHERE status IN ('ELIGIBLE', 'LIKELY') AND citizen_id = ANY(%s::uuid[])) x WHERE rn <= 5",
            (sample,)).fetchall())
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        actual = set(cz.execute("SELECT citizen_id::text, scheme_id, rank FROM eligibility_hints"
                                " WHERE citizen_id = ANY(%s::uuid[])", (sample,)).fetchall())
    if expected == actual:
        return f"ok ({len(sample)} citizens)"
    return f"{len(expected ^ actual)} hint rows differ for {len(sample)} sampled citizens"


# --------------------------------------------------------------------------- civicsync


def run_civicsync(environ: dict[str, str], flow: str, mode: str, changes: int, txn_rows: int, first_id: int,
                  timeout: float, check: Any, wait_ms: int | None = None) -> CivicRun:
    config = run_config(environ, None if wait_ms is None else {"batch_max_wait_ms": wait_ms})
    slot = slot_name(config.model, "warehouse")
    checkpoint(config.dsn("warehouse"))
    checkpoint(config.dsn("citizen"))
    run = WorkerRun(config, "warehouse", [flow], expected=changes)
    try:
        run.prepare()
        if mode == "live":
            run.start()
            time.sleep(1.0)  # streaming from the slot before the first change
            write_changes(config, flow, txn_rows, first_id)
        else:
            write_changes(config, flow, txn_rows, first_id)
            run.start()
        run.wait(timeout)
        cpu = backend_cpu(config.dsn("warehouse"), ["civicsync:capture", f"civicsync:cdc-read:{slot}"])
        cpu.update(backend_cpu(config.dsn("citizen"), [f"civicsync:cdc-apply:{slot}"]))
        run.stop()
    finally:
        run.worker.stop_event.set()
        cleanup(config, "warehouse", "citizen")
    stats = run.worker.stats
    if stats.events != changes:
        raise SystemExit(f"{flow} {mode}: {stats.events:,} events applied, expected {changes:,}")
    data = run.data_batches()
    first_src, last_src, last_tgt = run.first_source_commit(), run.last_source_commit(), run.last_target_commit()
    named = {"civicsync:capture": "walsender", f"civicsync:cdc-read:{slot}": "source reader (top-N)",
             f"civicsync:cdc-apply:{slot}": "target apply backend"}
    return CivicRun(
        flow=flow, mode=mode, wait_ms=wait_ms, events=stats.events, write_seconds=last_src - first_src,
        e2e_seconds=last_tgt - first_src, drain_seconds=(last_tgt - run.started_wall) if mode == "backlog" else None,
        batches=len(data), mean_batch=stats.events / max(len(data), 1), dead_letters=stats.dead_letters,
        worker_thread_cpu=run.thread_cpu, backend_cpu={named[k]: v for k, v in cpu.items()},
        timers={k: v for k, v in (run.timers_at_done or run.timers).items() if v > 0}, check=check())


# --------------------------------------------------------------------------- baseline


def dedupe(rows: list[tuple[Any, ...]], key: int) -> list[tuple[Any, ...]]:
    """The last row per key (key = how many leading columns form it), in first-seen order."""
    last: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        last[row[:key]] = row
    return list(last.values())


def run_baseline_f4(config: LoadedConfig, rows: list[tuple[Any, ...]], batch: int, upsert: bool) -> float:
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        cz.execute("DROP TABLE IF EXISTS public.bench_f4_target")
        cz.execute("CREATE TABLE public.bench_f4_target (LIKE public.applications INCLUDING ALL)")
        cz.execute("INSERT INTO public.bench_f4_target SELECT * FROM public.applications")
        cz.execute("VACUUM (ANALYZE) public.bench_f4_target")
        cz.execute("CHECKPOINT")
    batches = [dedupe(rows[i:i + batch], 1) for i in range(0, len(rows), batch)]
    if upsert:
        statement = ("INSERT INTO public.bench_f4_target AS t (application_id, citizen_id, scheme_id, status,"
                     " decision_note, updated_at) SELECT * FROM bench_stage ON CONFLICT (application_id) DO UPDATE"
                     " SET status = excluded.status, decision_note = excluded.decision_note,"
                     " updated_at = excluded.updated_at")
    else:
        statement = ("UPDATE public.bench_f4_target t SET status = s.status, decision_note = s.decision_note,"
                     " updated_at = s.updated_at FROM bench_stage s WHERE t.application_id = s.application_id")
    with psycopg.connect(config.dsn("citizen")) as cz:
        cz.execute("CREATE TEMP TABLE bench_stage (application_id bigint, citizen_id uuid, scheme_id bigint,"
                   " status text, decision_note text, updated_at timestamptz) ON COMMIT DELETE ROWS")
        cz.commit()
        cur = cz.cursor()
        started = time.perf_counter()
        written = 0
        for b in batches:
            with cur.copy("COPY bench_stage FROM STDIN") as copy:
                for row in b:
                    copy.write_row(row)
            cur.execute(statement)
            written += cur.rowcount
            cz.commit()
        seconds = time.perf_counter() - started
    if written != sum(len(b) for b in batches):
        raise SystemExit(f"baseline F4 wrote {written} rows, expected {sum(len(b) for b in batches)}")
    return len(rows) / seconds


def run_baseline_f3(config: LoadedConfig, rows: list[tuple[Any, ...]], batch: int) -> float:
    with psycopg.connect(config.dsn("citizen"), autocommit=True) as cz:
        cz.execute("DROP TABLE IF EXISTS public.bench_f3_target")
        cz.execute("CREATE TABLE public.bench_f3_target (LIKE public.eligibility_hints INCLUDING ALL)")
        cz.execute("ALTER TABLE public.bench_f3_target ADD FOREIGN KEY (citizen_id) REFERENCES public.citizens,"
                   " ADD FOREIGN KEY (scheme_id) REFERENCES public.schemes")
        cz.execute("INSERT INTO public.bench_f3_target SELECT * FROM public.eligibility_hints")
        cz.execute("VACUUM (ANALYZE) public.bench_f3_target")
        cz.execute("CHECKPOINT")
    batches = [dedupe(rows[i:i + batch], 2) for i in range(0, len(rows), batch)]
    statement = ("INSERT INTO public.bench_f3_target AS t (citizen_id, scheme_id, rank, score_band, reasons,"
                 " updated_at) SELECT * FROM bench_stage ON CONFLICT (citizen_id, scheme_id) DO UPDATE"
                 " SET rank = excluded.rank, score_band = excluded.score_band, reasons = excluded.reasons,"
                 " updated_at = excluded.updated_at")
    with psycopg.connect(config.dsn("citizen")) as cz:
        cz.execute("CREATE TEMP TABLE bench_stage (citizen_id uuid, scheme_id bigint, rank smallint, score_band text,"
                   " reasons jsonb, updated_at timestamptz) ON COMMIT DELETE ROWS")
        cz.commit()
        cur = cz.cursor()
        started = time.perf_counter()
        for b in batches:
            with cur.copy("COPY bench_stage FROM STDIN") as copy:
                for row in b:
                    copy.write_row(row)
            cur.execute(statement)
            cz.commit()
        seconds = time.perf_counter() - started
    return len(rows) / seconds


# --------------------------------------------------------------------------- report


def med(values: list[float]) -> float:
    return statistics.median(values)


def summarize(runs: list[CivicRun], baselines: dict[str, Baseline], args: argparse.Namespace,
              settings: dict[str, str], capture: dict[str, int], seed_seconds: float) -> dict[str, Any]:
    def figures(flow: str) -> dict[str, Any]:
        live = [r for r in runs if r.flow == flow and r.mode == "live" and r.wait_ms is None]
        backlog = [r for r in runs if r.flow == flow and r.mode == "backlog" and r.wait_ms is None]
        return {
            "end_to_end_live_events_per_s": round(med([r.e2e_rate for r in live])),
            "drain_events_per_s": round(med([r.drain_rate or 0.0 for r in backlog])),
            "end_to_end_backlog_events_per_s": round(med([r.e2e_rate for r in backlog])),
            "source_write_rows_per_s": round(med([r.write_rate for r in backlog + live])),
            "drain_mean_batch_events": round(med([r.mean_batch for r in backlog])),
            "live_mean_batch_events": round(med([r.mean_batch for r in live])),
        }

    f4, f3 = figures(F4), figures(F3)
    sensitivity: dict[str, Any] = {}
    for flow in (F4, F3):
        extra = [r for r in runs if r.flow == flow and r.wait_ms is not None]
        if extra:
            sensitivity[flow.lower()] = {
                "batch_max_wait_ms": extra[0].wait_ms,
                "drain_events_per_s": round(med([r.drain_rate or 0.0 for r in extra])),
                "end_to_end_backlog_events_per_s": round(med([r.e2e_rate for r in extra])),
                "drain_mean_batch_events": round(med([r.mean_batch for r in extra])),
            }
    base = {k: {"batch": b.batch, "rows_per_s": round(med(b.rows_per_s)),
                "samples": [round(x) for x in b.rows_per_s]} for k, b in baselines.items()}
    limit_name = max((k for k in base if k.startswith("f4")), key=lambda k: base[k]["rows_per_s"])
    limit = base[limit_name]["rows_per_s"]
    f3_base = base["f3_upsert_max_changes"]["rows_per_s"]
    if "f4" in sensitivity:
        sensitivity["f4"]["drain_ratio_to_limit"] = round(sensitivity["f4"]["drain_events_per_s"] / limit, 4)
    ratios = {
        "f4_drain": f4["drain_events_per_s"] / limit,
        "f4_end_to_end_live": f4["end_to_end_live_events_per_s"] / limit,
        "f4_end_to_end_backlog": f4["end_to_end_backlog_events_per_s"] / limit,
        "f3_drain_vs_f3_baseline": f3["drain_events_per_s"] / f3_base,
        "f3_end_to_end_live_vs_f3_baseline": f3["end_to_end_live_events_per_s"] / f3_base,
    }
    return {
        "server": settings, "cpus": os.cpu_count(), "repeat": args.repeat, "changes": args.changes,
        "txn_rows": args.txn_rows, "citizens": args.citizens, "seed_seconds": round(seed_seconds, 1),
        "capture": capture, "f4": f4, "f3": f3, "baselines": base, "sensitivity": sensitivity,
        "f4_limit": {"baseline": limit_name, "rows_per_s": limit},
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "targets": {f"F4 {k[3:].replace('_', ' ')} >= {TARGET_RATIO:.0%} of the limit":
                    "PASS" if ratios[k] >= TARGET_RATIO else "MISS"
                    for k in ("f4_drain", "f4_end_to_end_live", "f4_end_to_end_backlog")},
        "runs": [{**asdict(r), "e2e_rate": round(r.e2e_rate), "write_rate": round(r.write_rate),
                  "drain_rate": None if r.drain_rate is None else round(r.drain_rate)} for r in runs],
    }


BASELINE_LABELS = {
    "f4_update_max_changes": "F4  COPY + UPDATE ... FROM stage",
    "f4_upsert_max_changes": "F4  COPY + INSERT ... ON CONFLICT DO UPDATE",
    "f4_update_worker_batch": "F4  COPY + UPDATE ... FROM stage",
    "f4_upsert_worker_batch": "F4  COPY + INSERT ... ON CONFLICT DO UPDATE",
    "f3_upsert_max_changes": "F3  COPY + INSERT ... ON CONFLICT DO UPDATE (hints + FKs)",
}


def print_table(report: dict[str, Any]) -> None:
    print(settings_line(report["server"]))
    cap = report["capture"]
    print(f"{report['cpus']} CPUs; {report['changes']:,} source changes per run in transactions of "
          f"{report['txn_rows']} rows (server-side procedure); worker defaults batch_max_changes="
          f"{cap['batch_max_changes']} batch_max_wait_ms={cap['batch_max_wait_ms']}; medians of "
          f"{report['repeat']} repeat(s); CHECKPOINT before every measured run")
    print()
    header = f"{'flow':4}  {'measurement':<74}  {'events/s':>9}"
    print(header)
    print("-" * len(header))
    for flow in ("f4", "f3"):
        f = report[flow]
        name = flow.upper()
        print(f"{name:4}  {'drain: worker started after all changes were committed (start -> caught up)':<74}  "
              f"{f['drain_events_per_s']:>9,}")
        print(f"{name:4}  {'end to end, worker live while writing (1st source -> last target commit)':<74}  "
              f"{f['end_to_end_live_events_per_s']:>9,}")
        print(f"{name:4}  {'end to end, backlog: write phase (worker stopped) + drain':<74}  "
              f"{f['end_to_end_backlog_events_per_s']:>9,}")
        print(f"{name:4}  {'  (the source writer alone: 1st -> last source commit)':<74}  "
              f"{f['source_write_rows_per_s']:>9,}")
        print(f"{'':4}  mean events per worker batch: drain {f['drain_mean_batch_events']:,}, "
              f"live {f['live_mean_batch_events']:,}")
    print()
    print("baseline: the same rows into a copy of the same target table, COPY into a temp stage + one statement,")
    print("COMMIT per batch (rows/s = source rows / wall time)")
    for key, b in report["baselines"].items():
        label = f"{BASELINE_LABELS[key]}, {b['batch']:,} rows/commit"
        print(f"{'':4}  {label:<74}  {b['rows_per_s']:>9,}")
    print()
    r = report["ratios"]
    lim = report["f4_limit"]
    print(f"F4 vs the limit ({lim['rows_per_s']:,} rows/s, {lim['baseline']}):")
    for key, label in (("f4_drain", "drain"), ("f4_end_to_end_live", "end to end, live"),
                       ("f4_end_to_end_backlog", "end to end, backlog")):
        print(f"  {label:<22} {r[key]:>6.1%}  {'PASS' if r[key] >= TARGET_RATIO else 'MISS'} (target >= "
              f"{TARGET_RATIO:.0%})")
    print(f"F3 (no target) vs its row baseline: drain {r['f3_drain_vs_f3_baseline']:.1%}, end to end live "
          f"{r['f3_end_to_end_live_vs_f3_baseline']:.1%}")
    for flow, sens in report["sensitivity"].items():
        extra = (f" = {sens['drain_ratio_to_limit']:.1%} of the F4 limit (for context, not the target)"
                 if "drain_ratio_to_limit" in sens else "")
        print(f"sensitivity, NOT the configured default: {flow.upper()} with batch_max_wait_ms="
              f"{sens['batch_max_wait_ms']}: drain {sens['drain_events_per_s']:,} events/s (mean batch "
              f"{sens['drain_mean_batch_events']:,} events){extra}; end to end backlog "
              f"{sens['end_to_end_backlog_events_per_s']:,}")
    print()
    print("where the time goes (last repeat; phase timers around the worker's methods until it caught up, CPU seconds")
    print("of the worker thread and of the PostgreSQL backends serving it, from /proc):")
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in report["runs"]:
        last[(run["flow"], run["mode"], run["wait_ms"] if run["wait_ms"] is not None else -1)] = run
    for (flow, mode, wait), run in sorted(last.items()):
        wall = run["drain_seconds"] if mode == "backlog" else run["e2e_seconds"]
        what = "worker start -> caught up" if mode == "backlog" else "1st source -> last target commit"
        label = f"{mode}, batch_max_wait_ms={wait}" if wait >= 0 else mode
        print(f"  {flow} {label}: {wall:.2f}s ({what}); {run['batches']} batches of {run['mean_batch']:.0f} events;"
              f" dead letters {run['dead_letters']}; check: {run['check']}")
        cpu = ", ".join(f"{k} {v:.2f}s" for k, v in run["backend_cpu"].items())
        print(f"      CPU: worker thread {run['worker_thread_cpu']:.2f}s, {cpu}")
        for name, seconds in run["timers"].items():
            print(f"      {name:<66} {seconds:7.2f}s")


# --------------------------------------------------------------------------- main


def measure(args: argparse.Namespace, server: LocalPostgres) -> dict[str, Any]:
    environ = environ_for(server, "cdc", secrets.token_hex(16))
    config = load_config(reference_config_path(), environ=environ)
    world, seed_seconds = prepare(config, args.citizens)
    settings = server_settings(config.dsn("citizen"))
    capture = config.model.connections["warehouse"].capture
    max_changes = capture.batch_max_changes
    rng = random.Random(20261102)
    plan4 = f4_plan(config, world, args.changes, rng)
    load_plan(config, "bench_f4_plan", plan4.rows)
    runs: list[CivicRun] = []
    baselines: dict[str, Baseline] = {}
    variants: list[tuple[str, int | None]] = [("live", None), ("backlog", None)]
    if args.also_wait_ms is not None and args.also_wait_ms != capture.batch_max_wait_ms:
        variants.append(("backlog", args.also_wait_ms))
    for i in range(args.repeat):
        for mode, wait in variants:
            reset_f4_target(config)
            first_id = world.next_decision
            world.next_decision += args.changes
            run = run_civicsync(environ, F4, mode, args.changes, args.txn_rows, first_id, args.timeout,
                                lambda: check_f4(config, plan4), wait)
            runs.append(run)
            log(f"repeat {i + 1}: F4 {mode}{'' if wait is None else f' (batch_max_wait_ms={wait})'}: end to end "
                f"{run.e2e_rate:,.0f} events/s" + (f", drain {run.drain_rate:,.0f} events/s" if run.drain_rate else "")
                + f", writer {run.write_rate:,.0f} rows/s, {run.batches} batches; check {run.check}")
        reset_f4_target(config)
        drained = [r for r in runs if r.flow == F4 and r.mode == "backlog" and r.wait_ms is None][-1]
        worker_batch = max(args.txn_rows, round(drained.mean_batch / args.txn_rows) * args.txn_rows)
        for key, batch, upsert in (("f4_update_max_changes", max_changes, False),
                                   ("f4_upsert_max_changes", max_changes, True),
                                   ("f4_update_worker_batch", worker_batch, False),
                                   ("f4_upsert_worker_batch", worker_batch, True)):
            rps = run_baseline_f4(config, plan4.target_rows, batch, upsert)
            baselines.setdefault(key, Baseline(key, batch)).rows_per_s.append(rps)
            log(f"repeat {i + 1}: baseline {key} ({batch} rows/commit): {rps:,.0f} rows/s")
        plan3: F3Plan | None = None
        for mode, wait in variants:
            plan3 = f3_plan(world, args.changes, args.txn_rows, rng)
            load_plan(config, "bench_f3_plan", plan3.rows)
            p = plan3
            run = run_civicsync(environ, F3, mode, args.changes, args.txn_rows, 0, args.timeout,
                                lambda p=p: check_f3(config, p, rng), wait)  # type: ignore[misc]
            runs.append(run)
            log(f"repeat {i + 1}: F3 {mode}{'' if wait is None else f' (batch_max_wait_ms={wait})'}: end to end "
                f"{run.e2e_rate:,.0f} events/s" + (f", drain {run.drain_rate:,.0f} events/s" if run.drain_rate else "")
                + f", writer {run.write_rate:,.0f} rows/s, {run.batches} batches; check {run.check}")
        assert plan3 is not None
        rps = run_baseline_f3(config, plan3.target_rows, max_changes)
        baselines.setdefault("f3_upsert_max_changes", Baseline("f3_upsert_max_changes", max_changes)) \
            .rows_per_s.append(rps)
        log(f"repeat {i + 1}: baseline f3_upsert_max_changes ({max_changes} rows/commit): {rps:,.0f} rows/s")
    return summarize(runs, baselines, args, settings,
                     {"batch_max_changes": max_changes, "batch_max_wait_ms": capture.batch_max_wait_ms}, seed_seconds)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=100_000, help="source changes per run (default 100,000)")
    parser.add_argument("--txn-rows", type=int, default=100, help="rows per source transaction (default 100)")
    parser.add_argument("--citizens", type=int, default=150_000, help="citizens to seed (default 150,000)")
    parser.add_argument("--repeat", type=int, default=1, help="measured repeats (default 1)")
    parser.add_argument("--also-wait-ms", type=int, default=50,
                        help="also drain each flow once per repeat with this batch_max_wait_ms, labelled as a "
                             "sensitivity run (default 50; skipped if equal to the config default; -1: skip)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a run may take to catch up")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.also_wait_ms is not None and args.also_wait_ms < 0:
        args.also_wait_ms = None
    if args.repeat < 1 or args.changes < 1 or args.txn_rows < 1:
        parser.error("need --repeat, --changes and --txn-rows >= 1")
    signal.signal(signal.SIGTERM, _terminate)
    return run_on_private_server(lambda server: measure(args, server), print_table, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
