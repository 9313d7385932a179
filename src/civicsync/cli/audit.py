"""`civicsync audit pii [--json]`: scan every target database for raw protected values. Exit 0 when none
is found, 1 when one is (or the scan failed), 2 on bad input. Reports columns and counts, never values."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from civicsync.cli.common import ConfigOpt, JsonOpt, VerboseOpt, load, out, setup, user_errors

audit_app = typer.Typer(help="Check that masking holds in the targets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the audit commands to the CLI."""
    app.add_typer(audit_app, name="audit")


@audit_app.command("pii")
def pii(config: ConfigOpt = None, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Scan every text/json column of every target database (control schema and dead letters included)
    for raw values of the protected sets the config's masking declares; report table.column and counts."""
    from civicsync.audit import run_audit

    setup(verbose)
    with user_errors():
        report = run_audit(load(config))
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        _print(report.as_dict())
    if not report.clean:
        raise typer.Exit(1)


def _print(summary: dict[str, object]) -> None:
    out.print(f"protected sets: {len(summary['protected_sets'])}  columns scanned: {summary['columns_scanned']}"  # type: ignore[arg-type]
              f"  rows scanned: {summary['rows_scanned']}  ({summary['seconds']} s)")
    hits = summary["hits"]
    assert isinstance(hits, list)
    if not hits:
        out.print("[green]clean[/green]: no raw protected value found in any target")
        return
    table = Table("database", "column", "rows", "hits", "protected sets", title="raw protected values found")
    for h in hits:
        table.add_row(h["connection"], h["column"], str(h["rows"]), str(h["hits"]), "; ".join(h["sets"]))
    out.print(table)
