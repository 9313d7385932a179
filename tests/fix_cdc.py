"""Fixtures for CDC tests: a running worker on random slot/publication names, torn down after, and the
portal rows, decisions and CLI runs the CDC tests share."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

from civicsync.capture.slots import drop_publication, drop_slot
from civicsync.config import LoadedConfig
from civicsync.config.models import publication_name, slot_name
from civicsync.db.origin import origin_for
from civicsync.provision.databases import init_databases
from civicsync.runtime.cdc import CdcWorker
from fix_db import Deployment, q
from helpers import config_variant, reference_raw

CIT = "00000000-0000-4000-8000-0000000000c1"


def cdc_raw(mutate: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The reference config as a dict, with random slot and publication names (tests never collide)
    and the least-privilege capture and apply roles for CDC."""
    tag = secrets.token_hex(3)
    raw = reference_raw()
    for conn in ("warehouse", "citizen"):
        section = raw["connections"][conn]
        section["capture"] = {
            "slot": f"t_{conn}_{tag}", "publication": f"t_{conn}_{tag}", "heartbeat_seconds": 0.5,
            "batch_max_wait_ms": 20}
        section["capture_dsn_env"] = f"CIVICSYNC_{conn.upper()}_CAPTURE_DSN"
        section["apply_dsn_env"] = f"CIVICSYNC_{conn.upper()}_APPLY_DSN"
    if mutate is not None:
        mutate(raw)
    return raw


def role_environ(dep: Deployment) -> dict[str, str]:
    """The deployment's environment plus DSNs that log in as the capture and apply roles."""
    env = dict(dep.environ)
    for conn, db in (("warehouse", dep.warehouse_db), ("citizen", dep.citizen_db)):
        env[f"CIVICSYNC_{conn.upper()}_CAPTURE_DSN"] = dep.server.dsn(db, user="civicsync_capture")
        env[f"CIVICSYNC_{conn.upper()}_APPLY_DSN"] = dep.server.dsn(db, user="civicsync_apply")
    return env


def cdc_config(dep: Deployment, mutate: Callable[[dict[str, Any]], None] | None = None) -> LoadedConfig:
    """The reference config with random slot and publication names, loaded for ``dep``, with the
    roles, grants, publications and origins made by `db init` (CDC then runs as those roles)."""
    raw = cdc_raw(mutate)
    config = config_variant(role_environ(dep), lambda r: r.update(raw))
    init_databases(config)
    return config


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


class RunningWorker:
    """A CdcWorker on a thread; errors on the thread are re-raised by stop()."""

    def __init__(self, worker: CdcWorker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> RunningWorker:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.worker.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def running(config: LoadedConfig, source: str, flows: list[str] | None = None) -> Iterator[RunningWorker]:
    """Run the CDC worker for ``source`` until the block ends; drop its slot afterwards."""
    worker = CdcWorker(config, source, flows)
    worker.prepare()  # creates the slot now, so changes made right after are captured
    handle = RunningWorker(worker).start()
    try:
        yield handle
    finally:
        try:
            handle.stop()
        finally:
            cleanup(config, source)


def cleanup(config: LoadedConfig, source: str) -> None:
    with psycopg.connect(config.dsn(source), autocommit=True) as conn:
        slot = slot_name(config.model, source)
        for _ in range(100):
            try:
                drop_slot(conn, slot)
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
        drop_publication(conn, publication_name(config.model, source))
    # Replication origins are cluster-wide and each one that was used holds one of the server's
    # max_replication_slots progress entries until dropped: tests with random slot names must drop theirs.
    target = next((f.target.connection for f in config.model.flows.values()
                   if f.streams and f.source.connection == source), None)
    if target is not None:
        with psycopg.connect(config.dsn(target), autocommit=True) as conn:
            origin = origin_for(config, f"cdc_{slot_name(config.model, source)}")
            for _ in range(100):
                try:
                    conn.execute("SELECT pg_replication_origin_drop(%s) FROM pg_replication_origin"
                                 " WHERE roname = %s", (origin, origin))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


@contextmanager
def paused(config: LoadedConfig, source: str, flows: list[str]) -> Iterator[tuple[CdcWorker, list[int]]]:
    """A worker whose slot exists but which is not running yet: changes made now wait in the slot and
    arrive together. Yields the worker and the sizes (transactions) of the batches it applies."""
    sizes: list[int] = []
    worker = CdcWorker(config, source, flows, on_batch=lambda txns: sizes.append(len(txns)))
    worker.prepare()
    try:
        yield worker, sizes
    finally:
        cleanup(config, source)


@contextmanager
def started(worker: CdcWorker) -> Iterator[RunningWorker]:
    handle = RunningWorker(worker).start()
    try:
        yield handle
    finally:
        handle.stop()


# --------------------------------------------------------------------------- portal rows and decisions


def make_applications(dep: Deployment, n: int) -> None:
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status)"
                      " SELECT i, %s, 1, 'DRAFT' FROM generate_series(1, %s::int) i", CIT, n)


