"""Schema changes while streaming: one flow stops, the others go on, nothing is lost.

- A column added at the source is ignored unless the config maps it (the applier reads the mapped
  columns by name).
- A mapped column dropped or renamed (the stream's relation lacks it), or retyped (its type changes
  between two relation messages), stops **that flow** with an error naming the column and what to
  change. Its changes are never applied with NULLs. The other flows of the slot go on.
- The stopped flow keeps its position: the slot is acknowledged no further than it, so the source
  keeps the WAL. Once its config is changed (the column mapped under its new name, removed, or its
  transform adapted to the new type) the next start resumes it from that position, while the other
  flows skip what they have applied; when it has caught up it is an ordinary flow again. Started with
  an unchanged config it stays stopped.

Stops are kept in ``civicsync.cdc_flow_stops`` in the target, written in the batch transactions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from civicsync import metrics
from civicsync.apply.cdc import CdcFlowApplier
from civicsync.capture.pgoutput import Relation, format_lsn
from civicsync.config import LoadedConfig
from civicsync.errors import SchemaMismatchError
from civicsync.status import config_hash

log = logging.getLogger("civicsync.runtime.cdc")
Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass
class FlowStops:
    """The flows of one worker that are stopped, or catching up after a stop."""

    config: LoadedConfig
    slot: str
    stopped: dict[str, tuple[int, str, dict[str, int]]] = field(default_factory=dict)  # flow → (lsn, why, types)
    behind: dict[str, int] = field(default_factory=dict)  # flow → position below the slot's, resuming
    _accepted: dict[str, dict[str, int]] = field(default_factory=dict)  # flow → column → type accepted
    _seen: dict[str, dict[str, int]] = field(default_factory=dict)  # flow → column → type last streamed

    def load(self, conn: Conn, flows: list[str]) -> None:
        """Read the stops of these flows: a flow whose config changed since resumes, else stays stopped."""
        rows = conn.execute("SELECT flow, lsn, error, config_hash, new_types FROM civicsync.cdc_flow_stops"
                            " WHERE slot = %s AND flow = ANY(%s)", (self.slot, flows)).fetchall()
        for flow in flows:
            metrics.FLOW_STOPPED.labels(flow).set(0)
        for flow, lsn, error, fingerprint, new_types in rows:
            stays = fingerprint == config_hash(self.config, flow)
            metrics.FLOW_STOPPED.labels(flow).set(1 if stays else 0)
            if stays:
                self.stopped[flow] = (int(lsn), str(error), dict(new_types))
                log.error("flow %s stays stopped (its config is unchanged): %s", flow, error)
            else:
                self.behind[flow] = int(lsn)
                self._accepted[flow] = dict(new_types)
                log.warning("flow %s: config changed, resuming from %s", flow, format_lsn(int(lsn)))

    def reasons(self) -> dict[str, str]:
        """Per stopped flow, why (the column and what to change; never a value): for the service state."""
        return {flow: why for flow, (_lsn, why, _types) in list(self.stopped.items())}

    def start_position(self, slot_position: int) -> int:
        """Where the stream starts (and how far the slot may be acknowledged): the lowest position."""
        return min([slot_position, *self.behind.values(), *(s[0] for s in self.stopped.values())])

    def position(self, flow: str, slot_position: int) -> int:
        """The position up to which ``flow`` has applied."""
        return self.behind.get(flow, slot_position)

    def check(self, applier: CdcFlowApplier, relation: Relation) -> None:
        """Raise SchemaMismatchError if a mapped column of the flow is missing from the relation or its
        type changed since the flow's last relation (a change the flow's new config accepted aside)."""
        seen = self._seen.setdefault(applier.name, {})
        accepted = self._accepted.get(applier.name, {})
        types = relation.column_types
        for column in applier.transform.source_columns:
            if column not in types:
                raise SchemaMismatchError(
                    f"flow {applier.name}: {relation.qualified_name} has no column {column!r} any more (dropped "
                    f"or renamed): map the new name in the flow's columns, or remove the column, then restart")
            new, old = types[column], seen.get(column)
            if old is not None and new != old and accepted.get(column) != new:
                raise SchemaMismatchError(
                    f"flow {applier.name}: column {column!r} of {relation.qualified_name} changed type (oid {old} "
                    f"→ {new}): check the flow's rules for the new type and change its config, then restart")
            seen[column] = new

    def stop(self, applier: CdcFlowApplier, relation: Relation | None, error: SchemaMismatchError,
             slot_position: int) -> None:
        """Stop a flow at its current position (kept in the target with the next commit)."""
        lsn = self.position(applier.name, slot_position)
        self.behind.pop(applier.name, None)
        types = dict(relation.column_types) if relation is not None else {}
        self.stopped[applier.name] = (lsn, str(error), types)
        metrics.FLOW_UP.labels(applier.name, applier.flow.kind).set(0)
        metrics.FLOW_STOPPED.labels(applier.name).set(1)
        log.error("flow %s stopped at %s, the other flows go on: %s", applier.name, format_lsn(lsn), error)

    def save(self, conn: Conn, batch_end: int, slot_position: int) -> None:
        """Inside the batch transaction: record the stops; a resumed flow that reaches the slot's
        position with this batch is an ordinary flow again, one still behind records how far it got."""
        for flow, (lsn, error, types) in self.stopped.items():
            conn.execute("INSERT INTO civicsync.cdc_flow_stops (slot, flow, lsn, error, config_hash, new_types)"
                         " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (slot, flow) DO UPDATE SET"
                         " error = excluded.error, config_hash = excluded.config_hash, new_types = excluded.new_types",
                         (self.slot, flow, lsn, error, config_hash(self.config, flow), Jsonb(types)))
        for flow, before in self.behind.items():
            lsn = max(before, batch_end)
            if lsn >= slot_position:
                conn.execute("DELETE FROM civicsync.cdc_flow_stops WHERE slot = %s AND flow = %s", (self.slot, flow))
            else:
                conn.execute("UPDATE civicsync.cdc_flow_stops SET lsn = %s WHERE slot = %s AND flow = %s",
                             (lsn, self.slot, flow))

    def advanced(self, batch_end: int, slot_position: int) -> None:
        """After a commit: the flows behind applied up to ``batch_end``; those that reached the slot's
        position are ordinary again."""
        for flow in list(self.behind):
            self.behind[flow] = max(self.behind[flow], batch_end)
            if self.behind[flow] >= slot_position:
                del self.behind[flow]
                metrics.FLOW_STOPPED.labels(flow).set(0)
                self._accepted.pop(flow, None)
                log.info("flow %s caught up after its schema stop", flow)
