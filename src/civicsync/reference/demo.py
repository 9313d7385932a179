"""`civicsync demo`: the reference deployment end to end on a local PostgreSQL.

Brings up (or reuses) a private PostgreSQL with wal_level=logical, creates smart_warehouse and
smart_citizen, seeds them on the first run, makes a few scripted changes so every re-run has
fresh work to show, runs every flow that exists so far and prints what each did, with samples
that show the masking rules at work.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from civicsync.config import LoadedConfig, load_config
from civicsync.localpg import LocalPostgres, LocalPostgresError
from civicsync.provision.databases import init_databases
from civicsync.reference.seed import seed
from civicsync.service import Service, ServiceOptions

DATABASES = {"warehouse": "smart_warehouse", "citizen": "smart_citizen"}


def _server(data_dir: Path, port: int) -> LocalPostgres:
    return LocalPostgres(data_dir.resolve() / "pg", port)


def stop_demo(data_dir: Path, port: int) -> None:
    """Stop the demo's PostgreSQL if it runs."""
    _server(data_dir, port).stop()


def _pseudonym_key(data_dir: Path) -> str:
    # Stable across demo runs (pseudonyms must not change), never committed anywhere.
    if key := os.environ.get("CIVICSYNC_PSEUDONYM_KEY"):
        return key
    path = data_dir / "pseudonym.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _environ(server: LocalPostgres, data_dir: Path) -> dict[str, str]:
    return {
        "CIVICSYNC_WAREHOUSE_DSN": server.dsn(DATABASES["warehouse"]),
        "CIVICSYNC_CITIZEN_DSN": server.dsn(DATABASES["citizen"]),
        "CIVICSYNC_PSEUDONYM_KEY": _pseudonym_key(data_dir),
    }


def _is_seeded(config: LoadedConfig) -> bool:
    with psycopg.connect(config.dsn("warehouse")) as conn:
        row = conn.execute("SELECT count(*) FROM public.citizen_profiles").fetchone()
    return bool(row and row[0])


def _scripted_changes(config: LoadedConfig) -> list[str]:
    """A few source changes, so a re-run shows incremental pick-up and a conflict."""
    with psycopg.connect(config.dsn("warehouse")) as wh:
        wh.execute("UPDATE citizen_profiles SET occupation = occupation, updated_at = now()"
                   " WHERE citizen_id IN (SELECT citizen_id FROM citizen_profiles ORDER BY citizen_id LIMIT 5)")
        wh.execute("UPDATE schemes SET name = name || ' (revised)', updated_at = now()"
                   " WHERE scheme_id = (SELECT min(scheme_id) FROM schemes WHERE status = 'ACTIVE')"
                   " AND name NOT LIKE '%(revised)'")
    first = "(SELECT citizen_id FROM {} ORDER BY citizen_id LIMIT 1)"
    with psycopg.connect(config.dsn("warehouse")) as wh:
        wh.execute("UPDATE citizen_profiles SET phone = '9111111111', updated_at = now()"
                   " WHERE citizen_id = " + first.format("citizen_profiles"))
    with psycopg.connect(config.dsn("citizen")) as cz:
        # The citizen edits the same phone on the portal just after the registry did: both sides
        # changed since the last sync, the portal's edit is newer, so the pre-fill keeps it and
        # records the conflict.
        cz.execute("UPDATE citizens SET phone = '9000000001', updated_at = now()"
                   " WHERE citizen_id = " + first.format("citizens"))
    return ["5 warehouse profiles touched", "1 scheme renamed", "1 portal phone edit racing a registry edit"]


def _samples(config: LoadedConfig) -> list[tuple[str, str, str]]:
    """(what, source value shape, target value) rows showing masking at work."""
    samples = []
    with psycopg.connect(config.dsn("citizen")) as cz:
        row = cz.execute("SELECT national_id_masked FROM citizens WHERE national_id_masked IS NOT NULL"
                         " ORDER BY citizen_id LIMIT 1").fetchone()
        if row:
            samples.append(("F2 national_id → national_id_masked", "12 digits", str(row[0])))
    with psycopg.connect(config.dsn("warehouse")) as wh:
        row = wh.execute("SELECT citizen_ref, comment FROM analytics.feedback"
                         " WHERE comment ~ '\\[(PHONE|EMAIL|ID)\\]' ORDER BY feedback_id LIMIT 1").fetchone()
        if row:
            samples.append(("F12 citizen_id → citizen_ref", "uuid", str(row[0])))
            samples.append(("F12 comment (redacted)", "free text with PII", str(row[1])[:90]))
    return samples


