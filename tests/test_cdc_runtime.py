"""The CDC worker under real faults: echo loops, stop/start, kill -9, walsender and server restarts,
idle slots, dead letters blocking only their own key."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from civicsync.capture.pgoutput import parse_lsn
from civicsync.capture.slots import slot_info
from civicsync.config.models import slot_name
from civicsync.jobs.batch import run_batch
from civicsync.runtime.cdc import CdcWorker
from fix_cdc import (
    CIT,
    RunningWorker,
    add_documents,
    cdc_config,
    cdc_raw,
    civicsync,
    cleanup,
    make_applications,
    role_environ,
    running,
    small_documents,
    wait_for,
    write_config,
)
from fix_db import Deployment, q

# --------------------------------------------------------------------------- no echo loops


def test_a_change_makes_exactly_one_trip(fresh_deployment: Deployment) -> None:
    """F2 (warehouse → portal, batch) and F5 (portal → warehouse, CDC) together."""
    dep = fresh_deployment
    q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, phone, updated_at)"
                        " VALUES (%s, '234567890123', 'Asha', '9876543210', now() - interval '1 day')", CIT)
    config = cdc_config(dep)
    with running(config, "citizen", ["F5"]) as handle:
        run_batch(config, "F2").raise_for_error()           # registry → portal (origin-marked)
        wait_for(lambda: handle.worker.stats.skipped_own >= 1, what="F5 to see and skip F2's write")
        wh_xmin = q(dep, "warehouse", "SELECT xmin::text FROM citizen_profiles")
        q(dep, "citizen", "UPDATE citizens SET phone = '9000000009', updated_at = now()")   # citizen edit
        wait_for(lambda: q(dep, "warehouse", "SELECT phone FROM citizen_profiles") == [("9000000009",)],
                 what="the edit to reach the warehouse")
        assert q(dep, "warehouse", "SELECT xmin::text FROM citizen_profiles") != wh_xmin
        portal_xmin = q(dep, "citizen", "SELECT xmin::text FROM citizens")
        again = run_batch(config, "F2").raise_for_error()    # reads the F5 write back from the warehouse
        assert again.counts.rows_read == 1 and again.counts.rows_written == 0
        assert q(dep, "citizen", "SELECT xmin::text FROM citizens") == portal_xmin  # no second trip
        time.sleep(0.5)
        assert handle.worker.stats.events == 1  # F5 applied only the citizen's own edit
    assert q(dep, "warehouse", "SELECT phone, national_id FROM citizen_profiles") == [("9000000009", "234567890123")]


# --------------------------------------------------------------------------- stop and start


def test_graceful_stop_and_start_lose_and_repeat_nothing(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    config = cdc_config(dep)
    try:
        for round_ in range(3):
            worker = CdcWorker(config, "citizen", ["F7"])
            worker.prepare()
            handle = RunningWorker(worker).start()
            add_documents(dep, range(round_ * 300 + 1, round_ * 300 + 301))
            time.sleep(random.uniform(0.05, 0.3))
            handle.stop()  # mid-stream: flushes what it read, commits, acknowledges
        final = CdcWorker(config, "citizen", ["F7"])
        final.prepare()
        handle = RunningWorker(final).start()
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(900,)],
                 what="all 900 documents")
        handle.stop()
    finally:
        cleanup(config, "citizen")
    assert q(dep, "warehouse", "SELECT count(DISTINCT document_id), min(document_id), max(document_id)"
                               " FROM application_documents") == [(900, 1, 900)]


# --------------------------------------------------------------------------- kill -9


def _writer(dep: Deployment, n_apps: int, changes: int, log: list[tuple[int, str, str]], done: threading.Event) -> None:
    statuses = ["SUBMITTED", "UNDER_REVIEW", "DOCUMENTS_REQUIRED", "UNDER_REVIEW", "APPROVED", "DISBURSED"]
    step = dict.fromkeys(range(1, n_apps + 1), 0)
    with psycopg.connect(dep.citizen_dsn, autocommit=True) as conn:
        for i in range(changes):
            app = (i % n_apps) + 1
            status = statuses[step[app] % len(statuses)]
            step[app] += 1
            row = conn.execute("UPDATE applications SET status = %s, updated_at = clock_timestamp()"
                               " WHERE application_id = %s RETURNING updated_at::text", (status, app)).fetchone()
            assert row is not None
            log.append((app, status, row[0]))
    done.set()


def _start_cli_worker(config_path: Path, dep: Deployment) -> subprocess.Popen[bytes]:
    env = {**os.environ, **role_environ(dep), "CIVICSYNC_CONFIG": str(config_path)}
    return subprocess.Popen([sys.executable, "-m", "civicsync.cli", "cdc", "run", "--flow", "F6"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("changes,kills", [
    pytest.param(3_000, 3, id="short"),
    pytest.param(20_000, 8, id="long", marks=pytest.mark.slow),
])
def test_kill_9_at_random_points_loses_and_duplicates_nothing(fresh_deployment: Deployment, tmp_path: Path,
                                                              changes: int, kills: int) -> None:
    dep = fresh_deployment
    n_apps = 150
    make_applications(dep, n_apps)
    raw = cdc_raw()
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    config = cdc_config(dep, lambda r: r.update(raw))
    first = CdcWorker(config, "citizen", ["F6"])
    first.prepare()  # the slot exists before the first change
    first.close()
    log: list[tuple[int, str, str]] = []
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(dep, n_apps, changes, log, done))
    rng = random.Random(7)
    proc = _start_cli_worker(config_path, dep)
    try:
        writer.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = _start_cli_worker(config_path, dep)
        writer.join(300)
        assert done.is_set()
        expected = {(app, status, ts) for app, status, ts in log}
        last = {app: (status, ts) for app, status, ts in log}

        def events() -> set[tuple[int, str, str]]:
            rows = q(dep, "warehouse", "SELECT application_id, event_type, occurred_at::text FROM application_events")
            return {(int(a), str(s), str(t)) for a, s, t in rows}

        wait_for(lambda: len(events()) >= len(expected), timeout=120, what="every event")
        slot = slot_name(config.model, "citizen")
        wait_for(lambda: q(dep, "citizen", "SELECT active FROM pg_replication_slots WHERE slot_name = %s", slot)
                 == [(True,)], what="the last worker to be streaming")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(config, "citizen")
    got = events()
    assert got == expected  # 0 lost, 0 extra
    assert q(dep, "warehouse", "SELECT count(*) FROM application_events") == [(len(expected),)]  # 0 duplicates
    final = {int(a): (s, str(t)) for a, s, t in q(dep, "warehouse",
                                                  "SELECT application_id, status, updated_at::text FROM applications")}
    assert final == last


# --------------------------------------------------------------------------- the walsender and the server


def test_walsender_killed_and_server_restarted_mid_stream(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    config = cdc_config(dep)
    with running(config, "citizen", ["F7"]) as handle:
        add_documents(dep, range(1, 201))
        q(dep, "citizen", "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
          slot_name(config.model, "citizen"))
        add_documents(dep, range(201, 401))
        dep.server.stop("fast")   # both databases go away mid-stream...
        time.sleep(1.0)
        dep.server.start()        # ...and come back
        add_documents(dep, range(401, 601))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(600,)],
                 timeout=60, what="all 600 documents after the restart")
        assert handle.error is None
    assert q(dep, "warehouse", "SELECT count(DISTINCT document_id) FROM application_documents") == [(600,)]


def test_an_idle_source_slot_still_advances(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = cdc_config(dep)
    slot = slot_name(config.model, "citizen")
    with running(config, "citizen", ["F7"]), dep.connect("citizen") as conn:
        start = slot_info(conn, slot)
        conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 10000) AS n")  # unpublished WAL

        def advanced() -> bool:
            now = slot_info(conn, slot)
            return bool(now and start and parse_lsn(now.confirmed_flush_lsn or "0/0")
                        > parse_lsn(start.confirmed_flush_lsn or "0/0"))

        wait_for(advanced, timeout=10, what="the idle slot to advance through heartbeats")


# --------------------------------------------------------------------------- dead letters


def test_a_bad_event_blocks_only_its_key_and_replay_converges(fresh_deployment: Deployment, tmp_path: Path) -> None:
    dep = fresh_deployment
    config, config_path = small_documents(dep, tmp_path)
    with running(config, "citizen", ["F7"]):
        add_documents(dep, range(1, 4))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(3,)],
                 what="the first three documents")
        q(dep, "citizen", "UPDATE application_documents SET size_bytes = 5000 WHERE document_id = 2")
        add_documents(dep, range(4, 6))
        q(dep, "citizen", "UPDATE application_documents SET mime_type = 'x/y' WHERE document_id = 2")  # waits too
        q(dep, "citizen", "UPDATE application_documents SET mime_type = 'x/z' WHERE document_id = 3")  # flows on
        wait_for(lambda: q(dep, "warehouse", "SELECT document_id, mime_type FROM application_documents"
                                             " WHERE document_id IN (3, 5) ORDER BY 1") == [(3, "x/z"), (5, None)],
                 what="other keys to flow on")
        assert q(dep, "warehouse", "SELECT size_bytes, mime_type FROM application_documents WHERE document_id = 2") \
            == [(10, None)]
    listing = civicsync(dep, config_path, "dlq", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)
    assert entry["flow"] == "document_metadata" and entry["key"] == {"document_id": "2"}
    assert entry["kind"] == "sqlstate_23514" and entry["attempts"] >= 1 and "small" in entry["error"]
    assert "5000" not in entry["error"]  # values never appear in dead letters
    shown = civicsync(dep, config_path, "dlq", "show", f"warehouse:{entry['id']}")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == entry["id"]
    still = civicsync(dep, config_path, "dlq", "replay", "--all")
    assert still.returncode == 1 and "replayed 0; still pending 1 (1 failed again)" in still.stdout
    q(dep, "warehouse", "ALTER TABLE application_documents DROP CONSTRAINT small")   # the fix
    fixed = civicsync(dep, config_path, "dlq", "replay", f"warehouse:{entry['id']}")
    assert fixed.returncode == 0 and "replayed 1; still pending 0" in fixed.stdout, \
        fixed.stdout + fixed.stderr
    assert q(dep, "warehouse", "SELECT size_bytes, mime_type FROM application_documents WHERE document_id = 2") \
        == [(5000, "x/y")]  # the latest source state, including the change that waited
    assert json.loads(civicsync(dep, config_path, "dlq", "list", "--json").stdout) == []
    bad = civicsync(dep, config_path, "dlq", "discard", "warehouse:999")
    assert bad.returncode == 1 and "no pending dead letter" in bad.stderr


# --------------------------------------------------------------------------- initial snapshot


def test_populated_table_is_snapshotted_then_streamed_under_concurrent_writes(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    add_documents(dep, range(1, 3001))
    stop = threading.Event()

    def churn() -> None:
        rng = random.Random(3)
        next_id = 3001
        with psycopg.connect(dep.citizen_dsn, autocommit=True) as conn:
            while not stop.is_set():
                if rng.random() < 0.5:
                    conn.execute("INSERT INTO application_documents (document_id, application_id, doc_type,"
                                 " file_name, size_bytes, storage_uri) VALUES (%s, 1, 'ID', 'f', 1, 's3://x')",
                                 (next_id,))
                    next_id += 1
                else:
                    conn.execute("UPDATE application_documents SET size_bytes = size_bytes + 1"
                                 " WHERE document_id = %s", (rng.randint(1, next_id - 1),))
                if rng.random() < 0.1:
                    conn.execute("DELETE FROM application_documents WHERE document_id = %s",
                                 (rng.randint(1, next_id - 1),))

    writer = threading.Thread(target=churn)
    writer.start()
    config = cdc_config(dep)
    try:
        time.sleep(0.3)
        with running(config, "citizen", ["F7"]) as handle:  # the snapshot is taken mid-churn
            time.sleep(1.0)
            stop.set()
            writer.join()
            source = q(dep, "citizen", "SELECT document_id, size_bytes FROM application_documents ORDER BY 1")
            wait_for(lambda: q(dep, "warehouse", "SELECT document_id, size_bytes FROM application_documents"
                                                 " ORDER BY 1") == source, timeout=30,
                     what="the target to equal the source")
            assert handle.worker.stats.events > 0  # changes after the snapshot came through the stream
    finally:
        stop.set()
        writer.join()
    assert len(source) > 3000


def test_an_interrupted_snapshot_is_started_again(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    add_documents(dep, range(1, 101))
    config = cdc_config(dep)
    with psycopg.connect(dep.citizen_dsn, autocommit=True) as conn:
        # A slot whose snapshot never finished: it exists, but no position was ever stored.
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot_name(config.model, "citizen"),))
    with running(config, "citizen", ["F7"]):
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(100,)],
                 what="the snapshot rows")


def test_truncate_propagates_where_the_flow_says_so(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)

    def propagate(raw: dict[str, Any]) -> None:
        raw["flows"]["document_metadata"]["cdc"] = {"truncate": "propagate"}

    config = cdc_config(dep, propagate)
    with running(config, "citizen", ["F7"]):
        add_documents(dep, range(1, 11))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(10,)], what="rows")
        q(dep, "citizen", "TRUNCATE application_documents")
        add_documents(dep, range(11, 13))
        wait_for(lambda: q(dep, "warehouse", "SELECT document_id FROM application_documents ORDER BY 1")
                 == [(11,), (12,)], what="the truncate, then the new rows")


# --------------------------------------------------------------------------- least privilege


def test_cdc_runs_as_the_least_privilege_roles(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    config = cdc_config(dep)
    with running(config, "citizen", ["F7"]):
        def sessions() -> set[tuple[str, str]]:
            rows = q(dep, "citizen", "SELECT usename, backend_type FROM pg_stat_activity WHERE application_name"
                                     " LIKE 'civicsync:%%'")
            rows += q(dep, "warehouse", "SELECT usename, backend_type FROM pg_stat_activity WHERE application_name"
                                        " LIKE 'civicsync:cdc-apply%%'")
            return {(str(u), str(b)) for u, b in rows}

        found = wait_for(lambda: (s := sessions()) and ("civicsync_capture", "walsender") in s and s, what="sessions")
        assert ("civicsync_apply", "client backend") in found
        assert {u for u, _ in found} <= {"civicsync_capture", "civicsync_apply"}
    with dep.connect("citizen") as conn:
        super_row = conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'civicsync_capture'")
        assert super_row.fetchone() == (False, True)


@pytest.mark.parametrize(("db", "revoke", "named"), [
    ("citizen", "REVOKE SELECT ON public.application_documents FROM civicsync_capture",
     "GRANT SELECT ON public.application_documents TO civicsync_capture"),
    ("warehouse", "REVOKE INSERT ON public.application_documents FROM civicsync_apply",
     "GRANT INSERT ON public.application_documents TO civicsync_apply"),
])
def test_a_missing_grant_fails_at_start_naming_it(fresh_deployment: Deployment, db: str, revoke: str,
                                                  named: str) -> None:
    from civicsync.provision.roles import MissingGrantError

    dep = fresh_deployment
    config = cdc_config(dep)
    q(dep, db, revoke)
    worker = CdcWorker(config, "citizen", ["F7"])
    try:
        with pytest.raises(MissingGrantError) as info:
            worker.prepare()
    finally:
        worker.close()
        cleanup(config, "citizen")
    assert named in str(info.value) and "civicsync db init" in str(info.value)


def test_status_shows_state_lag_and_dead_letters(fresh_deployment: Deployment, tmp_path: Path) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    raw = cdc_raw()
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    config = cdc_config(dep, lambda r: r.update(raw))
    with running(config, "citizen", ["F7"]):
        add_documents(dep, range(1, 6))
        wait_for(lambda: q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(5,)], what="rows")
        proc = civicsync(dep, config_path, "status", "--json")
        assert proc.returncode == 0, proc.stderr
        rows = {r["id"]: r for r in json.loads(proc.stdout)}
        f7 = rows["F7"]
        assert f7["state"] == "streaming" and f7["position"] > 0 and f7["dead_letters"] == 0
        assert "/" in f7["applied_lsn"] and f7["source_commit_time"] is not None
        assert f7["lag_bytes"] is not None and f7["retained_wal_bytes"] is not None and f7["lag_seconds"] is not None
        assert rows["F2"]["state"] == "never run"
        table = civicsync(dep, config_path, "status")
        assert "streaming" in table.stdout and "document_metadata" in table.stdout
    after = {r["id"]: r for r in json.loads(civicsync(dep, config_path, "status", "--json").stdout)}
    assert after["F7"]["state"] in ("stopped", "not started")


def test_isolation_of_a_failing_key_in_a_batch_with_conflict_rules(fresh_deployment: Deployment) -> None:
    """One source transaction updates three citizens; one update breaks a warehouse constraint.
    The batch is re-applied key by key (savepoints): two land, one is dead-lettered."""
    dep = fresh_deployment
    ids = [f"00000000-0000-4000-8000-00000000010{i}" for i in range(3)]
    for i, cid in enumerate(ids):
        q(dep, "warehouse", "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, phone, updated_at)"
                            " VALUES (%s, %s, 'A', '9876543210', now() - interval '1 day')", cid, f"23456789012{i}")
        q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name, phone, updated_at)"
                          " VALUES (%s, 'A', '9876543210', now() - interval '1 day')", cid)
    q(dep, "warehouse", "ALTER TABLE citizen_profiles ADD CONSTRAINT no_pune CHECK (district IS DISTINCT FROM 'Pune')")
    config = cdc_config(dep)
    with running(config, "citizen", ["F5"]):
        with dep.connect("citizen") as conn, conn.transaction():
            for cid, district in zip(ids, ["Nashik", "Pune", "Thane"], strict=True):
                conn.execute("UPDATE citizens SET district = %s, updated_at = now() WHERE citizen_id = %s",
                             (district, cid))
        wait_for(lambda: q(dep, "warehouse", "SELECT district FROM citizen_profiles ORDER BY citizen_id")
                 == [("Nashik",), (None,), ("Thane",)], what="the two good keys")
        wait_for(lambda: q(dep, "warehouse", "SELECT row_key->>'citizen_id', error_kind FROM civicsync.dead_letters")
                 == [(ids[1], "sqlstate_23514")], what="the bad key's dead letter")


def test_an_event_breaking_a_rule_is_dead_lettered_and_its_later_events_wait(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)

    def strict(raw: dict[str, Any]) -> None:
        raw["flows"]["document_metadata"]["columns"]["doc_type"] = {"from": "doc_type", "map": {"ID": "ID"}}

    config = cdc_config(dep, strict)
    with running(config, "citizen", ["F7"]):
        with dep.connect("citizen") as conn, conn.transaction():
            add_documents(dep, range(1, 3))
            conn.execute("INSERT INTO application_documents (document_id, application_id, doc_type, file_name,"
                         " storage_uri) VALUES (3, 1, 'PASSPORT', 'p.pdf', 's3://x')")
            conn.execute("UPDATE application_documents SET size_bytes = 99 WHERE document_id = 3")
        add_documents(dep, range(4, 5))
        wait_for(lambda: q(dep, "warehouse", "SELECT document_id FROM application_documents ORDER BY 1")
                 == [(1,), (2,), (4,)], what="the other documents")
        wait_for(lambda: q(dep, "warehouse", "SELECT row_key->>'document_id', error_kind, status"
                                             " FROM civicsync.dead_letters") == [("3", "map", "pending")],
                 what="the rejected key")
    error = q(dep, "warehouse", "SELECT error FROM civicsync.dead_letters")[0][0]
    assert "PASSPORT" not in error and "value map" in error
