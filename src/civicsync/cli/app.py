"""The `civicsync` command line: validate, db init/seed, batch run, runs, demo."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from civicsync.cli.tables import FitTable
from civicsync.config import LoadedConfig, default_config_path, load_config
from civicsync.errors import CivicsyncError, ConfigError, UsageError

app = typer.Typer(help="civicsync: keep smart_warehouse and smart_citizen in step.", no_args_is_help=True,
                  add_completion=False)
db_app = typer.Typer(help="Create and seed the databases.", no_args_is_help=True)
batch_app = typer.Typer(help="Run batch flows now.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CIVICSYNC_CONFIG", help="Config file (default: the reference config)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (INFO level).")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn civicsync errors into a clear message and exit code, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        err.print(f"[bold red]config error[/] ({len(exc.problems)} problem{'s' * (len(exc.problems) != 1)}):")
        for problem in exc.problems:
            err.print(f"  {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except UsageError as exc:
        _fail(str(exc), 2)
    except CivicsyncError as exc:
        _fail(str(exc))


def _load(config: Path | None) -> LoadedConfig:
    return load_config(config)


def flow_name(loaded: LoadedConfig, flow: str, *, batch: bool = False) -> str:
    """The config name of the flow called ``flow`` (name or id); a :class:`UsageError` (exit 2) for an
    unknown flow, or, with ``batch``, for one that has no batch path."""
    try:
        name = loaded.model.flow_name(flow)
    except KeyError:
        raise UsageError(f"no flow called {flow!r}; known: {', '.join(loaded.model.flows)}") from None
    if batch and not loaded.model.flows[name].batches:
        raise UsageError(f"flow {name} is a {loaded.model.flows[name].kind} flow; it has no batch run "
                         "(its events are applied by `civicsync cdc run` / `civicsync run`)")
    return name


def _setup(verbose: bool) -> None:
    from civicsync.logs import setup_logging

    setup_logging(verbose)


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
        with _user_errors():
            raise
    model = loaded.model
    ids = ", ".join(f.id for f in model.flows.values())
    if as_json:
        out.print_json(data={"ok": True, "file": str(path), "connections": list(model.connections),
                             "flows": {n: f.id for n, f in model.flows.items()}})
        return
    out.print(f"{path}: OK — {len(model.connections)} connections, {len(model.flows)} flows ({ids})"
              + (" (environment not checked: --no-secrets)" if no_secrets else ""), highlight=False)


@app.command()
def flows(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the configured flows."""
    with _user_errors():
        loaded = _load(config)
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
    from civicsync.db.provision import init_databases

    _setup(verbose)
    with _user_errors():
        results = init_databases(_load(config))
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
    from civicsync.db.seed import seed as run_seed

    _setup(verbose)
    if only not in ("all", "profiles"):
        _fail("--only must be 'all' or 'profiles'", 2)
    with _user_errors():
        loaded = _load(config)
        with _progress() as progress:
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


@contextmanager
def _progress() -> Iterator[Progress]:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
    with progress:
        yield progress


def _progress_callback(progress: Progress, description: str) -> Callable[[int], None]:
    task = progress.add_task(description, total=None)
    return lambda rows: progress.update(task, completed=rows)


def results_table(results: list[dict[str, Any]], title: str | None = None) -> FitTable:
    """Per-flow run results as a table (one block per flow where the table would not fit)."""
    table = FitTable(["id", "flow", "outcome", "read", "written", "deleted", "rejected", "conflicts", "attempts",
                      "seconds"], title=title,
                     justify_right=["read", "written", "deleted", "rejected", "conflicts", "attempts", "seconds"])
    for r in results:
        outcome = "[green]ok[/]" if r["ok"] else "[red]FAILED[/]"
        table.add_row(r["id"], r["flow"], outcome, f"{r['rows_read']:,}", f"{r['rows_written']:,}",
                      f"{r['rows_deleted']:,}", f"{r['rows_rejected']:,}", f"{r['conflicts']:,}",
                      str(r["attempts"]), f"{r['seconds']:.2f}")
    return table


@batch_app.command("run")
def batch_run(
    flow: Annotated[str, typer.Argument(help="Flow name or id (e.g. F2 or profile_prefill).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run one batch flow now and print what it did."""
    from civicsync.jobs.batch import run_batch

    _setup(verbose)
    with _user_errors():
        loaded = _load(config)
        flow_name(loaded, flow, batch=True)
        with _progress() as progress:
            result = run_batch(loaded, flow, progress=_progress_callback(progress, f"{flow}: rows read"))
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

    with _user_errors():
        loaded = _load(config)
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


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    citizens: Annotated[int, typer.Option(min=10, help="Citizens to seed on the first run.")] = 2000,
    data_dir: Annotated[Path, typer.Option(help="Where the demo's PostgreSQL lives.")] = Path(".civicsync/demo"),
    port: Annotated[int, typer.Option(help="Loopback port of the demo's PostgreSQL.")] = 54329,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the demo's PostgreSQL and exit.")] = False,
    api_port: Annotated[int, typer.Option(help="Port of the service's HTTP API (0: any free port).")] = 0,
    serve: Annotated[bool, typer.Option("--serve", help="Keep the service running after the report.")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the reference deployment on a local PostgreSQL: create, seed, then the service (scheduler runs
    every batch flow once, CDC workers stream, the API serves), time a change per CDC flow, report."""
    from civicsync.demo import run_demo, stop_demo

    _setup(verbose)
    with _user_errors():
        if stop:
            stop_demo(data_dir, port)
            out.print("demo PostgreSQL stopped")
            return
        report = run_demo(data_dir=data_dir, port=port, citizens=citizens, console=None if as_json else out,
                          api_port=api_port, serve=serve)
    if as_json:
        out.print_json(data=report)
    if not all(r["ok"] for r in report["flows"]) or report["cdc"]["errors"] or any(
            c["latency_ms"] is None for c in report["cdc"]["changes"]):
        raise typer.Exit(1)


from civicsync.cli import apikey as _apikey  # noqa: E402
from civicsync.cli import audit as _audit  # noqa: E402
from civicsync.cli import cdc as _cdc  # noqa: E402  (registers its commands)
from civicsync.cli import kafka as _kafka  # noqa: E402
from civicsync.cli import reconcile as _reconcile  # noqa: E402

_apikey.register(app)
_audit.register(app)
_cdc.register(app)
_kafka.register(app)
_reconcile.register(app)

from civicsync.cli import service as _service  # noqa: E402

_service.register(app)


def main() -> None:
    """Console entry point."""
    app()