def add_documents(dep: Deployment, ids: range, size: int = 10) -> None:
    q(dep, "citizen", "INSERT INTO application_documents (document_id, application_id, doc_type, file_name, size_bytes,"
                      " storage_uri) SELECT i, 1, 'ID', 'f.pdf', %s, 's3://x' FROM generate_series(%s::int, %s::int) i",
      size, ids.start, ids.stop - 1)


def portal_basics(dep: Deployment) -> None:
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone, updated_at) VALUES"
                      " (%s, 'Asha', '9876543210', now() - interval '1 day')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES"
                      " (1, 'S1', 'One', 'C', 'OPEN'), (2, 'S2', 'Two', 'C', 'OPEN'), (3, 'S3', 'Three', 'C', 'OPEN'),"
                      " (4, 'S4', 'Four', 'C', 'OPEN'), (5, 'S5', 'Five', 'C', 'OPEN'), (6, 'S6', 'Six', 'C', 'OPEN')")
    q(dep, "citizen", "INSERT INTO applications (application_id, citizen_id, scheme_id, status, form_data)"
                      " VALUES (100, %s, 1, 'DRAFT', %s)",
      CIT, '{"bank_account": "123456789012", "national_id": "234567890123", "nominee": {"phone": "9876501234"}}')


def decide(dep: Deployment, decision_id: int, application_id: int, code: str) -> None:
    q(dep, "warehouse", "INSERT INTO application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                        " decision_code, reason, officer_id, decided_at) VALUES (%s, %s, %s, 1, %s, %s,"
                        " 'OFF-4242', now())", decision_id, application_id, CIT, code, f"reason {code}")


def status_of(dep: Deployment, application_id: int) -> Any:
    rows = q(dep, "citizen", "SELECT status FROM applications WHERE application_id = %s", application_id)
    return rows[0][0] if rows else None


def decision(dep: Deployment, decision_id: int, code: str) -> None:
    q(dep, "warehouse", "INSERT INTO application_decisions (decision_id, application_id, citizen_id, scheme_id,"
                        " decision_code, officer_id, decided_at) VALUES (%s, 7, %s, 1, %s, 'OFF-1',"
                        " now() + make_interval(secs => %s))", decision_id, CIT, code, decision_id)


# --------------------------------------------------------------------------- the CLI on a CDC config


def civicsync(dep: Deployment, config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **role_environ(dep), "CIVICSYNC_CONFIG": str(config_path), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def small_documents(dep: Deployment, tmp_path: Path) -> tuple[LoadedConfig, Path]:
    """One application, a warehouse CHECK refusing documents of 1000 bytes or more, and the CDC config
    (loaded, and written to a file for the CLI)."""
    make_applications(dep, 1)
    q(dep, "warehouse", "ALTER TABLE application_documents ADD CONSTRAINT small CHECK (size_bytes < 1000)")
    raw = cdc_raw()
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    return cdc_config(dep, lambda r: r.update(raw)), config_path
