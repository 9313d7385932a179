"""Red team (issue 9 item 6, SPEC §4 fidelity): an event log has exactly one row per source transition
under kill -9 of `civicsync run` at random points during *mixed* changes: inserts, status updates
(some to the same status: no transition), other-column updates, deletes (also of keys re-inserted
later), and transactions holding several changes of one key.

The oracle is independent of civicsync: a trigger on the source writes every transition (an insert,
or an update whose status differs) into a history table; the warehouse's ``application_events`` must
hold exactly those rows (application, status, time), each once."""

from __future__ import annotations

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

from civicsync.config.models import slot_name
from civicsync.runtime.cdc import CdcWorker
from fix_cdc import CIT, cdc_config, cdc_raw, cleanup, role_environ, wait_for, write_config
from fix_db import Deployment, q

STATUSES = ["SUBMITTED", "UNDER_REVIEW", "DOCUMENTS_REQUIRED", "APPROVED", "REJECTED", "DISBURSED"]
HISTORY = [
    "CREATE TABLE app_history (seq bigserial PRIMARY KEY, application_id bigint, status text, at timestamptz)",
    "CREATE FUNCTION app_hist() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN"
    " INSERT INTO app_history (application_id, status, at) VALUES (NEW.application_id, NEW.status, NEW.updated_at);"
    " END IF; RETURN NULL; END $$",
    "CREATE TRIGGER app_hist AFTER INSERT OR UPDATE ON applications FOR EACH ROW EXECUTE FUNCTION app_hist()",
]
INSERT = ("INSERT INTO applications (application_id, citizen_id, scheme_id, status, updated_at)"
          " VALUES (%s, %s, 1, %s, clock_timestamp())")


def _one_change(conn: psycopg.Connection[Any], rng: random.Random, live: set[int], next_id: list[int]) -> None:
    roll = rng.random()
    if roll < 0.15 or not live:
        app = rng.choice(sorted(set(range(1, next_id[0])) - live)) if roll < 0.05 and next_id[0] > len(live) + 1 \
            else next_id[0]
        if app == next_id[0]:
            next_id[0] += 1
        conn.execute(INSERT, (app, CIT, rng.choice(STATUSES)))
        live.add(app)
        return
    app = rng.choice(sorted(live))
    if roll < 0.22:
        conn.execute("DELETE FROM applications WHERE application_id = %s", (app,))
        live.discard(app)
    elif roll < 0.32:
        conn.execute("UPDATE applications SET form_data = jsonb_build_object('household_income', %s),"
                     " updated_at = clock_timestamp() WHERE application_id = %s", (rng.randint(1, 9999), app))
    else:
        conn.execute("UPDATE applications SET status = %s, updated_at = clock_timestamp() WHERE application_id = %s",
                     (rng.choice(STATUSES), app))


def _writer(dep: Deployment, changes: int, seed: int, done: threading.Event) -> None:
    rng = random.Random(seed)
    live: set[int] = set()
    next_id = [1]
    made = 0
    with psycopg.connect(dep.citizen_dsn, autocommit=True) as conn:
        while made < changes:
            n = 1 if rng.random() < 0.7 else rng.randint(2, 5)
            with conn.transaction():
                for _ in range(n):
                    _one_change(conn, rng, live, next_id)
            made += n
            time.sleep(0.002)  # a steady stream, so kills land while changes keep coming
    done.set()


def _start(config_path: Path, dep: Deployment) -> subprocess.Popen[bytes]:
    env = {**os.environ, **role_environ(dep), "CIVICSYNC_CONFIG": str(config_path)}
    return subprocess.Popen([sys.executable, "-m", "civicsync.cli", "run", "--flow", "F6", "--no-api",
                             "--no-scheduler"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _count(dep: Deployment) -> int:
    return int(q(dep, "warehouse", "SELECT count(*) FROM application_events")[0][0])


def _transitions(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "citizen", "SELECT application_id, status, at::text FROM app_history ORDER BY 1, 3, 2")


def _events(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT application_id, event_type, occurred_at::text FROM application_events"
                               " ORDER BY 1, 3, 2")


@pytest.mark.parametrize("changes,kills,seed", [
    pytest.param(2_500, 4, 11, id="short"),
    pytest.param(20_000, 15, 12, id="long", marks=pytest.mark.slow),
])
def test_event_log_one_row_per_transition_under_kill_9(fresh_deployment: Deployment, tmp_path: Path,
                                                       changes: int, kills: int, seed: int) -> None:
    dep = fresh_deployment
    q(dep, "citizen", "INSERT INTO citizens (citizen_id, full_name) VALUES (%s, 'A')", CIT)
    q(dep, "citizen", "INSERT INTO schemes (scheme_id, code, name, category, status) VALUES (1, 'S', 'S', 'C', 'OPEN')")
    with dep.connect("citizen") as conn:
        for stmt in HISTORY:
            conn.execute(stmt.encode())
    raw = cdc_raw()
    config_path = write_config(tmp_path / "civicsync.yaml", raw)
    config = cdc_config(dep, lambda r: r.update(raw))
    first = CdcWorker(config, "citizen", ["F6"])
    first.prepare()
    first.close()
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(dep, changes, seed, done))
    rng = random.Random(seed)
    proc = _start(config_path, dep)
    try:
        writer.start()
        for _ in range(kills):
            # Kill while the run is applying: once the log has grown since the restart, at a random moment.
            before = _count(dep)
            wait_for(lambda b=before: _count(dep) > b or done.is_set(), timeout=30, what="the run to apply")
            time.sleep(rng.uniform(0.0, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = _start(config_path, dep)
        writer.join(600)
        assert done.is_set()
        expected = _transitions(dep)
        wait_for(lambda: len(_events(dep)) >= len(expected), timeout=120, what="every event")
        slot = slot_name(config.model, "citizen")
        wait_for(lambda: q(dep, "citizen", "SELECT active FROM pg_replication_slots WHERE slot_name = %s", slot)
                 == [(True,)], what="the last run to be streaming")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(config, "citizen")
    got = _events(dep)
    lost = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not lost and not extra, f"{len(lost)} lost e.g. {lost[:5]}; {len(extra)} extra e.g. {extra[:5]}"
    assert len(got) == len(expected)  # no duplicates
    source = q(dep, "citizen", "SELECT application_id, status, updated_at::text FROM applications ORDER BY 1")
    assert q(dep, "warehouse", "SELECT application_id, status, updated_at::text FROM applications ORDER BY 1") \
        == source
    assert q(dep, "warehouse", "SELECT count(*) FROM civicsync.dead_letters") == [(0,)]
