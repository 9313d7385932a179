"""The Airflow 3 DAGs in deploy/airflow/dags, driven for real in their own venv (.venv-airflow).

scripts/setup-airflow.sh makes the venv (Airflow and civicsync; ~30 s the first time, ~2 s after).
Each test runs a small driver in that venv as a subprocess with a throw-away AIRFLOW_HOME
(SQLite metadata database, `airflow db migrate`d once per module): DagBag parses the DAG file,
and `dag.test()` runs a flow's DAG against this session's PostgreSQL with the reference databases.
The module is skipped only when the venv cannot be made here (setup-airflow.sh exits 3).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from civicsync.config import reference_config_path
from civicsync.localpg import free_port
from civicsync.reference.seed import seed
from fix_db import Deployment
from helpers import reference_raw

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "deploy" / "airflow" / "dags"
VENV = REPO / ".venv-airflow"
SETUP = REPO / "scripts" / "setup-airflow.sh"
RESULT = "CIVICSYNC-DRIVER-RESULT:"

# Runs inside .venv-airflow. argv: dagbag | test DAG_ID [RETRY_SECONDS]. Prints one RESULT line of JSON.
# RETRY_SECONDS shortens the task's retry delay (minutes in the DAG) and allows one retry, so a
# test can watch a retry happen. With $STAND_IN_RECONCILE set, a stand-in civicsync.reconcile
# module records its calls to that file instead (reconciliation itself has its own tests).
DRIVER = r"""
import json, os, sys
from datetime import timedelta

def stand_in_reconcile(record):
    import importlib.machinery, types
    module = types.ModuleType("civicsync.reconcile")
    module.__spec__ = importlib.machinery.ModuleSpec("civicsync.reconcile", None)
    class Outcome:
        skipped = False  # a run that did not wait for an initial snapshot (ReconcileResult.skipped)
        def __init__(self, name): self.name = name
        def as_dict(self): return {"flow": self.name, "differences": 0}
    def reconcile_flow(config, name, repair):
        with open(record, "a") as f:
            f.write(json.dumps({"flow": name, "repair": repair, "config": str(config.path)}) + "\n")
        return Outcome(name)
    module.reconcile_flow = reconcile_flow
    sys.modules["civicsync.reconcile"] = module

if os.environ.get("STAND_IN_RECONCILE"):
    stand_in_reconcile(os.environ["STAND_IN_RECONCILE"])

def dagbag():
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags = {}
    for dag in bag.dags.values():
        dags[dag.dag_id] = {
            "schedule": dag.schedule, "timetable": type(dag.timetable).__name__,
            "tz": str(dag.timezone), "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs, "tags": sorted(dag.tags), "doc_md": dag.doc_md,
            "tasks": {t.task_id: {"retries": t.retries, "backoff": t.retry_exponential_backoff,
                                  "upstream": sorted(t.upstream_task_ids),
                                  "retry_policy": t.retry_policy.serialize() if t.retry_policy else None}
                      for t in dag.tasks},
        }
    return {"import_errors": bag.import_errors, "dags": dags}

def test(dag_id, retry_seconds=None):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    if retry_seconds is not None:
        for task in dag.tasks:
            task.retries, task.retry_delay = 1, timedelta(seconds=float(retry_seconds))
    dr = dag.test()
    with create_session() as session:
        tis = [{"task_id": ti.task_id, "state": str(ti.state), "try_number": ti.try_number,
                "max_tries": ti.max_tries} for ti in dr.get_task_instances(session=session)]
        xcoms = {x.task_id: XComModel.deserialize_value(x) for x in session.query(XComModel).filter(
            XComModel.dag_id == dag_id, XComModel.run_id == dr.run_id, XComModel.key == "return_value")}
    return {"state": str(dr.state), "tis": tis, "xcom": xcoms}

