"""`civicsync reconcile FLOW [--repair] [--json]`: find (and repair) what differs between a flow's source
and its target. Exit 0 when they agree (or every difference was repaired), 1 when differences remain
or the run failed, 2 on bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from civicsync.cli.common import ConfigOpt, JsonOpt, VerboseOpt, err, fail, load, out, progress_bars, setup, user_errors

RepairOpt = Annotated[bool, typer.Option("--repair", help="Fix what differs through the flow's own apply path.")]


def register(app: typer.Typer) -> None:
    """Add the reconcile command to the CLI."""
    app.command("reconcile")(reconcile)


def _phases(progress: Progress, flow: str) -> Callable[[str, int, int | None], None]:
    tasks: dict[str, TaskID] = {}

    def report(phase: str, done: int, total: int | None) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(f"{flow}: {phase}", total=total)
        progress.update(tasks[phase], completed=done, total=total)

    return report


def reconcile(
    flow: Annotated[str, typer.Argument(help="Flow name or id (e.g. F2 or profile_prefill).")],
    repair: RepairOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compare what a flow derives from its source with its target, by key; report counts and sample keys
    per class of difference (missing, extra, different, rejected); with --repair, fix them."""
    from civicsync.reconcile import UnknownFlowError, reconcile_flow

    setup(verbose)
    with user_errors():
        loaded = load(config)
        try:
            with progress_bars() as progress:
                result = reconcile_flow(loaded, flow, repair=repair, progress=_phases(progress, flow))
        except UnknownFlowError as exc:
            fail(str(exc), 2)
    summary = result.as_dict()
    if as_json:
        out.print_json(json.dumps(summary, default=str))
    else:
        _print(summary)
    if result.error is not None:
        err.print(f"[bold red]error:[/] {result.error}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def _print(summary: dict[str, object]) -> None:
    status = str(summary["status"])
    colour = {"equal": "green", "repaired": "green", "skipped": "yellow", "different": "yellow",
              "failed": "red"}[status]
    title = (f"{summary['id']} {summary['flow']}: [{colour}]{status}[/] — method {summary['method']}, "
             f"{summary['source_rows']:,} source / {summary['target_rows']:,} target rows, {summary['seconds']:.2f} s")
    table = Table("class", "found", "repaired", "sample keys (differing columns)", title=title)
    samples = summary["samples"]
    assert isinstance(samples, dict)
    for kind in ("missing", "extra", "different", "rejected"):
        keys = samples.get(kind) or []
        shown = "\n".join(
            json.dumps(s["key"]) + (f"  ({', '.join(s['columns'])})" if s["columns"] else "") for s in keys)
        repaired = summary["repaired_by_class"]
        assert isinstance(repaired, dict)
        table.add_row(kind, f"{summary[kind]:,}", f"{repaired[kind]:,}" if summary["repair"] else "-", shown or "-")
    out.print(table)
    notes = summary["notes"]
    assert isinstance(notes, list)
    for note in notes:
        out.print(f"  • {note}", highlight=False, soft_wrap=True)
    if summary["repair"]:
        out.print(f"repaired {summary['repaired']:,} keys", highlight=False)
