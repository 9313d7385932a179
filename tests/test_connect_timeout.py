"""Issue 11 item 8: a server that accepts the TCP connection and never answers. The connection's
``connect_timeout_seconds`` bounds the wait, and the message says what happened and which setting
governs it. The silent server is a real listening socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from civicsync.config import load_config
from civicsync.config.loader import reference_config_path


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A loopback port whose server accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        listener.close()


def _config(tmp_path: Path, timeout: int | None) -> Path:
    text = reference_config_path().read_text()
    if timeout is not None:
        text = text.replace("    dsn_env: CIVICSYNC_CITIZEN_DSN\n",
                            f"    dsn_env: CIVICSYNC_CITIZEN_DSN\n    connect_timeout_seconds: {timeout}\n")
    path = tmp_path / "civicsync.yaml"
    path.write_text(text)
    return path


def test_a_silent_server_fails_within_the_configured_timeout_with_a_clear_message(
        tmp_path: Path, silent_server: int) -> None:
    env = {"PATH": os.environ["PATH"], "CIVICSYNC_WAREHOUSE_DSN": "dbname=w",
           "CIVICSYNC_CITIZEN_DSN": f"host=127.0.0.1 port={silent_server} dbname=c user=c",
           "CIVICSYNC_PSEUDONYM_KEY": "k" * 20, "COLUMNS": "300"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "civicsync.cli", "apikey", "list", "-c", str(_config(tmp_path, 2))],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "no answer from the server within 2 s" in proc.stderr
    assert "connections.citizen.connect_timeout_seconds" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 8, elapsed  # the default (10 s) would not be done by now


def test_the_timeout_goes_into_every_dsn_unless_the_dsn_sets_its_own(tmp_path: Path) -> None:
    env = {"CIVICSYNC_WAREHOUSE_DSN": "host=h dbname=w connect_timeout=7",
           "CIVICSYNC_CITIZEN_DSN": "postgresql://u@h/c", "CIVICSYNC_PSEUDONYM_KEY": "k" * 20}
    loaded = load_config(_config(tmp_path, 3), environ=env)
    assert "connect_timeout=7" in loaded.dsn("warehouse")
    assert "connect_timeout=3" in loaded.dsn("citizen")
    assert "connect_timeout=10" in load_config(_config(tmp_path, None), environ=env).dsn("citizen")


def test_a_timeout_below_libpqs_minimum_is_refused(tmp_path: Path) -> None:
    from civicsync.errors import ConfigError

    env = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c",
           "CIVICSYNC_PSEUDONYM_KEY": "k" * 20}
    with pytest.raises(ConfigError, match=r"connections\.citizen\.connect_timeout_seconds"):
        load_config(_config(tmp_path, 1), environ=env)
