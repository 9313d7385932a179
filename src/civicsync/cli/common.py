"""What every `civicsync` subcommand shares: the consoles, the common options, loading the config,
and turning civicsync errors into a message and an exit code (0 ok, 1 the work failed, 2 the command
or config is wrong)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from civicsync.cli.tables import FitTable
from civicsync.config import LoadedConfig, load_config
from civicsync.errors import CivicsyncError, ConfigDeprecationWarning, ConfigError, UsageError

out = Console()
err = Console(stderr=True)

_format_warning = warnings.formatwarning


def _format_config_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                           line: str | None = None) -> str:
    # A config file's older form is the user's to fix: say so plainly, without Python's source location.
    if issubclass(category, ConfigDeprecationWarning):
        return f"warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


warnings.formatwarning = _format_config_warning

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CIVICSYNC_CONFIG", help="Config file (default: the reference config)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (INFO level).")]
FlowsOpt = Annotated[list[str] | None, typer.Option("--flow", "-f", help="Only these flows (repeatable).")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn civicsync errors into a clear message and exit code, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        err.print(f"[bold red]config error[/] ({len(exc.problems)} problem{'s' * (len(exc.problems) != 1)}):")
        for problem in exc.problems:
            err.print(f"  {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except UsageError as exc:
        fail(str(exc), 2)
    except CivicsyncError as exc:
        fail(str(exc))


def load(config: Path | None) -> LoadedConfig:
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


def setup(verbose: bool) -> None:
    from civicsync.logs import setup_logging

    setup_logging(verbose)


@contextmanager
def progress_bars() -> Iterator[Progress]:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
    with progress:
        yield progress


def progress_callback(progress: Progress, description: str) -> Callable[[int], None]:
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
