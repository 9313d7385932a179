"""Shared pieces of the CDC benchmarks (bench/cdc_throughput.py, bench/cdc_latency.py).

Not a benchmark itself. A private durable PostgreSQL (civicsync.localpg.LocalPostgres), the reference
config with a per-run slot and publication (and, optionally, other capture settings), a CdcWorker on a
thread that records when each batch committed and how long its phases took, CPU seconds of the
PostgreSQL backends that serve it, and the clean-up of slot, publication and replication origin.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psutil
import psycopg
import yaml
from psycopg import sql

from civicsync.capture.replication import Transaction
from civicsync.capture.slots import drop_publication, drop_slot
from civicsync.config import LoadedConfig
from civicsync.config.loader import parse_config, reference_config_path
from civicsync.config.models import publication_name, slot_name
from civicsync.db.origin import origin_for
from civicsync.localpg import LocalPostgres
from civicsync.runtime.cdc import CdcWorker

SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
            "track_commit_timestamp", "max_wal_size", "checkpoint_timeout")


def environ_for(server: LocalPostgres, suffix: str, key: str) -> dict[str, str]:
    return {
        "CIVICSYNC_WAREHOUSE_DSN": server.dsn(f"bench_warehouse_{suffix}"),
        "CIVICSYNC_CITIZEN_DSN": server.dsn(f"bench_citizen_{suffix}"),
        "CIVICSYNC_PSEUDONYM_KEY": key,
    }


def run_config(environ: dict[str, str], capture: dict[str, Any] | None = None) -> LoadedConfig:
    """The bundled reference config with a fresh slot/publication name per source connection and
    ``snapshot: never`` (a new slot streams from now on; the benchmarks measure streaming, not the
    initial copy of the seeded rows).

    ``capture`` adds settings to both connections' ``capture`` block (e.g. batch_max_wait_ms);
    whatever it leaves out keeps the config model's default. All sessions use the cluster's superuser DSN."""
    path = reference_config_path()
    raw = yaml.safe_load(path.read_text())
    tag = secrets.token_hex(3)
    for conn in ("warehouse", "citizen"):
        raw["connections"][conn]["capture"] = {"slot": f"bench_{conn}_{tag}", "publication": f"bench_{conn}_{tag}",
                                               "snapshot": "never", **(capture or {})}
    return parse_config(raw, str(path), environ)


def server_settings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
                for name in SETTINGS}


def settings_line(s: dict[str, str]) -> str:
    return (f"PostgreSQL {s['server_version']} (private cluster, durable): fsync={s['fsync']} "
            f"synchronous_commit={s['synchronous_commit']} full_page_writes={s['full_page_writes']} "
            f"wal_level={s['wal_level']} shared_buffers={s['shared_buffers']} "
            f"track_commit_timestamp={s['track_commit_timestamp']} max_wal_size={s['max_wal_size']}")


def checkpoint(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an unsorted sequence."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- the worker on a thread


@dataclass
class BatchRecord:
    wall: float                      # time.time() right after the batch's target commit (on_batch)
    transactions: int
    changes: int
    first_source_commit: datetime | None
    last_source_commit: datetime | None


@dataclass
class WorkerRun:
    """One CdcWorker for ``flows`` of ``source``, run on a thread; done once ``expected`` events are applied."""

    config: LoadedConfig
    source: str
    flows: list[str]
    expected: int | None = None
    on_txn: Callable[[Transaction, float], None] | None = None
    batches: list[BatchRecord] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    timers_at_done: dict[str, float] | None = None
    error: BaseException | None = None
    started_wall: float = 0.0
    thread_cpu: float = 0.0

    def __post_init__(self) -> None:
        self.worker = CdcWorker(self.config, self.source, self.flows, on_batch=self._on_batch)
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cdc-{self.source}", daemon=True)
        self._cpu0 = 0.0
        # Phase timers: wrappers on this worker's own bound methods (src/ is not touched).
        self._time(self.worker, "_collect", "collect (replication read + decode; live: incl. idle waits)")
        self._time(self.worker.committer, "commit", "apply batch (total)")
        for applier in self.worker.appliers:
            self._time(applier, "net_effect", "  net effect per key (Python)")
            self._time(applier, "write", "  write: stage + merge SQL")
            self._time(applier, "partitions_of", "  top-N: partitions of the batch")
            self._time(applier, "recompute", "  top-N: recompute partitions (source read + transform + write)")

    def _time(self, obj: Any, name: str, bucket: str) -> None:
        original = getattr(obj, name, None)
        if original is None:  # the worker's internals moved: no timer for this phase
            return
        self.timers.setdefault(bucket, 0.0)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.timers[bucket] += time.perf_counter() - started
                if self.done.is_set() and self.timers_at_done is None:
                    self.timers_at_done = dict(self.timers)  # what came after (idle polling) is not counted

        setattr(obj, name, wrapper)

    def _on_batch(self, txns: list[Transaction]) -> None:
        now = time.time()
        data = [t for t in txns if t.changes]
        self.batches.append(BatchRecord(now, len(data), sum(len(t.changes) for t in data),
                                        data[0].commit_time if data else None,
                                        data[-1].commit_time if data else None))
        if self.on_txn is not None:
            for t in data:
                self.on_txn(t, now)
        self.thread_cpu = time.thread_time() - self._cpu0
        if self.expected is not None and self.worker.stats.events >= self.expected:
            self.done.set()
            if self.timers_at_done is None:
                # The committer's timer has stopped by now (on_batch runs after the commit): what comes
                # after (the next collect's idle wait) is not counted.
                self.timers_at_done = dict(self.timers)

    def _run(self) -> None:
        self._cpu0 = time.thread_time()
        self.started_wall = time.time()
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc
            self.done.set()

    def prepare(self) -> WorkerRun:
        """Create publication and slot now: changes made from here on are captured."""
        self.worker.prepare()
        return self

    def start(self) -> WorkerRun:
        self._thread.start()
        return self

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise SystemExit(f"worker for {self.flows} did not catch up within {timeout:.0f}s: "
                             f"{self.worker.stats.events:,} of {self.expected:,} events applied")
        if self.error is not None:
            raise SystemExit(f"worker for {self.flows} failed: {self.error!r}")

    def stop(self) -> None:
        self.worker.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(60)
        if self.error is not None:
            raise SystemExit(f"worker for {self.flows} failed: {self.error!r}")

    # -- figures over what was applied

    def data_batches(self) -> list[BatchRecord]:
        return [b for b in self.batches if b.changes]

    def first_source_commit(self) -> float:
        first = next(b.first_source_commit for b in self.batches if b.first_source_commit is not None)
        return first.timestamp()

    def last_source_commit(self) -> float:
        last = [b.last_source_commit for b in self.batches if b.last_source_commit is not None][-1]
        return last.timestamp()

    def last_target_commit(self) -> float:
        return self.data_batches()[-1].wall

    def first_target_commit(self) -> float:
        return self.data_batches()[0].wall


def backend_cpu(dsn: str, patterns: Iterable[str]) -> dict[str, float]:
    """User+system CPU seconds, since each started, of the backends whose application_name starts with
    each pattern (summed per pattern), read from /proc through psutil."""
    out: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for pattern in patterns:
            total = 0.0
            for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
                                       (pattern + "%",)).fetchall():
                with contextlib.suppress(psutil.Error):
                    times = psutil.Process(int(pid)).cpu_times()
                    total += times.user + times.system
            out[pattern] = total
    return out


def cleanup(config: LoadedConfig, source: str, target: str) -> None:
    """Drop the run's slot and publication on the source and its replication origin on the target."""
    slot = slot_name(config.model, source)
    with psycopg.connect(config.dsn(source), autocommit=True) as conn:
        for _ in range(200):
            try:
                drop_slot(conn, slot)
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
        drop_publication(conn, publication_name(config.model, source))
    with psycopg.connect(config.dsn(target), autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute("SELECT pg_replication_origin_drop(%s)", (origin_for(config, f"cdc_{slot}"),))
