"""The real Kafka pieces run here: broker, produce/consume, Debezium on Kafka Connect, a 3-node cluster,
and the set-up's "Maven Central is unreachable" path."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from civicsync.kafka.connect import KafkaConnect
from civicsync.kafka.jvm import KafkaUnavailableError, unavailable_reason
from civicsync.kafka.local import KafkaCluster, single_broker
from civicsync.localpg import LocalPostgres
from fix_kafka import DebeziumCapture, consume, kafka_tmp, payload, skip_if_kafka_unavailable

REPO = Path(__file__).resolve().parents[1]


def _new_topic(bootstrap: str, partitions: int, replicas: int = 1, **config: str) -> str:
    name = f"t_{secrets.token_hex(4)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, replicas, config=config)])[name].result(30)
    return name


def _produce(bootstrap: str, topic: str, records: list[tuple[str, str]], **conf: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, **conf})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in records:
        producer.produce(topic, value.encode(), key.encode(), on_delivery=delivered)
    assert producer.flush(60) == 0, "messages left unsent"
    assert failures == []


def test_broker_starts_and_round_trips_keyed_messages_in_order(kafka_broker: KafkaCluster) -> None:
    node = kafka_broker.nodes[0]
    assert node.startup_seconds is not None and 0 < node.startup_seconds < 120
    assert kafka_broker.rss_bytes() > 50 * 2**20
    topic = _new_topic(kafka_broker.bootstrap, partitions=3)
    records = [(f"k{i % 7}", f"v{i}") for i in range(300)]
    _produce(kafka_broker.bootstrap, topic, records)

    got = consume(kafka_broker.bootstrap, topic, len(records))
    assert sorted((m.key().decode(), m.value().decode()) for m in got) == sorted(records)
    for key in {k for k, _ in records}:
        # Per-key order holds: one key is one partition, read in the order it was written.
        sent = [v for k, v in records if k == key]
        assert [m.value().decode() for m in got if m.key().decode() == key] == sent
        assert len({m.partition() for m in got if m.key().decode() == key}) == 1


def test_debezium_snapshots_then_streams_a_table(kafka_connect: KafkaConnect, kafka_broker: KafkaCluster,
                                                 scratch_db: str, pg_server: LocalPostgres,
                                                 debezium: Callable[..., DebeziumCapture]) -> None:
    assert kafka_connect.startup_seconds is not None and kafka_connect.rss_bytes() > 50 * 2**20
    with psycopg.connect(pg_server.dsn(scratch_db), autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text, score numeric(6,2))")
        conn.execute("INSERT INTO people VALUES (1, 'before the snapshot', 1.50)")
    capture = debezium(scratch_db, ["public.people"])
    with psycopg.connect(pg_server.dsn(scratch_db), autocommit=True) as conn:
        conn.execute("INSERT INTO people VALUES (2, 'streamed', 2.25)")
        conn.execute("UPDATE people SET name = 'renamed' WHERE id = 1")
        conn.execute("DELETE FROM people WHERE id = 2")
        conn.execute("UPDATE people SET id = 3 WHERE id = 1")  # a key change

    # r(1), c(2), u(1), d(2)+tombstone, key change: d(1)+tombstone and c(3)
    msgs = consume(kafka_broker.bootstrap, capture.topic("public.people"), 8)
    events = [payload(m) for m in msgs]
    summary = [(e["op"], (e["before"] or {}).get("id"), (e["after"] or {}).get("id")) if e else ("tombstone",)
               for e in events]
    assert summary == [("r", None, 1), ("c", None, 2), ("u", None, 1), ("d", 2, None), ("tombstone",),
                       ("d", 1, None), ("tombstone",), ("c", None, 3)]
    assert events[0]["source"]["snapshot"] in ("true", "last")
    assert events[1]["source"]["snapshot"] == "false"
    assert events[1]["after"]["name"] == "streamed"
    assert events[2]["after"]["name"] == "renamed"
    # Streamed events carry the source position; commit order is LSN order.
    lsns = [e["source"]["lsn"] for e in events[1:] if e]
    assert lsns == sorted(lsns)
    assert all(isinstance(e["source"]["txId"], int) for e in events if e)


def test_three_node_cluster_keeps_every_acknowledged_message_when_a_node_dies() -> None:
    """RF 3, min.insync.replicas 2: kill -9 one node mid-stream, lose nothing acknowledged."""
    skip_if_kafka_unavailable()
    cluster = KafkaCluster(kafka_tmp("civicsync-test-cluster-"), size=3, heap="256m")
    with cluster:
        assert all(n.startup_seconds for n in cluster.nodes)
        topic = _new_topic(cluster.bootstrap, partitions=3, replicas=3, **{"min.insync.replicas": "2"})
        first = [(f"k{i % 5}", f"a{i}") for i in range(200)]
        _produce(cluster.bootstrap, topic, first)
        cluster.node(2).kill()
        second = [(f"k{i % 5}", f"b{i}") for i in range(200)]
        _produce(cluster.bootstrap, topic, second, **{"message.timeout.ms": 60000})
        got = consume(cluster.bootstrap, topic, 400, timeout=90)
        assert sorted(m.value().decode() for m in got) == sorted(v for _, v in first + second)
        assert cluster.restart(2) > 0


def test_setup_says_in_one_line_when_maven_central_is_unreachable(tmp_path: Path) -> None:
    """Maven is pointed at a proxy that refuses connections and an empty local repository: the real
    way the network is unreachable for Maven, without touching this machine's network."""
    if shutil.which("mvn") is None:
        pytest.skip("mvn is not installed (setup-kafka.sh installs it)")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "deploy" / "kafka").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup-kafka.sh", tmp_path / "scripts")
    shutil.copy(REPO / "deploy" / "kafka" / "pom.xml", tmp_path / "deploy" / "kafka")
    blocked = " ".join(f"-D{proto}.proxyHost=127.0.0.1 -D{proto}.proxyPort=9" for proto in ("http", "https"))
    env = {**os.environ, "MAVEN_OPTS": f"-Dmaven.repo.local={tmp_path / 'm2'} {blocked}",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "setup-kafka.sh")], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Maven Central is unreachable" in proc.stderr
    reason = unavailable_reason(tmp_path / ".kafka")
    assert reason is not None and "Kafka tests are skipped" in reason


