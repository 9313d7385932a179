"""Repair: make the target what the flow derives for the differing keys, through the flow's own apply
path, so masking and conflict rules hold exactly as they do for the flow itself.

- batch flows: the keys' source rows are re-read now and merged by the batch path's
  :class:`~civicsync.apply.merge.MergeWriter` (:func:`civicsync.deadletters.batch.merge_source_keys`, which
  the batch dead-letter replay uses too); extra rows get the flow's ``on_missing`` rule (deleted, or
  given the soft-delete values);
- event-path flows (CDC, hybrid): the keys' current source rows become read events (and vanished ones
  delete events) applied by :class:`~civicsync.apply.cdc.CdcFlowApplier`, as a dead-letter replay does;
  top-N partitions are recomputed by the applier;
- aggregate flows: the affected days are recomputed by the batch path's aggregate query and merged
  with its scope (a vanished group is removed under ``on_missing: delete``).

Everything happens in one target transaction marked with civicsync's replication origin (so no flow
in the other direction echoes it back). The target rows are locked *before* the source is read: an
event committed after that read waits for the repair and is then applied on top of it, never under
it. (A key that does not exist yet can still race with the event that creates it; the next
reconciliation finds that.) Rows the flow's rules refuse are not repaired: they are dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from civicsync.apply.cdc import CdcFlowApplier, FlowOutcome
from civicsync.apply.merge import MergeWriter, Scope
from civicsync.config import LoadedConfig
from civicsync.config.models import SetValues
from civicsync.db.connect import connect
from civicsync.db.errors import describe, mapped_errors
from civicsync.db.origin import origin_for, setup_origin
from civicsync.deadletters.batch import canonical, merge_source_keys
from civicsync.deadletters.cdc import apply_events, current_events
from civicsync.extract.source import stream_query
from civicsync.reconcile.derive import values_of
from civicsync.reconcile.plan import Key, Plan
from civicsync.reconcile.verify import Difference
from civicsync.sqlnames import idents, table_ident
from civicsync.transform.aggregate import aggregate_query, output_columns
from civicsync.transform.chain import build_transform

Conn = psycopg.Connection[tuple[Any, ...]]
KEYS_PER_STATEMENT = 500


@dataclass
class RepairOutcome:
    """Which keys a repair applied, and which it could not."""

    applied: set[Key] = field(default_factory=set)
    refused: dict[Key, str] = field(default_factory=dict)


def repairable(plan: Plan, diff: Difference) -> bool:
    """Can the flow's own path fix this difference?"""
    if diff.kind == "rejected":
        return False  # the rules refuse the source row: fix the cause, then `dlq replay`
    return not (diff.kind == "missing" and plan.missing == "unrepairable")


def repair(config: LoadedConfig, plan: Plan, differences: Sequence[Difference], target_types: Mapping[str, str],
           upper_day: str | None) -> RepairOutcome:
    """Repair ``differences`` (the repairable ones) in one target transaction."""
    todo = [d for d in differences if repairable(plan, d)]
    outcome = RepairOutcome()
    if not todo:
        return outcome
    flow = plan.flow
    with connect(config.dsn(flow.source.connection, "reconcile"), purpose=f"reconcile-repair:{plan.name}",
                 autocommit=True, label=flow.source.connection) as src, \
            connect(config.dsn(flow.target.connection, "reconcile"), purpose=f"reconcile-repair:{plan.name}",
                    label=flow.target.connection) as tgt, mapped_errors(f"repairing flow {plan.name}"):
        setup_origin(tgt, origin_for(config, f"reconcile_{plan.name}"))
        work = _Repair(config, plan, src, tgt, target_types, outcome)
        if plan.unit == "day":
            work.aggregates(todo, upper_day)
        else:
            work.lock(todo)
            if flow.streams:
                work.events(todo)
            else:
                work.batch(todo)
        tgt.commit()
    return outcome


