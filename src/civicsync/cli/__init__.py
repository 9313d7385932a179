"""The `civicsync` command line."""

from civicsync.cli.app import app, main
from civicsync.cli.common import results_table

__all__ = ["app", "main", "results_table"]