def test_kafka_tests_skip_with_the_setup_reason_and_fail_when_merely_not_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICSYNC_KAFKA_HOME", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match=r"not installed .* run `bash scripts/setup-kafka\.sh`"):
        single_broker(tmp_path / "work")
    (tmp_path / "UNAVAILABLE").write_text("Maven Central is unreachable from this machine, ...\n")
    with pytest.raises(pytest.skip.Exception, match="Maven Central is unreachable"):
        skip_if_kafka_unavailable()


def test_a_killed_python_process_leaks_no_broker(tmp_path: Path) -> None:
    """kill -9 of the process that started a broker takes the broker's JVM with it."""
    skip_if_kafka_unavailable()
    script = ("import sys, time; from pathlib import Path; from civicsync.kafka.local import single_broker;"
              f"b = single_broker(Path({str(tmp_path / 'k')!r})); b.start();"
              "print(b.nodes[0].process.pid, flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        jvm = int(child.stdout.readline())
        assert Path(f"/proc/{jvm}").exists()
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{jvm}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{jvm}").exists(), "the broker JVM outlived the process that started it"


def test_setup_fails_loudly_when_maven_fails_for_another_reason(tmp_path: Path) -> None:
    """A pom asking for an artifact that does not exist: Maven Central answers, so this is a real
    failure (exit 1 with Maven's output), not "unavailable"."""
    skip_if_kafka_unavailable()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "deploy" / "kafka").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup-kafka.sh", tmp_path / "scripts")
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    broken = pom.replace("<debezium.version>3.6.1.Final</debezium.version>",
                         "<debezium.version>0.0.0.NoSuchVersion</debezium.version>")
    assert broken != pom
    (tmp_path / "deploy" / "kafka" / "pom.xml").write_text(broken)
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "setup-kafka.sh")], capture_output=True,
                          text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=600, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Maven failed (its output is in" in proc.stderr
    assert not (tmp_path / ".kafka" / "UNAVAILABLE").exists()
