"""The scheduled ``audit pii`` run: the scan, its metric, and a log line with counts (never values)."""

from __future__ import annotations

import logging

from civicsync import metrics
from civicsync.audit.scan import AuditReport, run_audit
from civicsync.config import LoadedConfig
from civicsync.errors import CivicsyncError

log = logging.getLogger(__name__)
JOB_ID = "audit:pii"


def run_pii_audit_job(config: LoadedConfig) -> AuditReport | None:
    """Scan the targets, publish ``civicsync_pii_audit_leaking_rows``; None if the scan itself failed
    (the metric's last-run time then stops advancing, which the alert rules watch)."""
    try:
        report = run_audit(config)
    except CivicsyncError as exc:
        log.error("audit pii: the scan failed: %s", exc)
        return None
    leaking = sum(h.rows for h in report.hits)
    metrics.record_pii_audit(report.clean, leaking)
    if report.clean:
        log.info("audit pii: clean (%d columns, %d rows scanned)", report.columns_scanned, report.rows_scanned)
    else:
        log.error("audit pii: raw protected values in %s", ", ".join(
            f"{h.connection}:{h.column} ({h.rows} rows)" for h in report.hits))
    return report