out = dagbag() if sys.argv[1] == "dagbag" else test(*sys.argv[2:])
print("CIVICSYNC-DRIVER-RESULT:" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.venv-airflow set up (or the module skipped if it cannot be), and a migrated AIRFLOW_HOME."""
    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode == 3:
        pytest.skip(f"the Airflow venv cannot be created here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, f"setup-airflow.sh failed:\n{proc.stdout}\n{proc.stderr}"
    home = tmp_path_factory.mktemp("airflow-home")
    template = VENV / "airflow-home-template" / "airflow.db"
    if template.is_file():  # migrated once per install by setup-airflow.sh (keyed like the venv)
        shutil.copy(template, home / "airflow.db")
        return home
    migrated = airflow(home, ["airflow", "db", "migrate"])
    assert migrated.returncode == 0, migrated.stderr
    return home


def airflow_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the Airflow venv: nothing of this process's leaks in but PATH."""
    return {
        "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        **(extra or {}),
    }


def airflow(home: Path, argv: list[str], extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=home,
                          env=airflow_env(home, extra))


def drive(home: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the driver in the Airflow venv; its result."""
    proc = airflow(home, [str(VENV / "bin" / "python"), "-c", DRIVER, *args], env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    assert proc.returncode == 0 and lines, f"driver {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT):])
    return result


def batch_schedules(raw: dict[str, Any]) -> dict[str, str | None]:
    """DAG id → cron of every flow with a batch path."""
    return {f"civicsync_{name}": flow.get("schedule") for name, flow in raw["flows"].items()
            if flow["kind"] in ("batch", "aggregate", "hybrid")}


def test_one_dag_per_batch_flow_from_the_configured_file(airflow_home: Path, tmp_path: Path) -> None:
    # A department's own config, named by the Airflow Variable; no DSN or secret is set while parsing.
    raw = reference_raw()
    raw["flows"]["scheme_master"]["schedule"] = "15 4 * * 1-5"
    del raw["flows"]["feedback"]
    variant = tmp_path / "department.yaml"
    variant.write_text(yaml.safe_dump(raw, sort_keys=False))
    bag = drive(airflow_home, "dagbag", env={"AIRFLOW_VAR_CIVICSYNC_CONFIG": str(variant)})
    assert bag["import_errors"] == {}
    dags = bag["dags"]
    assert {d: v["schedule"] for d, v in dags.items()} == batch_schedules(raw)
    assert dags["civicsync_scheme_master"]["schedule"] == "15 4 * * 1-5" and "civicsync_feedback" not in dags
    for dag_id, d in dags.items():
        assert d["tz"] == "UTC" and d["catchup"] is False and d["max_active_runs"] == 1, dag_id
        assert "civicsync" in d["tags"] and "run_batch" in d["doc_md"] and str(variant) in d["doc_md"]
        task = d["tasks"]["run_batch"]
        assert set(d["tasks"]) == {"run_batch"}
        assert task["retries"] >= 1 and task["backoff"] > 0
        rules = task["retry_policy"]["rules"]
        assert task["retry_policy"]["default"] == "fail"
        assert rules == [{"exception": "civicsync.errors.TransientError", "action": "retry", "match_subclasses": True,
                          "reason": rules[0]["reason"]}]
    # No Variable: $CIVICSYNC_CONFIG; neither: the reference config.
    from_env = drive(airflow_home, "dagbag", env={"CIVICSYNC_CONFIG": str(variant)})["dags"]
    assert set(from_env) == set(dags)
    default = drive(airflow_home, "dagbag")
    assert default["import_errors"] == {}
    assert {d: v["schedule"] for d, v in default["dags"].items()} == batch_schedules(
        yaml.safe_load(reference_config_path().read_text()))


@pytest.fixture(scope="module")
def seeded(deployment: Deployment) -> Iterator[Deployment]:
    seed(deployment.warehouse_dsn, deployment.citizen_dsn, 100, only="profiles")  # the portal stays empty
    yield deployment


def task_env(dep: Deployment) -> dict[str, str]:
    """The run's DSNs and secret through all three routes the DAG file accepts."""
    wh = conninfo_to_dict(dep.warehouse_dsn)
    connection = {"conn_type": "postgres", "host": wh["host"], "port": int(str(wh["port"])),
                  "schema": wh["dbname"], "login": wh["user"], "extra": {"connect_timeout": "10"}}
    return {
        "AIRFLOW_CONN_CIVICSYNC_WAREHOUSE": json.dumps(connection),                        # Airflow connection
        "CIVICSYNC_CITIZEN_DSN": dep.citizen_dsn,                                           # plain env var
        "AIRFLOW_VAR_CIVICSYNC_SECRET_PSEUDONYM_KEY": dep.environ["CIVICSYNC_PSEUDONYM_KEY"],  # Airflow Variable
    }


def runs(dep: Deployment, flow: str) -> list[tuple[Any, ...]]:
    with dep.connect("citizen") as conn:
        return conn.execute("SELECT run_id, status, rows_written, error FROM civicsync.runs WHERE flow = %s"
                            " ORDER BY run_id", (flow,)).fetchall()


def test_dag_run_syncs_the_real_databases(airflow_home: Path, seeded: Deployment) -> None:
    dep = seeded
    with dep.connect("warehouse") as conn:
        row = conn.execute("SELECT count(*) FROM schemes WHERE status <> 'DRAFT'").fetchone()
    assert row is not None and isinstance(row[0], int)
    published = row[0]
    with dep.connect("citizen") as conn:
        assert conn.execute("SELECT count(*) FROM schemes").fetchone() == (0,)
    out = drive(airflow_home, "test", "civicsync_scheme_master", env=task_env(dep))
    assert out["state"] == "success", out
    result = out["xcom"]["run_batch"]
    assert result["ok"] is True and result["id"] == "F1" and result["attempts"] == 1
    assert result["rows_written"] == published > 0
    with dep.connect("citizen") as conn:
        assert conn.execute("SELECT count(*) FROM schemes").fetchone() == (published,)
    assert runs(dep, "scheme_master")[-1][:3] == (result["run_id"], "succeeded", published)


def test_fatal_error_fails_at_once_without_retry(airflow_home: Path, seeded: Deployment) -> None:
    # Another run of the flow (e.g. the built-in scheduler's) holds its lock: FlowBusyError, a
    # FatalError, must fail the task on its first try, not wait for retries.
    dep = seeded
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(dep.citizen_dsn) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('civicsync:flow:' || 'scheme_master'))")
            holding.set()
            release.wait(120)

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    assert holding.wait(10)
    try:
        out = drive(airflow_home, "test", "civicsync_scheme_master", env=task_env(dep))
    finally:
        release.set()
        holder.join(10)
    assert out["state"] == "failed", out
    [ti] = out["tis"]
    assert ti["state"] == "failed" and ti["try_number"] == 1 and ti["max_tries"] >= 1, ti
    assert out["xcom"] == {}
    _, status, _, error = runs(dep, "scheme_master")[-1]
    assert status == "failed" and "another run is in progress" in error


def test_transient_error_is_retried(airflow_home: Path, seeded: Deployment, tmp_path: Path) -> None:
    # The target is down: a TransientError once the run's own retries are spent; Airflow retries the task.
    raw = reference_raw()
    raw["flows"]["scheme_master"]["retry"] = {"attempts": 1}
    variant = tmp_path / "one-attempt.yaml"
    variant.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**task_env(seeded), "AIRFLOW_VAR_CIVICSYNC_CONFIG": str(variant),
           "CIVICSYNC_CITIZEN_DSN": f"host=127.0.0.1 port={free_port()} dbname=nowhere user=nobody connect_timeout=2"}
    before = runs(seeded, "scheme_master")
    out = drive(airflow_home, "test", "civicsync_scheme_master", "1", env=env)
    assert out["state"] == "failed", out
    [ti] = out["tis"]
    assert ti["state"] == "failed" and ti["try_number"] == 2, ti  # tried, retried, then gave up
    assert runs(seeded, "scheme_master") == before  # the target was never reached


