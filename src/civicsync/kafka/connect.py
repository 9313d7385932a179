"""Kafka Connect 4.3.0 in distributed mode with the Debezium PostgreSQL connector on its plugin path.

Started by civicsync for the tests, the benchmarks and a local try-out; it is ready when its REST
API answers and lists the Debezium connector. Connectors are registered, inspected and removed
through that REST API (``PUT /connectors/NAME/config``), exactly as an operator would.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from civicsync.kafka.jvm import (
    DEFAULT_HEAP,
    JavaProcess,
    KafkaUnavailableError,
    require_kafka,
    write_log4j2,
    write_properties,
)
from civicsync.localpg import free_port

DEBEZIUM_POSTGRES = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


class ConnectError(KafkaUnavailableError):
    """Kafka Connect refused a request or a connector failed."""


class KafkaConnect:
    """One Kafka Connect worker (distributed mode) against ``bootstrap``."""

    def __init__(self, workdir: Path, bootstrap: str, group_id: str = "civicsync-connect",
                 replication_factor: int = 1, heap: str = DEFAULT_HEAP, home: Path | None = None,
                 base: dict[str, str] | None = None, env: dict[str, str] | None = None) -> None:
        self.home = require_kafka(home)
        self.base = base  # a worker config to start from (e.g. deploy/kafka's), else worker_properties()
        self.env = dict(env or {})  # for ${env:NAME} references in connector configs
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.replication_factor = replication_factor
        self.port = free_port()
        self.heap = heap
        self.process: JavaProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        """The worker's REST API base URL."""
        return f"http://127.0.0.1:{self.port}"

    def worker_properties(self) -> dict[str, str]:
        """This worker's config: ``base`` (or :func:`worker_properties`) with its own address and
        plugin path."""
        props = dict(self.base) if self.base is not None else worker_properties(
            bootstrap=self.bootstrap, group_id=self.group_id, replication_factor=self.replication_factor)
        props.update({"bootstrap.servers": self.bootstrap, "listeners": self.url,
                      "rest.advertised.host.name": "127.0.0.1", "rest.advertised.port": str(self.port),
                      "plugin.path": str(self.home / "plugins")})
        return props

    def start(self, timeout: float = 180.0) -> float:
        """Start the worker and wait until its REST API lists Debezium; the start-up seconds."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = write_properties(self.workdir / "worker.properties", self.worker_properties())
        log4j = write_log4j2(self.workdir / "log4j2.properties", ("io.debezium",))
        self.process = JavaProcess("Kafka Connect", "org.apache.kafka.connect.cli.ConnectDistributed",
                                   [str(config)], self.workdir / "connect.log", heap=self.heap)
        self.process.start(self.home, log4j, self.env)
        try:
            self.startup_seconds = self.process.wait_for(self._ready, timeout, "serving its REST API")
        except BaseException:
            self.stop()
            raise
        return self.startup_seconds

    def _ready(self) -> bool:
        try:
            plugins = self.request("GET", "/connector-plugins")
        except (OSError, ConnectError):
            return False
        return any(p.get("class") == DEBEZIUM_POSTGRES for p in plugins)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        """One REST call; the decoded JSON answer (None for 204). Connect's refusals raise ConnectError."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ConnectError(f"Kafka Connect {method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw else None

    def put_connector(self, name: str, config: dict[str, str], timeout: float = 60.0) -> None:
        """Create or update a connector. Retries while the worker is still joining its group (409)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("PUT", f"/connectors/{name}/config", {"name": name, **config})
                return
            except ConnectError as exc:
                if "HTTP 409" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def connector_status(self, name: str) -> dict[str, Any]:
        """``GET /connectors/NAME/status``: the connector's and its tasks' states."""
        status: dict[str, Any] = self.request("GET", f"/connectors/{name}/status")
        return status

    def wait_running(self, name: str, timeout: float = 120.0) -> float:
        """Wait until the connector and all its tasks run; the seconds it took. A failed task raises
        with its trace."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                status = self.connector_status(name)
            except ConnectError:
                status = {}
            tasks = status.get("tasks", [])
            for task in tasks:
                if task.get("state") == "FAILED":
                    raise ConnectError(f"connector {name} task failed: {task.get('trace', '')[:2000]}")
            if status.get("connector", {}).get("state") == "RUNNING" and tasks \
                    and all(t.get("state") == "RUNNING" for t in tasks):
                return time.monotonic() - began
            time.sleep(0.3)
        raise ConnectError(f"connector {name} not running after {timeout:.0f}s: {status}")

    def delete_connector(self, name: str) -> None:
        """Remove a connector (its replication slot stays on the database)."""
        self.request("DELETE", f"/connectors/{name}")

    def rss_bytes(self) -> int:
        """Resident memory of the worker JVM."""
        return self.process.rss_bytes() if self.process else 0

    def stop(self) -> None:
        """Clean shutdown of the worker."""
        if self.process is not None:
            self.process.stop()

    def destroy(self) -> None:
        """Stop the worker and delete its files."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaConnect:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()


def worker_properties(*, bootstrap: str, group_id: str, replication_factor: int,
                      plugin_path: str = "/opt/civicsync/kafka/plugins") -> dict[str, str]:
    """A Connect worker config: JSON with schemas, internal topics named after the group (every worker
    of one group shares them: that is Connect's HA), ``${env:NAME}`` references allowed in connector
    configs (secrets stay in the workers' environment), Debezium found by ServiceLoader."""
    rf = str(replication_factor)
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "key.converter": JSON_CONVERTER,
        "value.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
        "config.storage.topic": f"{group_id}-configs",
        "offset.storage.topic": f"{group_id}-offsets",
        "status.storage.topic": f"{group_id}-status",
        "config.storage.replication.factor": rf,
        "offset.storage.replication.factor": rf,
        "status.storage.replication.factor": rf,
        "offset.storage.partitions": "5",
        "status.storage.partitions": "1",
        "offset.flush.interval.ms": "1000",
        "config.providers": "env",
        "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        "plugin.path": plugin_path,
        # Debezium's jars carry ServiceLoader manifests: no class scanning (measured ~1.5-4x faster start).
        "plugin.discovery": "service_load",
    }


def debezium_postgres_config(*, host: str, port: int, user: str, dbname: str, topic_prefix: str,
                             tables: list[str], slot: str, publication: str, password: str = "",
                             snapshot_mode: str = "initial", partitions: int = 1,
                             replication_factor: int = -1) -> dict[str, str]:
    """The Debezium PostgreSQL connector config civicsync's Debezium source expects: pgoutput,
    JSON with schemas, and each column's source type propagated (so values decode exactly)."""
    return {
        "connector.class": DEBEZIUM_POSTGRES,
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": host,
        "database.port": str(port),
        "database.user": user,
        "database.password": password,
        "database.dbname": dbname,
        "topic.prefix": topic_prefix,
        "table.include.list": ",".join(tables),
        "slot.name": slot,
        "publication.name": publication,
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": snapshot_mode,
        "key.converter": JSON_CONVERTER,
        "value.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
        # Exact values: numerics as VariableScaleDecimal/Decimal (not doubles), times in microseconds,
        # and every column's PostgreSQL type name in the schema, so the decoder need not guess.
        "decimal.handling.mode": "precise",
        "time.precision.mode": "adaptive",
        # bytes stay Connect bytes (base64 in JSON, but typed "bytes" in the schema, unlike "base64" mode).
        "binary.handling.mode": "bytes",
        "hstore.handling.mode": "json",
        "interval.handling.mode": "string",
        "column.propagate.source.type": ".*",
        "datatype.propagate.source.type": ".*",
        "include.unknown.datatypes": "true",
        "tombstones.on.delete": "true",
        "skipped.operations": "none",  # TRUNCATE too: civicsync's flows decide what to do with it
        # Brokers here do not auto-create topics: Connect creates the change topics (-1: broker default).
        "topic.creation.default.partitions": str(partitions),
        "topic.creation.default.replication.factor": str(replication_factor),
    }
