"""Logging set-up for the CLI: readable lines on stderr, INFO with -v."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler


def setup_logging(verbose: bool) -> None:
    """Route stdlib logging to stderr through rich (WARNING by default, INFO with --verbose)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
        force=True,
    )
