"""One scheduled run of a flow's batch path, as the built-in scheduler and the Airflow DAGs run it.

The job is the batch run plus, where the flow asks for it, a reconciliation: after a successful
run for batch flows with ``reconcile.after_batch``; *before* the incremental batch for hybrid flows
(F8), so that the reconciliation record names exactly what the event path missed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from civicsync.config import LoadedConfig
from civicsync.errors import CivicsyncError
from civicsync.jobs.batch import run_batch

log = logging.getLogger(__name__)
SNAPSHOT_WAIT_SECONDS = 60.0
"""How long a scheduled reconciliation waits for its event path's initial snapshot before skipping."""


def run_flow_job(config: LoadedConfig, name: str) -> dict[str, Any]:
    """Run flow ``name``'s scheduled job; returns the batch run's summary with a ``reconcile`` entry
    when a reconciliation ran. A failed batch run is reported in the summary (``ok`` false), not raised."""
    name = config.model.flow_name(name)
    flow = config.model.flows[name]
    reconciled: dict[str, Any] | None = None
    wants = flow.reconcile.after_batch
    if wants and flow.kind == "hybrid":
        reconciled = _reconcile(config, name, flow.reconcile.repair)
    result = run_batch(config, name).as_dict()
    if wants and flow.kind != "hybrid" and result["ok"]:
        reconciled = _reconcile(config, name, flow.reconcile.repair)
    if reconciled is not None:
        result["reconcile"] = reconciled
    return result


def _reconcile(config: LoadedConfig, name: str, repair: bool) -> dict[str, Any]:
    from civicsync.reconcile import reconcile_flow  # here: reconciliation itself uses the jobs package

    try:
        # A hybrid flow's run right after the service starts (a caught-up run) may come before its
        # worker's initial snapshot has finished: wait for it a while, then skip with a note.
        deadline = time.monotonic() + SNAPSHOT_WAIT_SECONDS
        result = reconcile_flow(config, name, repair=repair)
        while result.skipped and time.monotonic() < deadline:
            time.sleep(1.0)
            result = reconcile_flow(config, name, repair=repair)
        return result.as_dict()
    except CivicsyncError as exc:  # a failed comparison must not keep the batch from running
        log.error("flow %s: reconciliation failed: %s", name, exc)
        return {"flow": name, "ok": False, "error": str(exc)}
