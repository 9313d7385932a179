"""Issue 11 item 15: an event-path flow's first reconciliation waits for its initial snapshot."""

from __future__ import annotations

from civicsync.reconcile.engine import reconcile_flow
from civicsync.runtime.cdc import CdcWorker
from fix_cdc import add_documents, cdc_config, cleanup, make_applications
from fix_db import Deployment, q


def test_reconciliation_before_the_initial_snapshot_is_skipped_with_a_note(fresh_deployment: Deployment) -> None:
    dep = fresh_deployment
    make_applications(dep, 1)
    add_documents(dep, range(1, 2001))
    config = cdc_config(dep)
    early = reconcile_flow(config, "F7", repair=True)
    assert early.status == "skipped" and early.ok and early.found == 0 and early.repaired == 0
    assert any("initial snapshot of citizen" in n for n in early.notes)
    assert q(dep, "warehouse", "SELECT count(*) FROM application_documents") == [(0,)]  # no repair raced it
    assert q(dep, "warehouse", "SELECT count(*) FROM civicsync.reconcile_runs") == [(0,)]  # nothing to page on
    worker = CdcWorker(config, "citizen", ["F7"])
    try:
        worker.prepare()  # the initial snapshot
        worker.close()
        after = reconcile_flow(config, "F7", repair=True).raise_for_error()
        assert after.status == "equal" and after.source_rows == after.target_rows == 2000
    finally:
        cleanup(config, "citizen")
    assert q(dep, "warehouse", "SELECT status FROM civicsync.reconcile_runs") == [("equal",)]
