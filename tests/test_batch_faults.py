"""Databases that go away, busy flows, and the retry policy: real faults on a real server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from civicsync.config import LoadedConfig
from civicsync.config.models import Retry
from civicsync.db.errors import is_transient
from civicsync.errors import DatabaseError, TransientError
from civicsync.jobs.batch import FlowBusyError, run_batch
from civicsync.retry import RetriesExhaustedError, backoff_delays, with_retry
from fix_db import Deployment
from helpers import config_variant, digest

ROWS = 60_000


def fast_retry(dep: Deployment, attempts: int = 3) -> LoadedConfig:
    def mutate(raw: dict[str, Any]) -> None:
        raw["flows"]["profile_prefill"]["retry"] = {"attempts": attempts, "initial_delay": 0.05, "max_delay": 0.2}

    return config_variant(dep.environ, mutate)


def fill_profiles(dep: Deployment) -> None:
    with dep.connect("warehouse") as conn:
        conn.execute(
            "INSERT INTO citizen_profiles (citizen_id, national_id, full_name, phone, updated_at)"
            " SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, (100000000000 + i)::text,"
            " 'Citizen ' || i, (9000000000 + i)::text, now() - interval '1 day' FROM generate_series(1, %s) i",
            (ROWS,))


def terminate(dep: Deployment, dbname: str) -> Callable[[int], None]:
    """A progress hook that kills civicsync's sessions on ``dbname`` once, mid-stream."""
    done = []

    def hook(rows: int) -> None:
        if done:
            return
        done.append(rows)
        with psycopg.connect(dep.server.dsn(), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s"
                " AND application_name LIKE 'civicsync:%%'", (dbname,)).fetchone()
        assert killed and killed[0] >= 1

    return hook


@pytest.mark.parametrize("side", ["citizen", "warehouse"])
def test_connection_killed_mid_run_is_retried_and_converges(fresh_deployment: Deployment, side: str) -> None:
    dep = fresh_deployment
    fill_profiles(dep)
    dbname = dep.citizen_db if side == "citizen" else dep.warehouse_db
    result = run_batch(fast_retry(dep), "F2", progress=terminate(dep, dbname)).raise_for_error()
    assert result.attempts == 2
    assert (result.counts.rows_read, result.counts.rows_written) == (ROWS, ROWS)
    with dep.connect("citizen") as conn:
        assert conn.execute("SELECT count(*) FROM citizens").fetchone() == (ROWS,)
        assert conn.execute("SELECT status, attempts FROM civicsync.runs").fetchall() == [("succeeded", 2)]


def test_database_gone_for_good_fails_clearly_and_leaves_target_untouched(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    fill_profiles(dep)
    with dep.connect("citizen") as conn:
        before = digest(conn, "citizens")

    kill = terminate(dep, dep.warehouse_db)

    def source_disappears(rows: int) -> None:
        with psycopg.connect(dep.server.dsn(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dep.warehouse_db}" ALLOW_CONNECTIONS false')
        kill(rows)

    try:
        result = run_batch(fast_retry(dep, attempts=3), "F2", progress=source_disappears)
    finally:
        with psycopg.connect(dep.server.dsn(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dep.warehouse_db}" ALLOW_CONNECTIONS true')
    assert isinstance(result.error, RetriesExhaustedError)
    message = str(result.error)
    assert "gave up after 3 attempts" in message and "warehouse" in message and dep.warehouse_db in message
    with dep.connect("citizen") as conn:
        assert digest(conn, "citizens") == before
        assert conn.execute("SELECT count(*) FROM civicsync.watermarks").fetchone() == (0,)
        status, attempts, error = conn.execute("SELECT status, attempts, error FROM civicsync.runs").fetchone()  # type: ignore[misc]
    assert (status, attempts) == ("failed", 3) and "gave up" in error
    # Once the database is back the next run converges.
    assert run_batch(dep.config(), "F2").raise_for_error().counts.rows_written == ROWS


def test_a_second_run_of_the_same_flow_is_refused(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    with dep.connect("citizen") as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('civicsync:flow:profile_prefill'))")
        result = run_batch(dep.config(), "F2")
    assert isinstance(result.error, FlowBusyError) and result.attempts == 1
    assert "another run is in progress" in str(result.error)


def test_abandoned_run_records_are_closed_by_the_next_run(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    with dep.connect("citizen") as conn:
        conn.execute("INSERT INTO civicsync.runs (flow, status) VALUES ('profile_prefill', 'running')")
    run_batch(dep.config(), "F2").raise_for_error()
    with dep.connect("citizen") as conn:
        rows = conn.execute("SELECT status, error FROM civicsync.runs ORDER BY run_id").fetchall()
    assert rows[0][0] == "failed" and rows[0][1].startswith("abandoned")
    assert rows[1] == ("succeeded", None)


def test_non_transient_database_error_is_not_retried(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    fill_profiles(dep)
    with dep.connect("citizen") as conn:
        conn.execute("ALTER TABLE citizens ADD CONSTRAINT no_nines CHECK (phone NOT LIKE '9%')")
    result = run_batch(fast_retry(dep), "F2")
    assert isinstance(result.error, DatabaseError) and result.attempts == 1
    assert result.error.sqlstate == "23514" and "no_nines" in str(result.error)


@pytest.mark.parametrize(("sqlstate", "transient"), [
    (None, True), ("08006", True), ("57P01", True), ("40001", True), ("40P01", True), ("53300", True),
    ("23505", False), ("42P01", False), ("22P02", False),
])
def test_sqlstate_classification(sqlstate: str | None, transient: bool) -> None:
    assert is_transient(sqlstate) is transient


def test_backoff_is_exponential_and_capped() -> None:
    assert backoff_delays(Retry(attempts=5, initial_delay=1, multiplier=2, max_delay=5)) == [1, 2, 4, 5]
    calls: list[int] = []
    slept: list[float] = []

    def flaky(n: int) -> str:
        calls.append(n)
        if n < 3:
            raise TransientError("blip")
        return "ok"

    assert with_retry("x", flaky, Retry(attempts=3, initial_delay=0.5), sleep=slept.append) == ("ok", 3)
    assert slept == [0.5, 1.0]
