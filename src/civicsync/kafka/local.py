"""Kafka brokers that civicsync starts itself, for the tests, the benchmarks and a local try-out.

The real Apache Kafka 4.3.0 broker, in KRaft combined mode (each node is broker and controller):

- :func:`single_broker` - one node, formatted with ``StorageTool format --standalone``;
- :class:`KafkaCluster` of three nodes with a static controller quorum, for failover tests.

Each node gets free loopback ports and its own directory; it is ready when its log says
"Transitioning from RECOVERY to RUNNING". Stop them with :meth:`stop` (also on failure: use
``with``); a JVM also dies with the Python process that started it.
"""

from __future__ import annotations

import base64
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from civicsync.kafka.jvm import (
    DEFAULT_HEAP,
    JavaProcess,
    KafkaUnavailableError,
    require_kafka,
    write_log4j2,
    write_properties,
)
from civicsync.localpg import free_port

READY_LINE = "Transitioning from RECOVERY to RUNNING"
_LIFECYCLE_LOGGER = "org.apache.kafka.server.BrokerLifecycleManager"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters)."""
    # As Kafka's own Uuid.randomUuid: never one that starts with "-", which the tools' argument
    # parser would take for an option ("--cluster-id: expected one argument").
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


@dataclass
class BrokerNode:
    """One KRaft node (broker + controller) of a local cluster."""

    node_id: int
    workdir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = DEFAULT_HEAP
    process: JavaProcess | None = None
    startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        """This node's client listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def controller(self) -> str:
        """This node's controller listener."""
        return f"127.0.0.1:{self.controller_port}"

    def properties(self, voters: list[BrokerNode], extra: dict[str, str]) -> dict[str, str]:
        """server.properties for this node in a cluster of ``voters``."""
        replicas = str(min(3, len(voters)))
        min_isr = "2" if len(voters) >= 3 else "1"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
        }
        if len(voters) == 1:
            props["controller.quorum.bootstrap.servers"] = self.controller
        else:
            props["controller.quorum.voters"] = ",".join(f"{v.node_id}@{v.controller}" for v in voters)
        props.update(extra)
        return props

    def prepare(self, home: Path, cluster_id: str, voters: list[BrokerNode], extra: dict[str, str]) -> None:
        """Write the node's config and format its storage (once)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = write_properties(self.workdir / "server.properties", self.properties(voters, extra))
        log4j = write_log4j2(self.workdir / "log4j2.properties", (_LIFECYCLE_LOGGER,))
        if (self.workdir / "data" / "meta.properties").exists():
            return
        standalone = ["--standalone"] if len(voters) == 1 else []
        fmt = JavaProcess(f"StorageTool (node {self.node_id})", "kafka.tools.StorageTool",
                          ["format", *standalone, "-t", cluster_id, "-c", str(config)],
                          self.workdir / "format.log", heap="256m")
        fmt.start(home, log4j)
        assert fmt.proc is not None
        if fmt.proc.wait(120) != 0:
            raise KafkaUnavailableError(f"formatting Kafka storage failed:\n{fmt.log_tail()}")

    def start(self, home: Path) -> None:
        """Launch the broker JVM (returns at once; see :meth:`wait_ready`)."""
        # A restarted node must not find its old ready line: each start logs to a fresh file.
        log = self.workdir / "broker.log"
        if log.exists():
            log.rename(self.workdir / f"broker.{int(time.time() * 1000)}.log")
        self.process = JavaProcess(f"Kafka broker {self.node_id}", "kafka.Kafka",
                                   [str(self.workdir / "server.properties")], log, heap=self.heap)
        self.process.start(home, self.workdir / "log4j2.properties")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait for the ready line; the start-up time in seconds."""
        assert self.process is not None
        process = self.process
        self.startup_seconds = process.wait_for(lambda: process.log_contains(READY_LINE), timeout, "running")
        return self.startup_seconds

    def stop(self) -> None:
        """Clean shutdown (SIGTERM; SIGKILL after 30 s)."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        if self.process is not None:
            self.process.kill()

    def alive(self) -> bool:
        """Whether the node's JVM runs."""
        return self.process is not None and self.process.alive()

    def rss_bytes(self) -> int:
        """Resident memory of the node's JVM."""
        return self.process.rss_bytes() if self.process else 0


class KafkaCluster:
    """``size`` local KRaft nodes in combined mode; one node formats ``--standalone``."""

    def __init__(self, workdir: Path, size: int = 1, heap: str = DEFAULT_HEAP,
                 extra: dict[str, str] | None = None, home: Path | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.home = require_kafka(home)
        self.workdir = workdir
        self.cluster_id = new_cluster_id()
        self.extra = dict(extra or {})
        self.nodes = [BrokerNode(i + 1, workdir / f"node{i + 1}", heap=heap) for i in range(size)]

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` string for clients."""
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout: float = 120.0) -> float:
        """Format (first time), start every node and wait until all run; the seconds it took."""
        began = time.monotonic()
        try:
            for node in self.nodes:
                node.prepare(self.home, self.cluster_id, self.nodes, self.extra)
            for node in self.nodes:
                node.start(self.home)
            for node in self.nodes:
                node.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - began

    def node(self, node_id: int) -> BrokerNode:
        """The node with ``node_id`` (1-based)."""
        return next(n for n in self.nodes if n.node_id == node_id)

    def restart(self, node_id: int, timeout: float = 120.0) -> float:
        """Start a stopped or killed node again; its start-up time."""
        node = self.node(node_id)
        node.stop()
        node.start(self.home)
        return node.wait_ready(timeout)

    def rss_bytes(self) -> int:
        """Resident memory of all nodes together."""
        return sum(n.rss_bytes() for n in self.nodes)

    def stop(self) -> None:
        """Stop every node. All are signalled first: stopped one by one, the last ones would wait
        for a controller quorum that is already gone."""
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()

    def destroy(self) -> None:
        """Kill every node and delete the data: nothing is kept, so no clean shutdown is waited for
        (three nodes stopping together wait ~30 s for the controller quorum they are taking down)."""
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()


def single_broker(workdir: Path, heap: str = DEFAULT_HEAP, extra: dict[str, str] | None = None,
                  home: Path | None = None) -> KafkaCluster:
    """A single-node broker (a cluster of one): the default for tests."""
    return KafkaCluster(workdir, 1, heap, extra, home)
