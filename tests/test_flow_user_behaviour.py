"""F11 user behaviour: daily aggregation of complete UTC days; only counts reach the warehouse."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from civicsync.jobs.batch import run_batch
from fix_db import Deployment
from fix_flows import C1, C2, day, setup_events


def daily(dep: Deployment) -> list[tuple[Any, ...]]:
    with dep.connect("warehouse") as conn:
        return conn.execute("SELECT day, district, event_type, events, unique_citizens, sessions, avg_duration_ms"
                            " FROM analytics.user_behavior_daily ORDER BY 1, 2, 3").fetchall()


def test_aggregates_complete_days_only(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    setup_events(dep)
    result = run_batch(dep.config(), "F11").raise_for_error()
    d1, d2 = day(1).date(), day(2).date()
    assert daily(dep) == [
        (d2, "Nagpur", "login", 1, 1, 1, Decimal("10.00")),
        (d1, "Nagpur", "login", 1, 1, 1, Decimal("400.00")),
        (d1, "Pune", "login", 2, 1, 2, Decimal("150.00")),
        (d1, "Pune", "view_scheme", 1, 1, 1, Decimal("300.00")),
        (d1, "UNKNOWN", "login", 1, 0, 1, Decimal("50.00")),
    ]
    assert result.watermark == day(0).date().isoformat()
    assert run_batch(dep.config(), "F11").raise_for_error().counts.rows_written == 0


def test_late_events_and_vanished_groups_inside_the_lookback_are_recomputed(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    setup_events(dep)
    run_batch(dep.config(), "F11").raise_for_error()
    with dep.connect("citizen") as conn:
        conn.execute("INSERT INTO user_events (event_id, citizen_id, session_id, event_type, occurred_at,"
                     " duration_ms) VALUES (8, %s, 's7', 'view_scheme', %s, 100)", (C1, day(1)))
        conn.execute("DELETE FROM user_events WHERE event_id = 5")
    result = run_batch(dep.config(), "F11").raise_for_error()
    assert (result.counts.rows_written, result.counts.rows_deleted) == (1, 1)
    rows = {(r[1], r[2]): r[3:6] for r in daily(dep) if r[0] == day(1).date()}
    assert rows[("Pune", "view_scheme")] == (2, 1, 2)
    assert ("UNKNOWN", "login") not in rows


def test_no_citizen_identifier_reaches_the_warehouse(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    setup_events(dep)
    run_batch(dep.config(), "F11").raise_for_error()
    with dep.connect("warehouse") as conn:
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM analytics.user_behavior_daily t").fetchone()
    assert dump is not None and dump[0]
    for secret in (C1, C2, "s1", "s3"):
        assert secret not in dump[0]
