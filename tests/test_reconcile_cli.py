"""`civicsync reconcile` as a real subprocess, and bad input: an unknown flow, unreachable databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from civicsync.errors import DatabaseUnavailableError
from civicsync.jobs.batch import run_batch
from civicsync.localpg import free_port
from civicsync.reconcile import UnknownFlowError, reconcile_flow
from civicsync.reference.seed import seed
from fix_db import Deployment
from fix_reconcile import q
from helpers import config_variant


def civicsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civicsync.cli", *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": os.environ["PATH"], "COLUMNS": "200", **env}, check=False)


def test_reconcile_command_json_repair_and_exit_codes(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    seed(dep.warehouse_dsn, dep.citizen_dsn, 40)
    run_batch(dep.config(), "F1").raise_for_error()
    scheme = q(dep, "citizen", "SELECT min(scheme_id) FROM schemes")[0][0]
    q(dep, "citizen", "UPDATE schemes SET category = 'wrong' WHERE scheme_id = %s", scheme)
    env = dep.environ

    found = civicsync("reconcile", "F1", "--json", env=env)
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert (report["id"], report["status"], report["method"], report["different"]) == ("F1", "different",
                                                                                      "checksum", 1)
    assert report["samples"]["different"] == [{"key": {"scheme_id": str(scheme)}, "columns": ["category"],
                                               "repaired": False}]
    assert report["source_rows"] == report["target_rows"] > 0

    repaired = civicsync("reconcile", "scheme_master", "--repair", "--json", env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] == 1

    table = civicsync("reconcile", "F1", env=env)
    assert table.returncode == 0 and "equal" in table.stdout and "different" in table.stdout  # a row per class

    unknown = civicsync("reconcile", "F99", env=env)
    assert unknown.returncode == 2 and "no flow called 'F99'" in unknown.stderr
    dead = civicsync("reconcile", "F1", env={**env, "CIVICSYNC_CITIZEN_DSN": f"host=127.0.0.1 port={free_port()}"
                                                                             " dbname=x user=x"})
    assert dead.returncode == 1 and "cannot connect to citizen database" in dead.stderr
    assert "Traceback" not in dead.stderr


def test_unknown_flow_and_unreachable_databases(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    with pytest.raises(UnknownFlowError, match="no flow called 'F99'"):
        reconcile_flow(dep.config(), "F99")
    nowhere = f"host=127.0.0.1 port={free_port()} dbname=x user=x"
    # The target holds the run record: without it there is nothing to record in, so it raises.
    no_target = config_variant({**dep.environ, "CIVICSYNC_CITIZEN_DSN": nowhere}, lambda raw: None)
    with pytest.raises(DatabaseUnavailableError, match="cannot connect to citizen database"):
        reconcile_flow(no_target, "F1")
    # Without the source, the run is recorded as failed, with the reason.
    no_source = config_variant({**dep.environ, "CIVICSYNC_WAREHOUSE_DSN": nowhere}, lambda raw: None)
    result = reconcile_flow(no_source, "F1")
    assert not result.ok and result.status == "failed"
    assert result.error is not None and "cannot connect to warehouse database" in result.error
    assert q(dep, "citizen", "SELECT status, error IS NOT NULL FROM civicsync.reconcile_runs") == [("failed", True)]
