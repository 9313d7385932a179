"""`civicsync demo`: the reference deployment on a local PostgreSQL, and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from civicsync.cli.common import JsonOpt, VerboseOpt, out, results_table, setup, user_errors
from civicsync.cli.tables import FitTable


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the ``civicsync`` app."""
    app.command()(demo)


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
    from civicsync.reference.demo import run_demo, stop_demo

    setup(verbose)
    with user_errors():
        if stop:
            stop_demo(data_dir, port)
            out.print("demo PostgreSQL stopped")
            return
        report = run_demo(data_dir=data_dir, port=port, citizens=citizens, console=None if as_json else out,
                          api_port=api_port, serve=serve, print_report=print_report)
    if as_json:
        out.print_json(data=report)
    if not all(r["ok"] for r in report["flows"]) or report["cdc"]["errors"] or any(
            c["latency_ms"] is None for c in report["cdc"]["changes"]):
        raise typer.Exit(1)


def print_report(console: Console, report: dict[str, Any], env_file: Path, citizen_dsn: str) -> None:
    """The demo's report: the scheduled runs, the CDC latencies, masking samples, and what to try next."""
    console.print(results_table(report["flows"], title="scheduled flows: one run each, now"))
    for r in report["flows"]:
        if not r["ok"]:
            console.print(f"[red]{r['id']} failed:[/] {r['error']}", highlight=False)
        rec = r.get("reconcile")
        if rec and rec.get("status") == "skipped":
            console.print(f"{r['id']} reconciliation skipped: {'; '.join(rec.get('notes') or [])}", highlight=False)
        elif rec:
            found = ", ".join(f"{rec.get(k, 0)} {k}" for k in ("missing", "extra", "different"))
            console.print(f"{r['id']} reconciliation ({rec.get('method', '?')}): found {found}; repaired "
                          f"{rec.get('repaired', 0)}" + (f" — [red]{rec['error']}[/]" if rec.get("error") else ""),
                          highlight=False)
    table = FitTable(["flow", "change", "source commit → visible in target"], title="real-time flows (CDC)")
    for c in report["cdc"]["changes"]:
        latency = "[red]not seen in 10 s[/]" if c["latency_ms"] is None else f"{c['latency_ms']:.0f} ms"
        table.add_row(c["flow"], c["change"], latency)
    console.print(table)
    for e in report["cdc"]["errors"]:
        console.print(f"[red]CDC worker error:[/] {e}", highlight=False)
    if report["samples"]:
        table = FitTable(["rule", "source holds", "target holds"], title="masking at work")
        for sample in report["samples"]:
            table.add_row(*sample)
        console.print(table)
    console.print(
        f"Next: `source {env_file}`, then `civicsync run` (the service: status page and /metrics on "
        f"127.0.0.1:8787), `civicsync status`, `civicsync reconcile F8`, `civicsync runs`, or psql '{citizen_dsn}'. "
        "`civicsync demo --serve` keeps the demo's service up; `civicsync demo --stop` stops its PostgreSQL.",
        highlight=False)
