"""civicsync's batch flows as Airflow 3 DAGs: one DAG per batch, aggregate or hybrid flow of the config.

Each DAG's one task runs :func:`civicsync.jobs.flow_job.run_flow_job`, the very function the
built-in scheduler runs: :func:`civicsync.jobs.batch.run_batch` (as ``civicsync batch run`` does),
plus reconciliation where the flow's ``reconcile.after_batch`` asks for it. So a run from Airflow
is the same all-or-nothing, locked, recorded (``civicsync.runs``) run as any other. The task
returns the run's ``RunResult.as_dict()`` (an XCom; with a ``reconcile`` entry when one ran).

Where things come from (see docs/airflow.md):

- the config file: Airflow Variable ``CIVICSYNC_CONFIG``, else environment variable
  ``CIVICSYNC_CONFIG``, else the reference config bundled with civicsync. The DAGs are generated
  when the file is parsed; the DSNs and secrets are only needed when a task runs.
- a connection's DSN: the environment variable its ``dsn_env`` names, else an Airflow connection
  ``civicsync_<connection name>`` (host, port, schema = database, login, password; extras are
  passed on as libpq parameters such as ``sslmode``).
- a secret: the environment variable its ``env`` names, else an Airflow Variable
  ``civicsync_secret_<secret name>`` (Airflow masks variables whose name contains "secret").

Failures: ``run_batch`` already retries transient database errors within the run (the flow's
``retry`` section, seconds apart). If the run still ends in a :class:`~civicsync.errors.TransientError`,
Airflow retries the task with exponential backoff (minutes apart); an exception that is neither
fails at once too (Airflow >= 3.3 retry policy). A
:class:`~civicsync.errors.FatalError` (a bad config, validation refused the data, a
non-transient database error, another run of the flow holding its lock) fails the task at once
without retrying: retrying cannot help, a person must act.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import Connection, Variable, dag, task
from airflow.sdk.exceptions import AirflowFailException

from civicsync.config import load_config, reference_config_path
from civicsync.config.loader import parse_config
from civicsync.config.models import Config, Flow
from civicsync.errors import FatalError, TransientError

try:  # Airflow >= 3.3: decide retry or fail from the exception itself
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule
except ImportError:  # older Airflow 3: FatalError still fails at once (AirflowFailException below)
    ExceptionRetryPolicy = RetryAction = RetryRule = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

CONFIG_VARIABLE = "CIVICSYNC_CONFIG"
CONNECTION_PREFIX = "civicsync_"
SECRET_VARIABLE_PREFIX = "civicsync_secret_"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)  # a fixed UTC start: civicsync's cron schedules are UTC
DEFAULT_RETRIES = 3
RETRY_DELAY = timedelta(minutes=2)
MAX_RETRY_DELAY = timedelta(minutes=30)


def config_path() -> Path:
    """The config file: Airflow Variable CIVICSYNC_CONFIG, else $CIVICSYNC_CONFIG, else the reference."""
    try:
        value = Variable.get(CONFIG_VARIABLE, default=None)
    except Exception as exc:  # no metadata database or API reachable while parsing: fall back
        log.debug("Variable %s not readable (%s); using the environment", CONFIG_VARIABLE, exc)
        value = None
    value = value or os.environ.get(CONFIG_VARIABLE)
    return Path(value) if value else reference_config_path()


def read_model(path: Path) -> Config:
    """The config's flows, fully validated, without needing its DSNs and secrets (parse time)."""
    if not path.is_file():
        return load_config(path).model  # raises civicsync's ConfigError naming the file
    return parse_config(yaml.safe_load(path.read_text(encoding="utf-8")), str(path), resolve_env=False).model


def batch_flows(model: Config) -> dict[str, Flow]:
    """The flows that have a batch path (batch, aggregate, hybrid), by config name."""
    return {name: flow for name, flow in model.flows.items() if flow.batches}


def dag_id(name: str) -> str:
    return f"civicsync_{name}"


def _airflow_dsn(conn_id: str) -> str | None:
    """A libpq DSN from the Airflow connection ``conn_id``, or None if there is none."""
    from psycopg.conninfo import make_conninfo

    try:
        conn = Connection.get(conn_id)
    except Exception:  # AirflowNotFoundException, or no connection backend reachable
        return None
    params: dict[str, Any] = {"host": conn.host, "port": conn.port, "dbname": conn.schema,
                              "user": conn.login, "password": conn.password}
    params.update(conn.extra_dejson or {})
    return make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})


def task_environ(path: Path) -> dict[str, str]:
    """The process environment, plus DSNs and secrets from Airflow for whatever it does not set."""
    environ = dict(os.environ)
    model = read_model(path)
    for name, conn in model.connections.items():
        for var in (conn.dsn_env, conn.capture_dsn_env, conn.apply_dsn_env):
            if var and not environ.get(var):
                dsn = _airflow_dsn(CONNECTION_PREFIX + name)
                if dsn:
                    environ[var] = dsn
    for name, ref in model.secrets.items():
        if not environ.get(ref.env):
            value = Variable.get(SECRET_VARIABLE_PREFIX + name, default=None)
            if value:
                environ[ref.env] = value
    return environ


