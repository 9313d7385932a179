"""`civicsync demo`: the reference deployment end to end on a local PostgreSQL.

Brings up (or reuses) a private PostgreSQL with wal_level=logical, creates smart_warehouse and
smart_citizen, seeds them on the first run, makes a few scripted changes so every re-run has
fresh work to show, runs every flow that exists so far and prints what each did, with samples
that show the masking rules at work.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from civicsync.config import LoadedConfig, load_config
from civicsync.db.provision import init_databases
from civicsync.db.seed import seed
from civicsync.jobs.batch import run_batch
from civicsync.localpg import LocalPostgres, LocalPostgresError

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


def run_demo(*, data_dir: Path, port: int, citizens: int, console: Console | None) -> dict[str, Any]:
    """Run the demo; print to ``console`` (None: quiet) and return a JSON-ready report."""
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
    for name, flow in config.model.flows.items():
        if flow.kind == "cdc":
            continue  # CDC flows are not part of the demo yet
        result = run_batch(config, name)
        report["flows"].append(result.as_dict())
    if console:
        from civicsync.cli import results_table

        console.print(results_table(report["flows"], title="civicsync demo: one run of every flow"))
        for r in report["flows"]:
            if not r["ok"]:
                console.print(f"[red]{r['id']} failed:[/] {r['error']}", highlight=False)
        samples = _samples(config)
        if samples:
            table = Table("rule", "source holds", "target holds", title="masking at work")
            for s in samples:
                table.add_row(*s)
            console.print(table)
        console.print(
            f"Next: `source {env_file}` then `civicsync runs`, `civicsync batch run F2`, or "
            f"psql '{server.dsn(DATABASES['citizen'])}'. Stop the server: `civicsync demo --stop`.",
            highlight=False)
    report["samples"] = _samples(config)
    return report
