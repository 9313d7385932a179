"""Scan every text/json column of every target database for raw protected values.

Targets are the databases flows write to; every schema is scanned (civicsync's control schema and its
dead letters included), except the columns that hold personal data by design
(:func:`~civicsync.audit.rules.legitimate_columns`). One pass per column: each value is normalised
once and looked up in the union of the protected sets of that database; a hit is attributed to its
sets only then.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from civicsync.audit.needles import Needles
from civicsync.audit.rules import ProtectedSet, legitimate_columns, protected_sets, text_columns
from civicsync.config import LoadedConfig
from civicsync.db.connect import connect


@dataclass(frozen=True)
class ColumnHit:
    """A target column holding raw protected values: where, how many rows, from which sets (no values)."""

    connection: str
    column: str  # schema.table.column
    rows: int
    hits: int
    sets: tuple[str, ...]


@dataclass
class AuditReport:
    """What ``audit pii`` found."""

    protected: dict[str, int] = field(default_factory=dict)  # set name → number of protected values
    columns_scanned: int = 0
    rows_scanned: int = 0
    hits: list[ColumnHit] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """No raw protected value was found."""
        return not self.hits

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (names and counts only)."""
        return {"clean": self.clean, "columns_scanned": self.columns_scanned, "rows_scanned": self.rows_scanned,
                "seconds": round(self.seconds, 3), "protected_sets": self.protected,
                "hits": [{"connection": h.connection, "column": h.column, "rows": h.rows, "hits": h.hits,
                          "sets": list(h.sets)} for h in self.hits]}


def _union(sets: list[ProtectedSet]) -> Needles:
    union = Needles()
    for s in sets:
        union.digits |= s.needles.digits
        union.emails |= s.needles.emails
        union.tokens |= s.needles.tokens
        for local, domains in s.needles.locals_.items():
            union.locals_.setdefault(local, set()).update(domains)
    return union


def _scan_connection(config: LoadedConfig, connection: str, sets: list[ProtectedSet], report: AuditReport) -> None:
    union = _union(sets)
    legit = legitimate_columns(config, connection)
    with connect(config.dsn(connection), purpose="audit", autocommit=True, label=connection) as conn:
        for (table, column) in sorted(text_columns(conn)):
            if (table, column) in legit:
                continue
            report.columns_scanned += 1
            rows = hits = 0
            names: set[str] = set()
            query = sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(column), sql.Identifier(*table.split(".")), sql.Identifier(column))
            with conn.cursor() as cur:
                for (value,) in cur.stream(query):
                    report.rows_scanned += 1
                    found = union.hits(str(value))
                    if found:
                        rows += 1
                        hits += found
                        names.update(s.name for s in sets if s.needles.hits(str(value)))
            if rows:
                report.hits.append(ColumnHit(connection, f"{table}.{column}", rows, hits, tuple(sorted(names))))


def run_audit(config: LoadedConfig) -> AuditReport:
    """Derive the protected sets from ``config`` and scan every target database for them."""
    started = time.monotonic()
    report = AuditReport()
    by_target: dict[str, list[ProtectedSet]] = defaultdict(list)
    for s in protected_sets(config):
        by_target[s.target].append(s)
        report.protected[s.name] = report.protected.get(s.name, 0) + len(s.needles)
    for connection in sorted({f.target.connection for f in config.model.flows.values()}):
        if by_target[connection]:
            _scan_connection(config, connection, by_target[connection], report)
    report.seconds = time.monotonic() - started
    return report
