"""Fixtures for CDC tests: a running worker on random slot/publication names, torn down after."""

from __future__ import annotations

import secrets
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
from fix_db import Deployment
from helpers import config_variant, reference_raw


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
