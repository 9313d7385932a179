"""The civicsync command line, run as a real subprocess against real databases."""

from __future__ import annotations

import json
from pathlib import Path

from civicsync.localpg import free_port
from fix_cli import civicsync
from fix_db import Deployment


def test_db_seed_and_batch_run_json(fresh_deployment: Deployment) -> None:
    env = fresh_deployment.environ
    seeded = civicsync("db", "seed", "--citizens", "150", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "warehouse.public.citizen_profiles" in seeded.stdout
    proc = civicsync("batch", "run", "F2", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True and summary["rows_read"] == 150 and summary["id"] == "F2"
    table = civicsync("batch", "run", "scheme_master", env=env)
    assert table.returncode == 0 and "scheme_master" in table.stdout and "ok" in table.stdout
    history = json.loads(civicsync("runs", "--json", env=env).stdout)
    assert [r["flow"] for r in history][:2] == ["scheme_master", "profile_prefill"]


def test_failed_run_exits_1_with_the_reason(fresh_deployment: Deployment) -> None:
    proc = civicsync("batch", "run", "F1", env=fresh_deployment.environ)  # no schemes: min_rows fails
    assert proc.returncode == 1
    assert "validation failed" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_flow_and_unreachable_database(fresh_deployment: Deployment) -> None:
    env = fresh_deployment.environ
    proc = civicsync("batch", "run", "F99", env=env)
    assert proc.returncode == 2 and "no flow called 'F99'" in proc.stderr
    dead = {**env, "CIVICSYNC_CITIZEN_DSN": f"host=127.0.0.1 port={free_port()} dbname=x user=x"}
    proc = civicsync("db", "init", env=dead)
    assert proc.returncode == 1 and "cannot connect" in proc.stderr and "Traceback" not in proc.stderr


def test_flows_and_validate_json() -> None:
    env = {"CIVICSYNC_WAREHOUSE_DSN": "dbname=w", "CIVICSYNC_CITIZEN_DSN": "dbname=c",
           "CIVICSYNC_PSEUDONYM_KEY": "x" * 20}
    listing = json.loads(civicsync("flows", "--json", env=env).stdout)
    assert {f["id"] for f in listing} >= {"F1", "F2", "F11", "F12"}
    result = civicsync("validate", "--json", env={})
    assert result.returncode == 2
    assert {p["path"] for p in json.loads(result.stdout)["problems"]} == {
        "connections.warehouse.dsn_env", "connections.citizen.dsn_env", "secrets.pseudonym_key.env"}


def test_demo_runs_twice_and_stops(tmp_path: Path) -> None:
    port = str(free_port())
    args = ("demo", "--data-dir", str(tmp_path / "demo"), "--port", port, "--citizens", "200")
    try:
        first = civicsync(*args, cwd=tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        for flow_id in ("F1", "F2", "F11", "F12"):
            assert f"│ {flow_id} " in first.stdout
        assert "seeded 200 citizens" in first.stdout and "XXXX-XXXX-" in first.stdout
        second = civicsync(*args, "--json", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        assert report["changes"] and all(f["ok"] for f in report["flows"])
        f2 = next(f for f in report["flows"] if f["id"] == "F2")
        assert f2["rows_read"] >= 5 and f2["conflicts"] >= 1
        # The hybrid flow's reconciliation compared (its workers' snapshot was done), and nothing of
        # the demo dead-lettered (F8's rows need F2's citizens first).
        f8 = next(f for f in report["flows"] if f["id"] == "F8")
        assert f8["reconcile"]["status"] != "skipped" and f8["reconcile"]["error"] is None, f8
        assert report["cdc"]["dead_letters"] == 0 and not report["cdc"]["errors"]
    finally:
        stopped = civicsync(*args, "--stop", cwd=tmp_path)
    assert stopped.returncode == 0
