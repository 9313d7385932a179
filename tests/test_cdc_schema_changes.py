"""Schema changes while streaming (issue 9 item 18): an added column is ignored unless mapped; a
mapped column dropped, renamed or retyped stops that flow (no NULLs), the others go on; after the
config changes the flow resumes from its position with nothing lost."""

from __future__ import annotations

import copy
import time
from typing import Any

from civicsync import metrics
from civicsync.config import LoadedConfig
from civicsync.runtime.cdc import CdcWorker
from civicsync.status import flow_status
from fix_cdc import RunningWorker, add_documents, cdc_config, cdc_raw, cleanup, make_applications, wait_for
from fix_db import Deployment, q

DOCS = "SELECT document_id, mime_type FROM application_documents ORDER BY 1"


def _start(config: LoadedConfig) -> RunningWorker:
    worker = CdcWorker(config, "citizen", ["F6", "F7"])
    worker.prepare()
    return RunningWorker(worker).start()


def _stops(dep: Deployment) -> list[tuple[Any, ...]]:
    return q(dep, "warehouse", "SELECT flow, error FROM civicsync.cdc_flow_stops")


def _shown(config: LoadedConfig) -> tuple[dict[str, Any], float | None]:
    """F7 as `civicsync status` shows it (read from the databases), and its civicsync_flow_stopped."""
    row = next(r for r in flow_status(config) if r["id"] == "F7")
    return row, metrics.REGISTRY.get_sample_value("civicsync_flow_stopped", {"flow": "document_metadata"})


def _renamed(raw: dict[str, Any]) -> dict[str, Any]:
    """The config after the department renamed mime_type to media_type."""
    new = copy.deepcopy(raw)
    table = new["connections"]["citizen"]["tables"]["public.application_documents"]
    table["columns"] = ["media_type" if c == "mime_type" else c for c in table["columns"]]
    new["flows"]["document_metadata"]["columns"]["mime_type"] = "media_type"
    return new


def test_a_renamed_column_stops_its_flow_only_and_it_resumes_after_the_config_changes(
        fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    q(dep, "citizen", "UPDATE applications SET status = 'SUBMITTED', updated_at = clock_timestamp()")
    raw = cdc_raw()
    config = cdc_config(dep, lambda r: r.update(raw))
    handle = _start(config)
    try:
        add_documents(dep, range(1, 3))
        wait_for(lambda: q(dep, "warehouse", DOCS) == [(1, None), (2, None)], what="the documents")
        # An added column is ignored (F6 maps no such column).
        q(dep, "citizen", "ALTER TABLE applications ADD COLUMN channel text")
        q(dep, "citizen", "UPDATE applications SET channel = 'web', status = 'UNDER_REVIEW',"
                          " updated_at = clock_timestamp()")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("UNDER_REVIEW",)],
                 what="F6 past an added column")
        # A mapped column renamed: F7 stops, F6 goes on.
        q(dep, "citizen", "ALTER TABLE application_documents RENAME COLUMN mime_type TO media_type")
        q(dep, "citizen", "UPDATE application_documents SET media_type = 'x/y' WHERE document_id = 1")
        add_documents(dep, range(3, 4))
        q(dep, "citizen", "UPDATE applications SET status = 'APPROVED', updated_at = clock_timestamp()")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("APPROVED",)],
                 what="F6 to go on")
        [(flow, error)] = wait_for(lambda: _stops(dep), what="F7 to stop")
        assert flow == "document_metadata" and "'mime_type'" in error and "map the new name" in error
        assert q(dep, "warehouse", DOCS) == [(1, None), (2, None)]  # nothing half-applied, no NULLs
        assert handle.thread.is_alive()
        row, stopped = _shown(config)
        assert row["state"] == "stopped" and row["stop_reason"] == error and stopped == 1, (row, stopped)
    finally:
        handle.stop()
    # Started again with the same config, it stays stopped; F6 still flows.
    handle = _start(config)
    try:
        q(dep, "citizen", "UPDATE applications SET status = 'DISBURSED', updated_at = clock_timestamp()")
        wait_for(lambda: q(dep, "warehouse", "SELECT status FROM applications") == [("DISBURSED",)],
                 what="F6 after the restart")
        time.sleep(0.5)
        assert q(dep, "warehouse", DOCS) == [(1, None), (2, None)] and len(_stops(dep)) == 1
        assert _shown(config)[0]["state"] == "stopped" and _shown(config)[1] == 1
    finally:
        handle.stop()
    # The config follows the rename: F7 resumes from where it stopped; F6 applies nothing twice.
    renamed = cdc_config(dep, lambda r: r.update(_renamed(raw)))
    handle = _start(renamed)
    try:
        wait_for(lambda: q(dep, "warehouse", DOCS) == [(1, "x/y"), (2, None), (3, None)], what="F7 to catch up")
        wait_for(lambda: _stops(dep) == [], what="F7 to be an ordinary flow again")
        add_documents(dep, range(4, 5))
        wait_for(lambda: len(q(dep, "warehouse", DOCS)) == 4, what="streaming on")
        row, stopped = _shown(renamed)
        assert row["state"] == "streaming" and "stop_reason" not in row and stopped == 0, (row, stopped)
    finally:
        handle.stop()
        cleanup(renamed, "citizen")
    assert q(dep, "warehouse", "SELECT event_type FROM application_events ORDER BY occurred_at") == [
        ("SUBMITTED",), ("UNDER_REVIEW",), ("APPROVED",), ("DISBURSED",)]


def test_a_retyped_column_stops_its_flow_and_names_it(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    raw = cdc_raw()
    config = cdc_config(dep, lambda r: r.update(raw))
    handle = _start(config)
    try:
        add_documents(dep, range(1, 2))
        wait_for(lambda: q(dep, "warehouse", "SELECT size_bytes FROM application_documents") == [(10,)],
                 what="the document")
        q(dep, "citizen", "ALTER TABLE application_documents ALTER COLUMN size_bytes TYPE numeric(20, 2)")
        q(dep, "citizen", "UPDATE application_documents SET size_bytes = 12.5")
        [(flow, error)] = wait_for(lambda: _stops(dep), what="F7 to stop")
        assert flow == "document_metadata" and "'size_bytes'" in error and "changed type" in error
        assert q(dep, "warehouse", "SELECT size_bytes FROM application_documents") == [(10,)]
    finally:
        handle.stop()
    # A changed config (here: the department's note that it checked the rules) resumes it.
    checked = copy.deepcopy(raw)
    checked["flows"]["document_metadata"]["description"] = "sizes are numeric(20,2) since the change"
    q(dep, "warehouse", "ALTER TABLE application_documents ALTER COLUMN size_bytes TYPE numeric(20, 2)")
    config2 = cdc_config(dep, lambda r: r.update(checked))
    handle = _start(config2)
    try:
        wait_for(lambda: q(dep, "warehouse", "SELECT size_bytes::text FROM application_documents") == [("12.50",)],
                 what="F7 to resume")
        wait_for(lambda: _stops(dep) == [], what="no stop left")
    finally:
        handle.stop()
        cleanup(config2, "citizen")
