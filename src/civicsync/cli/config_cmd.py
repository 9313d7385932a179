"""`civicsync config migrate FILE [-o OUT]`: rewrite a config file that uses older forms (``mode:``, an
empty ``cdc: {}``, ``$lsn``, a write-only table's columns listed again) in the current form. Exit 0
when written (or nothing needed changing), 2 when the file is invalid or an old form is ambiguous
(every such problem is listed, saying what to write instead) or OUT cannot be written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from civicsync.cli.common import err, fail, out, user_errors

config_app = typer.Typer(help="Work on config files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the config commands to the CLI."""
    app.add_typer(config_app, name="config")


@config_app.command("migrate")
def migrate(
    file: Annotated[Path, typer.Argument(help="Config file in an older form.", show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the migrated file here (default: standard output).")] = None,
) -> None:
    """Rewrite FILE in the current config form; YAML comments are not kept (the list of changes goes to
    standard error). The environment is not read: no DSN or secret is needed."""
    from civicsync.config.migrate import COMMENTS_NOTE, migrate_file

    with user_errors():
        migration = migrate_file(file)
    if output is None:
        out.file.write(migration.text)
    else:
        try:
            output.write_text(migration.text, encoding="utf-8")
        except OSError as exc:  # a path to fix on the command line, not a failed piece of work
            fail(f"cannot write {output}: {exc.strerror or exc}", 2)
    if not migration.changes:
        err.print(f"{file}: already in the current form; {'copied' if output else 'printed'} unchanged",
                  highlight=False)
        return
    for change in migration.changes:
        err.print(f"  changed {change.path}: {change.message}", highlight=False, soft_wrap=True)
    where = f" to {output}" if output else ""
    err.print(f"{file}: {len(migration.changes)} change{'s' * (len(migration.changes) != 1)} written{where}; "
              f"note: {COMMENTS_NOTE}", highlight=False)