class TransientRunFailure(TransientError):
    """The batch run gave up on transient errors (its own retries spent): Airflow may retry later."""


def _transient(summary: dict[str, Any]) -> bool:
    # run_batch retries only TransientError within the run; a run that still failed that way says so.
    return bool(summary.get("error_kind") == "transient")


def run_flow(path: Path, name: str) -> dict[str, Any]:
    """One scheduled run of flow ``name``: exactly what the built-in scheduler runs.

    :func:`civicsync.jobs.flow_job.run_flow_job` is the batch run (``run_batch``) plus, where the
    flow asks for it, reconciliation (before the batch for a hybrid flow, after a successful one
    otherwise). Returns its summary (``RunResult.as_dict()``, with ``reconcile`` when one ran).
    A fatal failure raises AirflowFailException (no retry); a transient one raises a TransientError
    (the task's retries with backoff apply).
    """
    from civicsync.jobs.flow_job import run_flow_job

    try:
        summary = run_flow_job(load_config(path, environ=task_environ(path)), name)
    except FatalError as exc:  # a bad config, or a reconciliation that cannot work
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
    if not summary["ok"]:
        if _transient(summary):
            raise TransientRunFailure(f"flow {name}: run {summary['run_id']} failed: {summary['error']}")
        raise AirflowFailException(f"flow {name}: run {summary['run_id']} failed: {summary['error']}")
    return summary


def retry_args() -> dict[str, Any]:
    """Task retries: exponential backoff, for civicsync's TransientError only.

    FatalError never gets here (it becomes AirflowFailException, which always fails at once);
    with Airflow >= 3.3 a retry policy also fails anything that is not a TransientError (a bug
    will not fix itself). Older Airflow 3 retries those too.
    """
    args: dict[str, Any] = {"retries": DEFAULT_RETRIES, "retry_delay": RETRY_DELAY,
                            "retry_exponential_backoff": 2.0, "max_retry_delay": MAX_RETRY_DELAY}
    if ExceptionRetryPolicy is not None:
        args["retry_policy"] = ExceptionRetryPolicy(
            rules=[RetryRule(exception=TransientError, action=RetryAction.RETRY,
                             reason="transient failure: retrying (a run is all or nothing, and idempotent)")],
            default=RetryAction.FAIL,
        )
    return args


def _doc(name: str, flow: Flow, path: Path) -> str:
    extra = ("\n\nA **hybrid** flow: its CDC worker applies changes as they happen; this DAG runs the "
             "incremental batch that catches what the event path missed." if flow.kind == "hybrid" else "")
    if flow.reconcile.after_batch:
        when = "before its batch" if flow.kind == "hybrid" else "after a successful batch"
        extra += (f"\n\nThe flow is reconciled{' and repaired' if flow.reconcile.repair else ''} {when} "
                  "(`reconcile.after_batch`), in the same task.")
    return (
        f"### civicsync {flow.id}: `{name}`\n\n"
        f"{flow.description or ''}\n\n"
        f"- **{flow.kind}**, mode **{flow.mode}**: `{flow.source.connection}:{flow.source.table}` → "
        f"`{flow.target.connection}:{flow.target.table}`\n"
        f"- schedule `{flow.schedule}` (UTC); config `{path}`\n"
        "- runs `civicsync.jobs.flow_job.run_flow_job`, the built-in scheduler's job: `run_batch` (as "
        f"`civicsync batch run {flow.id}`), one all-or-nothing target transaction recorded in `civicsync.runs`.\n"
        "- a transient failure is retried with backoff; a fatal one (validation refused, bad config, "
        "another run holds the flow's lock) fails at once. Operators: `civicsync runs`, "
        "`civicsync dlq list`.\n"
        "- **Never** also schedule this flow in civicsync's built-in scheduler: the flow's advisory "
        "lock makes the second run fail with FlowBusyError."
        f"{extra}"
    )


def build_dag(path: Path, name: str, flow: Flow) -> Any:
    """The DAG of one batch flow."""

    @dag(
        dag_id=dag_id(name),
        description=f"civicsync {flow.id} {name}: {flow.source.connection} → {flow.target.connection}",
        schedule=flow.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # never two runs of one flow at once (its advisory lock would refuse the second)
        tags=["civicsync", flow.id, flow.kind, f"{flow.source.connection}->{flow.target.connection}"],
        doc_md=_doc(name, flow, path),
        default_args={"owner": "civicsync"},
    )
    def flow_dag() -> None:
        @task(task_id="run_batch", doc_md="Runs `civicsync.jobs.flow_job.run_flow_job` (`run_batch`, and "
              "reconciliation where the flow asks); returns `RunResult.as_dict()`.", **retry_args())
        def run_batch_task() -> dict[str, Any]:
            return run_flow(path, name)

        run_batch_task()

    return flow_dag()


def build_dags(path: Path | None = None) -> dict[str, Any]:
    """One DAG per batch flow of the config, by DAG id."""
    path = path or config_path()
    model = read_model(path)
    return {dag_id(name): build_dag(path, name, flow) for name, flow in batch_flows(model).items()}


# Airflow's DAG processor collects the DAG objects it finds in the module's globals.
globals().update(build_dags())
