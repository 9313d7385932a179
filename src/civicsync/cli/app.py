"""The `civicsync` command line: validate, db init/seed, batch run, runs, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from civicsync.cli import apikey as _apikey
from civicsync.cli import audit as _audit
from civicsync.cli import cdc as _cdc
from civicsync.cli import config_cmd as _config
from civicsync.cli import demo as _demo
from civicsync.cli import kafka as _kafka
from civicsync.cli import reconcile as _reconcile
from civicsync.cli import service as _service
from civicsync.cli import status as _status
from civicsync.cli.common import (
    ConfigOpt,
    JsonOpt,
    VerboseOpt,
    err,
    fail,
    flow_name,
    load,
    out,
    progress_bars,
    progress_callback,
    results_table,
    setup,
    user_errors,
)
from civicsync.cli.tables import FitTable
from civicsync.config import default_config_path, load_config
from civicsync.errors import ConfigError

app = typer.Typer(help="civicsync: keep smart_warehouse and smart_citizen in step.", no_args_is_help=True,
                  add_completion=False)
db_app = typer.Typer(help="Create and seed the databases.", no_args_is_help=True)
batch_app = typer.Typer(help="Run batch flows now.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")

# --------------------------------------------------------------------------- validate


@app.command()
def validate(
    config_file: Annotated[Path | None, typer.Argument(help="Config file to check.", show_default=False)] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    no_secrets: Annotated[bool, typer.Option(
        "--no-secrets", help="Check everything but the environment: no DSN or secret variable is needed "
                             "(for a department's CI).")] = False,
) -> None:
    """Load and check a config: exit 0 with a summary, or exit 2 listing every problem."""
    path = config_file or config or default_config_path()
    try:
        loaded = load_config(path, resolve_env=not no_secrets)
    except ConfigError as exc:
        if as_json:
            out.print_json(data={"ok": False, "file": str(path), "problems": [
                {"file": p.file, "path": p.path, "message": p.message} for p in exc.problems]})
            raise typer.Exit(2) from None
        with user_errors():
            raise
    model = loaded.model
    ids = ", ".join(f.id for f in model.flows.values())
    if as_json:
        out.print_json(data={"ok": True, "file": str(path), "connections": list(model.connections),
                             "flows": {n: f.id for n, f in model.flows.items()},
                             "deprecations": [{"path": d.path, "message": d.message} for d in loaded.deprecations]})
        return
    out.print(f"{path}: OK — {len(model.connections)} connections, {len(model.flows)} flows ({ids})"
              + (" (environment not checked: --no-secrets)" if no_secrets else ""), highlight=False)


@app.command()
def flows(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the configured flows."""
    with user_errors():
        loaded = load(config)
    rows = [{"flow": n, "id": f.id, "kind": f.kind, "mode": f.mode, "schedule": f.schedule,
             "source": f"{f.source.connection}:{f.source.table}", "target": f"{f.target.connection}:{f.target.table}"}
            for n, f in loaded.model.flows.items()]
    if as_json:
        out.print_json(data=rows)
        return
    table = FitTable(["id", "flow", "kind", "mode", "schedule (UTC)", "source", "target"])
    for r in rows:
        table.add_row(r["id"], r["flow"], r["kind"], r["mode"], r["schedule"] or "-", r["source"], r["target"])
    out.print(table)


# --------------------------------------------------------------------------- db


@db_app.command("init")
def db_init(config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Create the databases, their schemas and civicsync's control schema (safe to re-run)."""
    from civicsync.provision.databases import init_databases

    setup(verbose)
    with user_errors():
        results = init_databases(load(config))
    for r in results:
        what = "created" if r.created else "exists"
        applied = ", ".join(r.applied) if r.applied else "up to date"
        out.print(f"{r.connection}: database {what}; migrations: {applied}", highlight=False)


@db_app.command("seed")
def db_seed(
    citizens: Annotated[int, typer.Option(min=1, help="How many citizens to generate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 42,
    only: Annotated[str, typer.Option(help="'all' or 'profiles' (warehouse schemes and profiles only).")] = "all",
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fill both reference databases with deterministic synthetic data (replaces earlier seed data)."""
    from civicsync.reference.seed import seed as run_seed

    setup(verbose)
    if only not in ("all", "profiles"):
        fail("--only must be 'all' or 'profiles'", 2)
    with user_errors():
        loaded = load(config)
        with progress_bars() as progress:
            tasks: dict[str, Any] = {}

            def advance(table: str, n: int) -> None:
                if table not in tasks:
                    tasks[table] = progress.add_task(f"seed {table}", total=None)
                progress.advance(tasks[table], n)

            counts = run_seed(loaded.dsn("warehouse"), loaded.dsn("citizen"), citizens, seed=seed,
                              only=only, progress=advance)  # type: ignore[arg-type]
    table = Table("table", "rows", title=f"seeded in {counts.seconds:.1f}s")
    for name, n in counts.rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)


# --------------------------------------------------------------------------- batch


@batch_app.command("run")
def batch_run(
    flow: Annotated[str, typer.Argument(help="Flow name or id (e.g. F2 or profile_prefill).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run one batch flow now and print what it did."""
    from civicsync.jobs.batch import run_batch

    setup(verbose)
    with user_errors():
        loaded = load(config)
        flow_name(loaded, flow, batch=True)
        with progress_bars() as progress:
            result = run_batch(loaded, flow, progress=progress_callback(progress, f"{flow}: rows read"))
    summary = result.as_dict()
    if as_json:
        out.print_json(data=summary)
    else:
        out.print(results_table([summary]))
        if result.error is not None:
            err.print(f"[bold red]error:[/] {result.error}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def runs(
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 20,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show recent batch runs recorded in every target database."""
    from civicsync.control.store import recent_runs
    from civicsync.db.connect import connect

    with user_errors():
        loaded = load(config)
        name = flow_name(loaded, flow) if flow else None
        records = []
        targets = {f.target.connection for f in loaded.model.flows.values()}
        for conn_name in sorted(targets):
            with connect(loaded.dsn(conn_name), purpose="runs", autocommit=True) as conn:
                records += recent_runs(conn, name, limit)
    records.sort(key=lambda r: r.started_at, reverse=True)
    records = records[:limit]
    if as_json:
        out.print_json(json.dumps([vars(r) for r in records], default=str))
        return
    table = FitTable(["run", "flow", "started (UTC)", "status", "attempts", "read", "written", "rejected",
                      "conflicts", "error"])
    for r in records:
        table.add_row(str(r.run_id), r.flow, r.started_at.strftime("%Y-%m-%d %H:%M:%S"), r.status, str(r.attempts),
                      f"{r.rows_read:,}", f"{r.rows_written:,}", f"{r.rows_rejected:,}", f"{r.conflicts:,}",
                      (r.error or "")[:80])
    out.print(table)


_apikey.register(app)
_audit.register(app)
_cdc.register(app)
_config.register(app)
_kafka.register(app)
_reconcile.register(app)
_status.register(app)
_demo.register(app)

_service.register(app)


def main() -> None:
    """Console entry point."""
    app()
