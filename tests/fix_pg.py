"""Fixture: one private PostgreSQL 15 server (wal_level=logical) for the whole test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from civicsync.localpg import LocalPostgres, free_port


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """A throw-away cluster in a temp dir on a free loopback port, torn down at the end."""
    base = Path(tempfile.mkdtemp(prefix="civicsync-test-pg-", dir=os.environ.get("CIVICSYNC_TEST_TMP")))
    server = LocalPostgres(base, free_port(), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.destroy()