class _Repair:
    def __init__(self, config: LoadedConfig, plan: Plan, src: Conn, tgt: Conn, target_types: Mapping[str, str],
                 outcome: RepairOutcome) -> None:
        self.config, self.plan, self.src, self.tgt = config, plan, src, tgt
        self.types = target_types
        self.outcome = outcome
        self.table = table_ident(plan.flow.target.table)

    def _units(self, todo: Sequence[Difference]) -> list[Key]:
        return sorted({self.plan.unit_of(d.key) for d in todo}, key=str)

    def _in(self, alias: str, columns: Sequence[str], rows: Sequence[Key]) -> sql.Composable:
        return sql.SQL("({}) IN ({})").format(idents(columns, prefix=alias),
                                              values_of(rows, [self.types[c] for c in columns]))

    def lock(self, todo: Sequence[Difference]) -> None:
        """Lock the target rows of the units before reading the source (see the module doc)."""
        units = self._units(todo)
        for i in range(0, len(units), KEYS_PER_STATEMENT):
            self.tgt.execute(sql.SQL("SELECT 1 FROM {} t WHERE {} FOR UPDATE").format(
                self.table, self._in("t", self.plan.lookup, units[i:i + KEYS_PER_STATEMENT]))).fetchall()

    def _lookup(self, key: Key) -> dict[str, str | None]:
        """The source columns (and values) a target key is copied from."""
        return {self.plan.source_of[c]: v for c, v in zip(self.plan.key, key, strict=True)}

    # ------------------------------------------------------------------ batch flows

    def batch(self, todo: Sequence[Difference]) -> None:
        plan = self.plan
        apply = [d.key for d in todo if d.kind != "extra"]
        extra = [d.key for d in todo if d.kind == "extra"]
        if apply:
            transform = build_transform(plan.flow, plan.source, self.config.secrets, datetime.now(UTC).isoformat(),
                                        dsn=self.config.dsn)
            merged = merge_source_keys(self.src, self.tgt, plan.name, plan.flow, plan.target, transform,
                                       [self._lookup(k) for k in apply])
            for key in apply:
                error = merged.failed.get(canonical(self._lookup(key)))
                if error is None:
                    self.outcome.applied.add(key)
                else:
                    self.outcome.refused[key] = error
        if extra:
            self._extras(extra)

    def _extras(self, keys: list[Key]) -> None:
        """Rows the source no longer derives get the flow's on_missing rule."""
        on_missing = self.plan.flow.on_missing
        if isinstance(on_missing, SetValues):
            values = sql.SQL(", ").join(sql.Literal(v) for v in on_missing.set.values())
            for i in range(0, len(keys), KEYS_PER_STATEMENT):
                self.tgt.execute(sql.SQL(
                    "UPDATE {table} t SET ({cols}) = ROW({vals}) WHERE {keys} AND ({tcols}) IS DISTINCT FROM ({vals})"
                ).format(table=self.table, cols=idents(on_missing.set), vals=values,
                         tcols=idents(on_missing.set, prefix="t"),
                         keys=self._in("t", self.plan.key, keys[i:i + KEYS_PER_STATEMENT])))
        else:
            writer = MergeWriter(self.tgt, self.plan.name, self.plan.flow, self.plan.target, self.plan.key)
            writer.delete_keys(keys)
        self.outcome.applied.update(keys)

    # ------------------------------------------------------------------ event-path flows

    def events(self, todo: Sequence[Difference]) -> None:
        applier = CdcFlowApplier(self.config, self.plan.name)
        keys = [d.key for d in todo]
        # One batch, as the event path would see it; if something fails, key by key so the rest go in.
        if not self._applies(applier, keys) and len(keys) > 1:
            for key in keys:
                self._applies(applier, [key])

    def _applies(self, applier: CdcFlowApplier, keys: list[Key]) -> bool:
        flow_outcome = FlowOutcome()
        try:
            with self.tgt.transaction():  # a savepoint: a failure leaves the other keys' work alone
                if applier.cdc.top_n is not None:
                    partitions = {self.plan.unit_of(k) for k in keys}
                    applier.recompute(self.tgt, self.src, partitions, flow_outcome)
                else:
                    events, _gone = current_events(self.src, applier, [self._lookup(k) for k in keys])
                    flow_outcome = apply_events(self.tgt, applier, events)
        except psycopg.Error as exc:
            # Only the primary message: details can quote row values.
            self.outcome.refused.update({k: describe(exc) for k in keys})
            return False
        if flow_outcome.dead_letters:
            error = "; ".join(d.error for d in flow_outcome.dead_letters)[:500]
            self.outcome.refused.update({k: error for k in keys})
            return False
        self.outcome.applied.update(keys)
        for k in keys:
            self.outcome.refused.pop(k, None)
        return True

    # ------------------------------------------------------------------ aggregates

    def aggregates(self, todo: Sequence[Difference], upper_day: str | None) -> None:
        """Recompute from the earliest affected day up to the flow's watermark, as a batch run with that
        window would."""
        agg = self.plan.flow.aggregate
        assert agg is not None and upper_day is not None
        lower = min(str(self.plan.unit_of(d.key)[0]) for d in todo)
        writer = MergeWriter(self.tgt, self.plan.name, self.plan.flow, self.plan.target, output_columns(agg))
        writer.create_stage()
        writer.stage_rows(stream_query(self.src, aggregate_query(self.plan.flow, lower, upper_day)))
        writer.merge(None, scope=Scope(agg.time.target, lower))
        self.outcome.applied.update(d.key for d in todo)