def test_the_task_runs_the_schedulers_job_with_reconciliation(
        airflow_home: Path, seeded: Deployment, tmp_path: Path) -> None:
    # The task runs civicsync.jobs.flow_job.run_flow_job, the built-in scheduler's job: with
    # reconcile.after_batch, the batch run and then the reconciliation. A stand-in civicsync.reconcile
    # (in the driver) records the call, so this checks the wiring, not reconciliation itself.
    raw = reference_raw()
    raw["flows"]["scheme_master"]["reconcile"] = {"after_batch": True, "repair": False}
    variant = tmp_path / "reconciling.yaml"
    variant.write_text(yaml.safe_dump(raw, sort_keys=False))
    record = tmp_path / "reconcile-calls.jsonl"
    env = {**task_env(seeded), "AIRFLOW_VAR_CIVICSYNC_CONFIG": str(variant), "STAND_IN_RECONCILE": str(record)}
    out = drive(airflow_home, "test", "civicsync_scheme_master", env=env)
    assert out["state"] == "success", out
    summary = out["xcom"]["run_batch"]
    assert summary["ok"] is True and summary["reconcile"] == {"flow": "scheme_master", "differences": 0}
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [{"flow": "scheme_master", "repair": False, "config": str(variant)}]
    assert runs(seeded, "scheme_master")[-1][:2] == (summary["run_id"], "succeeded")
