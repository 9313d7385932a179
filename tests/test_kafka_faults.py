"""Issue 13 item 5: real faults on the Kafka path. `kill -9` of one of two apply workers of a group
mid-stream, of `civicsync capture` mid-stream, and a broker restart: 0 lost, 0 duplicate effects
(event-log rows included), checked with independent SQL and `civicsync reconcile`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from civicsync.kafka.local import KafkaCluster
from fix_cdc import role_environ, wait_for, write_config
from fix_db import Deployment, q
from fix_kafka import (
    BOOTSTRAP_ENV,
    applying,
    assert_exact,
    capturing,
    converged,
    kafka_config,
    kafka_raw,
    portal_basics,
    workload,
)

CLI = [str(Path(sys.executable).parent / "civicsync")]


@contextmanager
def cli_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, *args], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def applied_offsets(dep: Deployment, group: str) -> int:
    return int(q(dep, "warehouse", "SELECT coalesce(sum(next_offset), 0) FROM civicsync.kafka_offsets"
                                   " WHERE group_id = %s", group)[0][0])


def owners(dep: Deployment, group: str) -> set[str]:
    return {r[0] for r in q(dep, "warehouse", "SELECT owner FROM civicsync.kafka_offsets WHERE group_id = %s", group)}


def setup(dep: Deployment, broker: KafkaCluster, tmp_path: Path) -> tuple[Any, dict[str, str], Path]:
    portal_basics(dep)
    raw = kafka_raw(partitions=4)
    config = kafka_config(dep, broker, raw)
    env = {**role_environ(dep), BOOTSTRAP_ENV: broker.bootstrap}
    return config, env, write_config(tmp_path / "civicsync.yaml", raw)


def test_kill_9_of_one_of_two_apply_workers_loses_and_doubles_nothing(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str, tmp_path: Path) -> None:
    dep = fresh_deployment
    config, env, path = setup(dep, kafka_broker, tmp_path)
    apps = 120
    args = ["apply", "--group", "gk", "--flow", "F6", "--flow", "F7", "-c", str(path), "-v"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    with capturing(config), cli_process(args, env, logs[0]) as w1, cli_process(args, env, logs[1]) as w2:
        # The writer starts once both workers hold partitions: a worker that joins after the (short)
        # workload was applied would own no row of the offsets table, and there would be nothing to take over.
        wait_for(lambda: all("group gk: assigned" in log.read_text(errors="replace") for log in logs), timeout=60,
                 what="both workers assigned")
        writer = threading.Thread(target=workload, args=(dep, 5000, apps))
        writer.start()
        # Both workers own partitions and have applied something: then one dies mid-stream.
        wait_for(lambda: len(owners(dep, "gk")) == 2 and applied_offsets(dep, "gk") > 100, timeout=90,
                 what="both workers applying")
        w1.kill()  # SIGKILL: no clean-up, its batch in flight (if any) is rolled back by the server
        w1.wait(10)
        writer.join(180)
        wait_for(lambda: converged(dep, apps), timeout=120, what="the surviving worker to take over")
        assert w2.poll() is None, (tmp_path / "w2.log").read_text()[-2000:]
    assert_exact(dep, config, apps)


def test_kill_9_of_capture_mid_stream_loses_nothing(
        fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str, tmp_path: Path) -> None:
    dep = fresh_deployment
    config, env, path = setup(dep, kafka_broker, tmp_path)
    apps = 90
    with capturing(config):  # creates the slot, then stops: the CLI capture below takes it over
        pass
    with applying(config, "gc") as worker:
        with cli_process(["capture", "citizen", "-c", str(path)], env, tmp_path / "c1.log") as c1:
            writer = threading.Thread(target=workload, args=(dep, 7000, apps))
            writer.start()
            wait_for(lambda: worker.stats.records > 60, timeout=60, what="records through the first capture")
            c1.kill()
            c1.wait(10)
        writer.join(180)
        with cli_process(["capture", "citizen", "-c", str(path)], env, tmp_path / "c2.log"):
            wait_for(lambda: converged(dep, apps), timeout=120, what="the restarted capture to catch up")
    assert_exact(dep, config, apps)


def test_broker_restart_loses_nothing(fresh_deployment: Deployment, kafka_broker: KafkaCluster, bootstrap_env: str,
                                      tmp_path: Path) -> None:
    dep = fresh_deployment
    config, _, _ = setup(dep, kafka_broker, tmp_path)
    apps = 60
    with capturing(config), applying(config, "gb") as worker:
        writer = threading.Thread(target=workload, args=(dep, 9000, apps))
        writer.start()
        wait_for(lambda: worker.stats.records > 40, timeout=60, what="records before the restart")
        kafka_broker.node(1).kill()  # kill -9 of the only broker mid-stream, then start it again
        kafka_broker.restart(1)
        writer.join(180)
        wait_for(lambda: converged(dep, apps), timeout=180, what="convergence after the broker restart")
    assert_exact(dep, config, apps)


@pytest.fixture()
def bootstrap_env(kafka_broker: KafkaCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_broker.bootstrap)
    return kafka_broker.bootstrap


@pytest.mark.slow
def test_three_node_cluster_kill_the_leader_of_the_busiest_partition_loses_nothing(
        fresh_deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RF 3, min.insync.replicas 2: kill -9 the leader of the busiest partition mid-stream; capture and the
    group move to the new leaders; 0 lost, 0 doubled; the time until records flow again is printed."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    from civicsync.kafka.topics import admin_client
    from fix_kafka import kafka_tmp, skip_if_kafka_unavailable

    skip_if_kafka_unavailable()
    cluster = KafkaCluster(kafka_tmp("civicsync-test-kafka3-"), size=3, heap="256m")
    cluster.start()
    try:
        monkeypatch.setenv(BOOTSTRAP_ENV, cluster.bootstrap)
        dep = fresh_deployment
        portal_basics(dep)
        raw = kafka_raw(partitions=3)
        raw["kafka"]["topics"]["defaults"].update(replication_factor=3, min_insync_replicas=2)
        config = kafka_config(dep, cluster, raw)
        apps = 90
        topic = config.model.kafka.topic_name("application_submissions", "F6")  # type: ignore[union-attr]
        with capturing(config), applying(config, "g3") as worker:
            writer = threading.Thread(target=workload, args=(dep, 11000, apps))
            writer.start()
            wait_for(lambda: worker.stats.records > 60, timeout=90, what="records before the failover")
            partitions = admin_client(cluster.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
            counts = {p: applied_partition(dep, "g3", topic, p) for p in partitions}
            busiest = max(counts, key=lambda p: counts[p])
            leader = partitions[busiest].leader
            probe = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "probe"})
            _, high = probe.get_watermark_offsets(TopicPartition(topic, busiest), timeout=10)
            probe.close()
            killed = time.monotonic()
            cluster.node(leader).kill()
            # Records past the high watermark at the kill were produced to, and read from, a new leader.
            wait_for(lambda: applied_partition(dep, "g3", topic, busiest) > high, timeout=120,
                     what="records produced after the failover applied")
            print(f"failover: partition {busiest} (leader node {leader} killed) applied records produced after the "
                  f"kill {time.monotonic() - killed:.1f}s later")
            writer.join(240)
            wait_for(lambda: converged(dep, apps), timeout=180, what="convergence after the failover")
        assert_exact(dep, config, apps)
    finally:
        cluster.destroy()


def applied_partition(dep: Deployment, group: str, topic: str, partition: int) -> int:
    rows = q(dep, "warehouse", "SELECT next_offset FROM civicsync.kafka_offsets WHERE group_id = %s AND topic = %s"
                               " AND partition = %s", group, topic, partition)
    return int(rows[0][0]) if rows else 0
