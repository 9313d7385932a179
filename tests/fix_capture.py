"""Fixtures for capture tests: a source database with a random publication and slot, and reading
whole transactions off a replication stream."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from civicsync.capture.replication import ReplicationStream, Transaction
from civicsync.capture.slots import drop_publication, drop_slot, ensure_publication, ensure_slot
from civicsync.localpg import LocalPostgres


@dataclass
class Source:
    """A scratch source database with a table ``items`` published through a fresh slot."""

    server: LocalPostgres
    dbname: str
    slot: str
    publication: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.dbname)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn, autocommit=True)


@pytest.fixture()
def source(pg_server: LocalPostgres) -> Iterator[Source]:
    tag = secrets.token_hex(4)
    src = Source(pg_server, f"src_{tag}", f"slot_{tag}", f"pub_{tag}")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{src.dbname}"')
    with src.connect() as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, big text, n numeric)")
        conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
        ensure_publication(conn, src.publication, ["public.items"])
        ensure_slot(conn, src.slot)
    try:
        yield src
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name"
                          " = 'civicsync:capture'")
        with src.connect() as conn:
            for _ in range(50):
                try:
                    drop_slot(conn, src.slot)
                    break
                except psycopg.errors.ObjectInUse:
                    import time

                    time.sleep(0.1)
            drop_publication(conn, src.publication)
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{src.dbname}" WITH (FORCE)')


def drain(stream: ReplicationStream, count: int, timeout: float = 10.0) -> list[Transaction]:
    got: list[Transaction] = []
    while len(got) < count:
        txn = stream.poll(timeout)
        assert txn is not None, f"only {len(got)} of {count} transactions arrived"
        got.append(txn)
    return got