def _timed_changes(config: LoadedConfig) -> list[dict[str, Any]]:
    """Make one change per CDC flow and time its arrival on the other side (source commit → visible)."""
    results = []
    wh = psycopg.connect(config.dsn("warehouse"), autocommit=True)
    cz = psycopg.connect(config.dsn("citizen"), autocommit=True)
    try:
        app = _first_args(cz, "SELECT application_id FROM applications WHERE status IN ('SUBMITTED',"
                              " 'UNDER_REVIEW') ORDER BY application_id LIMIT 1", ())
        citizen = _first_args(cz, "SELECT citizen_id::text FROM citizens c WHERE EXISTS (SELECT 1 FROM"
                                  " eligibility_hints h WHERE h.citizen_id = c.citizen_id) ORDER BY 1 LIMIT 1", ())
        best = None if citizen is None else _first_args(
            wh, "SELECT scheme_id FROM eligibility_predictions WHERE citizen_id = %s AND status IN ('ELIGIBLE',"
                " 'LIKELY') ORDER BY score DESC, prediction_id LIMIT 1", (citizen,))
        draft = _first_args(cz, "SELECT application_id FROM applications WHERE status = 'DRAFT' ORDER BY 1 LIMIT 1",
                            ())
        steps: list[tuple[str, str, psycopg.Connection[Any], str, tuple[Any, ...], psycopg.Connection[Any], str,
                          tuple[Any, ...]]] = []
        if app is not None:
            steps.append((
                "F4", "an officer approves an application", wh,
                "INSERT INTO application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                " decision_code, reason, officer_id, decided_at) SELECT (SELECT coalesce(max(decision_id), 0) + 1"
                " FROM application_decisions), %s, gen_random_uuid(), 1, 'APPR', 'demo', 'OFF-0001', now()",
                (app,), cz, "SELECT status = 'APPROVED' FROM applications WHERE application_id = %s", (app,)))
        if citizen is not None and best is not None:
            steps.append((
                "F3", "the model demotes a citizen's best prediction", wh,
                "UPDATE eligibility_predictions SET status = 'INELIGIBLE', updated_at = now()"
                " WHERE citizen_id = %s AND scheme_id = %s", (citizen, best), cz,
                "SELECT NOT EXISTS (SELECT 1 FROM eligibility_hints WHERE citizen_id = %s AND scheme_id = %s)",
                (citizen, best)))
        if citizen is not None:
            steps.append((
                "F5", "a citizen changes their phone on the portal", cz,
                "UPDATE citizens SET phone = '9000012345', updated_at = now() WHERE citizen_id = %s",
                (citizen,), wh, "SELECT phone = '9000012345' FROM citizen_profiles WHERE citizen_id = %s",
                (citizen,)))
        if draft is not None:
            steps.append((
                "F6", "a citizen submits a draft application", cz,
                "UPDATE applications SET status = 'SUBMITTED', submitted_at = now(), updated_at = now()"
                " WHERE application_id = %s", (draft,), wh,
                "SELECT count(*) > 0 FROM application_events WHERE application_id = %s AND event_type = 'SUBMITTED'",
                (draft,)))
            steps.append((
                "F7", "a citizen uploads a document", cz,
                "INSERT INTO application_documents (document_id, application_id, doc_type, file_name, storage_uri)"
                " SELECT (SELECT coalesce(max(document_id), 0) + 1 FROM application_documents), %s, 'INCOME_CERT',"
                " 'salary.pdf', 's3://portal-docs/demo/salary.pdf'", (draft,), wh,
                "SELECT count(*) > 0 FROM application_documents WHERE application_id = %s AND doc_type = 'INCOME_CERT'",
                (draft,)))
        for flow_id, what, src, change, args, tgt, check, check_args in steps:
            started = time.monotonic()
            src.execute(change, args)
            arrived = None
            while time.monotonic() - started < 10:
                if _first_args(tgt, check, check_args):
                    arrived = time.monotonic() - started
                    break
                time.sleep(0.005)
            results.append({"flow": flow_id, "change": what,
                            "latency_ms": None if arrived is None else round(arrived * 1000, 1)})
    finally:
        wh.close()
        cz.close()
    return results


def _first_args(conn: psycopg.Connection[Any], query: str, args: tuple[Any, ...]) -> Any:
    row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


