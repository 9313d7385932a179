"""Masking validation (``civicsync audit pii``): scan the targets for raw protected values.

:mod:`.rules` derives the protected sets from the config's masking declarations and reads their
values from the sources; :mod:`.needles` holds them in digit-normalised, set-lookup form;
:mod:`.scan` reads every text/json column of every target database and counts hits. Reports name
``table.column`` and counts, never a value.
"""

from civicsync.audit.scan import AuditReport, ColumnHit, run_audit

__all__ = ["AuditReport", "ColumnHit", "run_audit"]
