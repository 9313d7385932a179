"""Versioned SQL migrations, safe to re-run.

A migration set is a folder of ``NNNN_name.sql`` files. Each file runs once per database, in its
own transaction, under an advisory lock, and is recorded with its checksum in
``civicsync.schema_migrations``; a recorded file whose text has since changed is an error (edit
the schema with a new file, never by rewriting an applied one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from civicsync.db.connect import connect, describe, with_dbname
from civicsync.db.errors import mapped_errors
from civicsync.errors import MigrationError as MigrationError  # re-exported: it lives in the one tree

_FILE = re.compile(r"^(\d{4})_[\w-]+\.sql$")
_LOCK_KEY = 0x63697669  # 'civi': one advisory lock for all civicsync migrations


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def control_migrations() -> list[Migration]:
    """civicsync's own control schema, installed in every database it writes to."""
    return _load("control", Path(str(resources.files("civicsync.control").joinpath("migrations"))))


def resolve_migrations(spec: str, config_dir: Path) -> list[Migration]:
    """The migration set a connection declares: 'reference:NAME' or a folder path."""
    if spec.startswith("reference:"):
        name = spec.split(":", 1)[1]
        folder = Path(str(resources.files("civicsync.reference").joinpath("migrations", name)))
        return _load(f"reference:{name}", folder)
    folder = Path(spec)
    return _load(spec, folder if folder.is_absolute() else config_dir / folder)


def _load(component: str, folder: Path) -> list[Migration]:
    if not folder.is_dir():
        raise MigrationError(f"migration folder {folder} does not exist")
    found = []
    for path in sorted(folder.iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(component, int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migration files share a version number")
    return found


def ensure_database(dsn: str) -> bool:
    """Create the DSN's database if it does not exist. True if it was created."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    if not dbname:
        raise MigrationError(f"DSN {describe(dsn)} names no database")
    with connect(with_dbname(dsn, "postgres"), purpose="create-db", autocommit=True) as conn, \
            mapped_errors(f"creating database {dbname}"):
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))
        return True


def apply_migrations(dsn: str, migrations: list[Migration]) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    applied_now: list[str] = []
    with connect(dsn, purpose="migrate", autocommit=True) as conn, mapped_errors(f"migrating {describe(dsn)}"):
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS civicsync")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS civicsync.schema_migrations ("
                " component text NOT NULL, version integer NOT NULL, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (component, version))"
            )
            for migration in migrations:
                if _apply_one(conn, migration):
                    applied_now.append(f"{migration.component}/{migration.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _apply_one(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> bool:
    row = conn.execute(
        "SELECT checksum FROM civicsync.schema_migrations WHERE component = %s AND version = %s",
        (migration.component, migration.version),
    ).fetchone()
    if row is not None:
        if row[0] != migration.checksum:
            raise MigrationError(
                f"{migration.component}/{migration.name} was applied with different contents; "
                "add a new migration file instead of editing an applied one"
            )
        return False
    with conn.transaction():
        conn.execute(migration.text.encode())
        conn.execute(
            "INSERT INTO civicsync.schema_migrations (component, version, name, checksum) VALUES (%s, %s, %s, %s)",
            (migration.component, migration.version, migration.name, migration.checksum),
        )
    return True