def _start_workers(service: Service, say: Any) -> float:
    """Start the supervised CDC workers (initial snapshots on the first run) and wait until they
    stream; returns how long that took."""
    started = time.monotonic()
    service.start_workers()
    deadline = time.monotonic() + 600
    workers = service.state.workers
    while time.monotonic() < deadline and not all(w.phase == "running" for w in workers.values()):
        if any(w.restarts for w in workers.values()):
            break
        time.sleep(0.1)
    seconds = time.monotonic() - started
    say(f"CDC workers streaming after {seconds:.1f}s (initial snapshots, if any, included)", highlight=False)
    return seconds


def _run_cdc(service: Service, streaming_after: float, say: Any) -> dict[str, Any]:
    """Start the rest of the service (API, scheduler), time a scripted change per CDC flow."""
    service.start()
    say(f"service started: API {service.url}; making one change per flow and timing its arrival", highlight=False)
    supervisor = service.supervisor
    assert supervisor is not None
    workers = service.state.workers
    timed = _timed_changes(service.config)
    return {"changes": timed, "streaming_after_seconds": round(streaming_after, 3),
            "errors": [f"{w.name}: {w.last_error}" for w in workers.values() if w.restarts],
            "events": sum(w.stats.events for w in supervisor.workers.values()),
            "dead_letters": sum(w.stats.dead_letters for w in supervisor.workers.values())}


def _scheduled_runs(service: Service, *, hybrid: bool) -> list[dict[str, Any]]:
    """Run every scheduled batch (or hybrid) flow once now, through the scheduler's own job (batch run
    + reconciliation)."""
    scheduler = service.scheduler
    assert scheduler is not None
    results = []
    for name in scheduler.flows:
        if (service.config.model.flows[name].kind == "hybrid") != hybrid:
            continue
        result = scheduler.run_flow(name)
        results.append(result or {"flow": name, "id": service.config.model.flows[name].id, "ok": False,
                                  "error": "skipped: a run of this flow was already going"})
    return results


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


ReportPrinter = Callable[[Console, dict[str, Any], Path, str], None]


def run_demo(*, data_dir: Path, port: int, citizens: int, console: Console | None, api_port: int = 0,
             serve: bool = False, print_report: ReportPrinter | None = None) -> dict[str, Any]:
    """Run the demo; print to ``console`` (None: quiet) and return a JSON-ready report. ``print_report``
    (the CLI's) renders the report on ``console`` at the end, with the env file and the citizen DSN."""
    server = _server(data_dir, port)
    say = console.print if console else (lambda *a, **k: None)
    try:
        server.start()
    except LocalPostgresError as exc:
        raise LocalPostgresError(f"{exc}\n(is port {port} taken? try `civicsync demo --port N`)") from None
    say(f"PostgreSQL (wal_level=logical) on 127.0.0.1:{port}, data in {server.datadir}", highlight=False)
    environ = _environ(server, data_dir)
    env_file = data_dir / "demo.env"
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in environ.items()))
    env_file.chmod(0o600)
    config = load_config(environ={**os.environ, **environ})
    init_databases(config)
    report: dict[str, Any] = {"port": port, "databases": DATABASES, "changes": [], "flows": []}
    if _is_seeded(config):
        report["changes"] = _scripted_changes(config)
        say("databases already seeded; made scripted changes: " + "; ".join(report["changes"]), highlight=False)
    else:
        counts = seed(config.dsn("warehouse"), config.dsn("citizen"), citizens)
        report["seeded"] = counts.rows
        say(f"seeded {citizens:,} citizens ({sum(counts.rows.values()):,} rows) in {counts.seconds:.1f}s")
    service = Service(config, ServiceOptions(port=api_port))
    try:
        # Batch flows first (F2 makes the portal's citizens that F8's rows refer to), then the CDC
        # workers, then the hybrid flows: a hybrid's reconciliation waits for its initial snapshot, and
        # run before any worker it waited a whole minute for nothing and skipped.
        report["flows"] = _scheduled_runs(service, hybrid=False)
        streaming = _start_workers(service, say)
        report["flows"] += _scheduled_runs(service, hybrid=True)
        report["cdc"] = _run_cdc(service, streaming, say)
        report["api"] = service.url
        if serve and console:
            console.print(f"serving: status page {service.url}/ , metrics {service.url}/metrics; Ctrl-C to stop",
                          highlight=False)
            _wait_for_interrupt()
    finally:
        service.stop()
    report["samples"] = _samples(config)
    if console and print_report:
        print_report(console, report, env_file, server.dsn(DATABASES["citizen"]))
    return report
