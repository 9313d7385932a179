"""Helpers for command-line tests: civicsync run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def civicsync(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "civicsync.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
        env={"PATH": os.environ["PATH"], "COLUMNS": "200", **(env or {})}, check=False)
