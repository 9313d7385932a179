"""db init: reference schemas and the control schema, versioned and safe to re-run."""

from __future__ import annotations

from civicsync.provision.databases import init_databases
from fix_db import Deployment


def test_init_creates_reference_and_control_schemas(deployment: Deployment) -> None:
    with deployment.connect("warehouse") as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            " WHERE table_schema IN ('public','analytics','civicsync')").fetchall()}
    assert {"public.citizen_profiles", "analytics.user_behavior_daily", "civicsync.runs",
            "civicsync.watermarks", "civicsync.conflicts", "civicsync.dead_letters"} <= tables
    with deployment.connect("citizen") as conn:
        n = conn.execute("SELECT count(*) FROM civicsync.schema_migrations").fetchone()
    assert n is not None and n[0] >= 2


def test_init_is_idempotent(deployment: Deployment) -> None:
    again = init_databases(deployment.config())
    assert all(not r.created and r.applied == [] for r in again)
