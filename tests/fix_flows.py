"""Helpers for batch flow tests: the source rows several flow tests start from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fix_db import Deployment


def insert_schemes(dep: Deployment, rows: list[tuple[Any, ...]]) -> None:
    with dep.connect("warehouse") as conn:
        conn.cursor().executemany(
            "INSERT INTO schemes (scheme_id, code, name, department, category, benefit_type, status,"
            " benefit_amount) VALUES (%s, %s, %s, 'Welfare', 'Social', 'CASH', %s, %s)", rows)


C1 = "00000000-0000-4000-8000-000000000001"
C2 = "00000000-0000-4000-8000-000000000002"


def day(offset: int) -> datetime:
    """Noon UTC, ``offset`` days before today."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return today - timedelta(days=offset)


def setup_events(dep: Deployment) -> None:
    with dep.connect("citizen") as conn:
        conn.execute("INSERT INTO citizens (citizen_id, full_name, district) VALUES (%s, 'A', 'Pune'),"
                     " (%s, 'B', 'Nagpur')", (C1, C2))
        events = [
            # id, citizen, session, type, when, duration
            (1, C1, "s1", "login", day(1), 100),
            (2, C1, "s1", "view_scheme", day(1), 300),
            (3, C1, "s2", "login", day(1), 200),
            (4, C2, "s3", "login", day(1), 400),
            (5, None, "s4", "login", day(1), 50),     # anonymous → district UNKNOWN
            (6, C2, "s5", "login", day(2), 10),
            (7, C1, "s6", "login", day(0), 999),      # today: incomplete, not aggregated yet
        ]
        conn.cursor().executemany(
            "INSERT INTO user_events (event_id, citizen_id, session_id, event_type, occurred_at, duration_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s)", events)
