"""Running the Kafka JVMs that scripts/setup-kafka.sh assembled in ``.kafka/``.

``.kafka/lib`` is one classpath for the broker and Kafka Connect; ``.kafka/plugins`` is Connect's
plugin path (Debezium). Where Maven Central could not be reached, the set-up wrote its one-line
reason to ``.kafka/UNAVAILABLE``; :func:`unavailable_reason` hands it on so callers can skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from civicsync.errors import FatalError

# Kafka's and Connect's own defaults are sized for servers; these keep a test box responsive.
DEFAULT_HEAP = "512m"
_JVM_FLAGS = ("-Xms64m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")


class KafkaUnavailableError(FatalError):
    """The Kafka jars are not installed here, or a Kafka process could not be started."""


def kafka_home() -> Path:
    """Where setup-kafka.sh put the jars: $CIVICSYNC_KAFKA_HOME, else ``.kafka`` in the checkout."""
    if env := os.environ.get("CIVICSYNC_KAFKA_HOME"):
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".kafka"


def unavailable_reason(home: Path | None = None) -> str | None:
    """Why the Kafka jars cannot be used here, or None when they can."""
    home = home or kafka_home()
    marker = home / "UNAVAILABLE"
    if marker.exists():
        return marker.read_text().strip()
    if not (home / "lib").is_dir() or not (home / ".installed").exists():
        return f"the Kafka jars are not installed in {home}: run `bash scripts/setup-kafka.sh`"
    if java_binary() is None:
        return "no `java` on PATH (install openjdk-17-jdk-headless)"
    return None


def require_kafka(home: Path | None = None) -> Path:
    """The Kafka home, or a clear error saying why it cannot be used."""
    home = home or kafka_home()
    if reason := unavailable_reason(home):
        raise KafkaUnavailableError(reason)
    return home


def java_binary() -> str | None:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH."""
    if jh := os.environ.get("JAVA_HOME"):
        candidate = Path(jh) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
    return shutil.which("java")


def _die_with_parent() -> list[str]:
    """A command prefix that makes the JVM die with the Python process that started it, so a killed
    test run leaks no broker. util-linux's setpriv sets the parent-death signal and execs: no
    preexec_fn, which is unsafe in a process with threads (librdkafka's, for one)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


@dataclass
class JavaProcess:
    """One JVM: started with a log file, waited for, measured, stopped."""

    name: str
    main_class: str
    args: list[str]
    log_path: Path
    heap: str = DEFAULT_HEAP
    extra_flags: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self, home: Path, log4j_config: Path, env: dict[str, str] | None = None) -> None:
        """Launch the JVM (output to ``log_path``, ``env`` added to the environment); returns at once."""
        java = java_binary()
        if java is None:
            raise KafkaUnavailableError("no `java` on PATH (install openjdk-17-jdk-headless)")
        cmd = [*_die_with_parent(), java, f"-Xmx{self.heap}", *_JVM_FLAGS, *self.extra_flags,
               f"-Dlog4j2.configurationFile={log4j_config}", "-cp", f"{home / 'lib'}/*", self.main_class, *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.log_path.parent, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int | None:
        """The JVM's process id, once started."""
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        """Whether the JVM runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``ready`` until true; the seconds since start. Fails early if the JVM died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return time.monotonic() - self.started_at
            if not self.alive():
                raise KafkaUnavailableError(f"{self.name} exited before {what}; last lines of "
                                            f"{self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise KafkaUnavailableError(f"{self.name} not {what} after {timeout:.0f}s; see {self.log_path}:\n"
                                    f"{self.log_tail()}")

    def log_contains(self, text: str) -> bool:
        """Whether the JVM's log has ``text`` yet."""
        try:
            return text in self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def rss_bytes(self) -> int:
        """Resident set size of the JVM now (0 when not running)."""
        if not self.alive() or self.pid is None:
            return 0
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
        return 0

    def terminate(self) -> None:
        """Ask for the JVM's clean shutdown (SIGTERM) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the JVM's clean shutdown), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def write_log4j2(path: Path, info_loggers: tuple[str, ...] = ()) -> Path:
    """A log4j2 config: WARN and above, plus INFO from ``info_loggers`` (readiness lines come from there)."""
    lines = [
        "status = warn",
        "appender.out.type = Console",
        "appender.out.name = OUT",
        "appender.out.layout.type = PatternLayout",
        "appender.out.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = WARN",
        "rootLogger.appenderRef.out.ref = OUT",
    ]
    for i, logger in enumerate(info_loggers):
        lines += [f"logger.l{i}.name = {logger}", f"logger.l{i}.level = INFO"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_properties(path: Path, props: dict[str, str]) -> Path:
    """A Java .properties file (values written as given; none here needs escaping)."""
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path
