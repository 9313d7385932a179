"""A PostgreSQL server that civicsync owns: for `civicsync demo`, the tests and the benchmarks.

Uses the machine's Debian PostgreSQL binaries (initdb, pg_ctl) on a private data directory and a
loopback port, configured for logical replication (``wal_level=logical``) whatever the machine's
own server is set to. PostgreSQL refuses to run as root, so when we are root the server runs as
the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from civicsync.errors import LocalPostgresError as LocalPostgresError  # re-exported: it lives in the one tree

SUPERUSER = "civicsync_admin"

_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "64",
    "max_wal_senders": "32",
    "max_connections": "200",
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "256MB",
    "track_commit_timestamp": "on",
    "log_min_messages": "warning",
}
# Only for throw-away test clusters: durability is not what the tests measure.
_FAST_UNSAFE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def find_pg_bin() -> Path:
    """The folder holding initdb/pg_ctl: $PG_BIN, else the newest Debian PostgreSQL."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise LocalPostgresError(
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install them with `apt-get install postgresql` or set PG_BIN"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPostgres:
    """A private PostgreSQL cluster in ``datadir`` listening on 127.0.0.1:``port``."""

    datadir: Path
    port: int
    durable: bool = True

    @property
    def _run_as(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, cwd="/", check=False)
        if check and proc.returncode != 0:
            raise LocalPostgresError(f"{' '.join(args[:2])} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    @property
    def pgdata(self) -> Path:
        return self.datadir / "pgdata"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq connection string for ``dbname`` on this cluster."""
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (initdb) unless it exists."""
        if self.initialized():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
            # The server user must be able to reach its directory.
            for parent in self.datadir.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        pg_bin = find_pg_bin()
        self._run(str(pg_bin / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8")
        settings = dict(_SETTINGS)
        if not self.durable:
            settings.update(_FAST_UNSAFE)
        settings["unix_socket_directories"] = f"'{self.pgdata}'"
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        with (self.pgdata / "postgresql.auto.conf").open("a") as fh:
            fh.write(conf)
        with (self.pgdata / "pg_hba.conf").open("a") as fh:
            fh.write("host replication all 127.0.0.1/32 trust\n")

    def is_running(self) -> bool:
        proc = self._run(str(find_pg_bin() / "pg_ctl"), "status", "-D", str(self.pgdata), check=False)
        return proc.returncode == 0

    def start(self) -> None:
        """Initialise if needed and start; a running cluster is left as it is."""
        self.init()
        if self.is_running():
            return
        log = self.datadir / "postgres.log"
        if self._run_as:
            log.touch()
            pw = pwd.getpwnam(self._run_as)
            os.chown(log, pw.pw_uid, pw.pw_gid)
        self._run(str(find_pg_bin() / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.pgdata),
                  "-l", str(log), "-o", f"-p {self.port}")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise LocalPostgresError(f"PostgreSQL on port {self.port} did not accept connections in {timeout}s")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs."""
        if self.initialized() and self.is_running():
            self._run(str(find_pg_bin() / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.pgdata))

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
