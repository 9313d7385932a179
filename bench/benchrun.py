"""What every benchmark's main() does around its measurement: a private PostgreSQL in a temp dir,
removed whatever happens (Ctrl-C, SIGTERM, an error), then the report as a table or as JSON."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from civicsync.localpg import LocalPostgres, free_port


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_on_private_server(measure: Callable[[LocalPostgres], dict[str, Any]],
                          render: Callable[[dict[str, Any]], None], *, as_json: bool, durable: bool = True,
                          prefix: str = "civicsync-bench-", cleanup: Callable[[], None] | None = None) -> int:
    """Start a private server, ``measure`` on it, always remove it (``cleanup`` first: e.g. kill a
    child process), then print the report. Returns the exit code (130 when interrupted)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    server = LocalPostgres(base / "pg", free_port(), durable=durable)
    try:
        log(f"starting PostgreSQL in {base} on port {server.port}")
        server.start()
        report = measure(server)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if cleanup is not None:
            cleanup()
        log("removing the server")
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report)
    return 0
