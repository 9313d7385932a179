"""What reconciling one flow compares, read from the flow's config (no per-flow code).

A :class:`Plan` says, for one flow:

- the **key**: the target table's key, which the flow derives;
- the **compared columns** and the *role* each plays, taken from the flow's rules:

  ``exact``        the target must hold exactly the derived value;
  ``base``         a ``newest_wins`` field: decided three-way against the hash of the source value
                   civicsync last synced (``civicsync.field_base``), exactly as the merge decides it,
                   so a portal edit made since the last sync is not a difference;
  ``version``      the conflict version column: the merge keeps the greater of the two, so only a
                   target *older* than the source differs;
  ``target_wins``  the source only fills an empty field: only a NULL target with a non-NULL source
                   value differs;

- what a target row the source does not derive means (**extras**): a real difference (CDC deletes
  applied, ``on_missing: delete``), expected unless it lacks the soft-delete values
  (``on_missing: {set: …}``), or nothing (``keep``, ``update_only``, ``deletes: ignore``);
- what a derived row the target lacks means (**missing**): a difference, one that no repair can fix
  (``update_only`` with ``on_missing_target: dead_letter``: the flow never creates rows), or nothing
  (``update_only`` with ``skip``);
- the **unit** by which source rows are re-read: a key, a top-N partition, or an aggregated day;
- whether range checksums can serve (``full_reason`` says why not) and human notes of what is not
  compared, which every result carries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from civicsync.config import LoadedConfig
from civicsync.config.models import Flow, SetValues, TableDecl
from civicsync.errors import UnknownFlowError as UnknownFlowError  # re-exported: it lives in the one tree
from civicsync.transform.aggregate import output_columns

Role = Literal["exact", "base", "version", "target_wins"]
Unit = Literal["key", "partition", "day"]
ExtraPolicy = Literal["difference", "ignored", "unless_set"]
MissingPolicy = Literal["difference", "unrepairable", "ignored"]
Key = tuple[str | None, ...]


@dataclass(frozen=True)
class Compared:
    """A compared non-key target column and how the flow's rules decide it."""

    column: str
    role: Role


@dataclass(frozen=True)
class Plan:
    """Everything about one flow that reconciliation needs, derived from its config."""

    name: str
    flow: Flow
    source: TableDecl
    target: TableDecl
    key: tuple[str, ...]
    compared: tuple[Compared, ...]
    unit: Unit
    extras: ExtraPolicy
    missing: MissingPolicy
    multi_row: bool
    source_of: dict[str, str]
    full_reason: str | None
    notes: tuple[str, ...]

    @property
    def version(self) -> str | None:
        """The target's conflict version column, if the flow has conflict rules."""
        return self.flow.conflicts.version.target if self.flow.conflicts else None

    @property
    def staged(self) -> tuple[str, ...]:
        """The columns a derived row carries: the key, then the compared columns."""
        return (*self.key, *(c.column for c in self.compared))

    @property
    def lookup(self) -> tuple[str, ...]:
        """The target columns naming one unit (a key, a partition, a day)."""
        if self.unit == "partition":
            assert self.flow.cdc is not None and self.flow.cdc.top_n is not None
            return tuple(self.flow.cdc.top_n.partition_by)
        if self.unit == "day":
            return self.key[:1]
        return self.key

    def unit_of(self, key: Key) -> Key:
        """The unit a target key belongs to."""
        return tuple(key[self.key.index(c)] for c in self.lookup)

    @property
    def invertible(self) -> bool:
        """Can the source rows of a unit be read by plain source columns (or, for a day, its window)?"""
        return self.unit == "day" or all(c in self.source_of for c in self.lookup)



def build_plan(config: LoadedConfig, flow_name: str) -> Plan:
    """The plan of flow ``flow_name`` (config name or id such as 'F2')."""
    try:
        name = config.model.flow_name(flow_name)
    except KeyError:
        raise UnknownFlowError(
            f"no flow called {flow_name!r}; known: {', '.join(config.model.flows)}") from None
    flow = config.model.flows[name]
    conns = config.model.connections
    source = conns[flow.source.connection].tables[flow.source.table]
    target = conns[flow.target.connection].tables[flow.target.table]
    key = tuple(target.key)
    notes: list[str] = []
    compared = _compared(flow, key, notes)
    unit: Unit = "day" if flow.aggregate else (
        "partition" if flow.cdc is not None and flow.cdc.top_n is not None else "key")
    source_of = {c: s.from_ for c, s in flow.columns.items() if s.from_ and s.map is None and s.mask is None}
    if unit == "partition":
        assert flow.cdc is not None and flow.cdc.top_n is not None
        source_of.update({p: p for p in flow.cdc.top_n.partition_by})
    mapped_key = {source_of[k] for k in key if k in source_of}
    multi_row = unit == "key" and not set(source.key) <= mapped_key
    extras, missing = _policies(flow, notes)
    notes += _side_tables(flow)
    plan = Plan(name, flow, source, target, key, compared, unit, extras, missing, multi_row, source_of,
                None, tuple(notes))
    return replace(plan, full_reason=_full_reason(plan))


def _compared(flow: Flow, key: tuple[str, ...], notes: list[str]) -> tuple[Compared, ...]:
    """The compared non-key columns with their roles; notes say what is left out and why."""
    if flow.aggregate is not None:
        columns = [c for c in output_columns(flow.aggregate) if c not in key]
    else:
        columns = [c for c in flow.columns if c not in key]
        if flow.cdc is not None and flow.cdc.top_n is not None:
            columns.append(flow.cdc.top_n.rank_column)
    routed = set(flow.cdc.route_changes.fields) if flow.cdc and flow.cdc.route_changes else set()
    ignored = set(flow.reconcile.ignore_columns)
    out: list[Compared] = []
    for column in columns:
        spec = flow.columns.get(column)
        if spec is not None and spec.run_time:
            notes.append(f"{column}: stamped by the sync itself (run_time), not compared")
        elif column in ignored:
            notes.append(f"{column}: listed in reconcile.ignore_columns, not compared")
        elif column in routed:
            notes.append(f"{column}: routed to change requests (the target keeps the verified value), not compared")
        else:
            out.append(Compared(column, _role(flow, column)))
    _role_notes(flow, out, notes)
    return tuple(out)


def _role(flow: Flow, column: str) -> Role:
    conflicts = flow.conflicts
    if conflicts is None:
        return "exact"
    if column == conflicts.version.target:
        return "version"
    spec = flow.columns.get(column)
    # The merge governs only fields carrying source data (as MergeWriter does); constants are bookkeeping.
    if spec is None or not (spec.from_ or spec.template):
        return "exact"
    policy = conflicts.fields.get(column, conflicts.default)
    return {"newest_wins": "base", "target_wins": "target_wins"}.get(policy, "exact")  # type: ignore[return-value]


def _role_notes(flow: Flow, compared: list[Compared], notes: list[str]) -> None:
    by_role: dict[str, list[str]] = {}
    for c in compared:
        by_role.setdefault(c.role, []).append(c.column)
    if "base" in by_role:
        notes.append(f"{', '.join(by_role['base'])}: newest_wins, decided three-way as the merge does (an edit "
                     "the target made since the last sync is not a difference)")
    if "version" in by_role:
        notes.append(f"{by_role['version'][0]}: the merge keeps the greater version; only an older target differs")
    if "target_wins" in by_role:
        notes.append(f"{', '.join(by_role['target_wins'])}: target_wins; only an empty target field differs")
    lifecycle = flow.cdc.lifecycle if flow.cdc else None
    if lifecycle is not None:
        notes.append(f"{lifecycle.column}: forward-only; a key's source rows are folded in source-key order by the "
                     "lifecycle rule, and a row differs only when the event path would write the result (the "
                     "target's status is not final and not at a later stage)")
    if flow.cdc is not None and flow.cdc.top_n is not None:
        notes.append(f"top {flow.cdc.top_n.n} per {', '.join(flow.cdc.top_n.partition_by)}: membership and "
                     f"{flow.cdc.top_n.rank_column} are compared")


def _policies(flow: Flow, notes: list[str]) -> tuple[ExtraPolicy, MissingPolicy]:
    if flow.cdc is not None:
        if flow.cdc.write == "update_only":
            if flow.cdc.on_missing_target == "skip":
                notes.append("target rows the source does not derive belong to the target (update_only), and "
                             "derived rows the target lacks are skipped by rule (on_missing_target: skip)")
                return "ignored", "ignored"
            notes.append("target rows the source does not derive belong to the target (update_only); a derived row "
                         "the target lacks is reported missing but cannot be repaired (the flow never inserts)")
            return "ignored", "unrepairable"
        if flow.cdc.deletes == "ignore":
            notes.append("target rows the source no longer derives are kept (deletes: ignore)")
            return "ignored", "difference"
        return "difference", "difference"
    if flow.on_missing == "keep":
        notes.append("target rows the source does not derive are kept by rule (on_missing: keep), not compared")
        return "ignored", "difference"
    if isinstance(flow.on_missing, SetValues):
        values = ", ".join(f"{k}={v}" for k, v in flow.on_missing.set.items())
        notes.append(f"target rows the source does not derive are expected when they carry {values} "
                     "(on_missing: set); repair sets them")
        return "unless_set", "difference"
    return "difference", "difference"


def _full_reason(plan: Plan) -> str | None:
    """Why range checksums cannot decide this flow (None: they can, if its rules compile to SQL)."""
    flow = plan.flow
    cdc = flow.cdc
    if cdc is not None and cdc.write == "update_only":
        return "the target owns rows the source does not derive (update_only); checksums cannot tell them apart"
    if cdc is not None and cdc.lifecycle is not None:
        return "a forward-only lifecycle lets the target be legitimately ahead of the source"
    if plan.multi_row:
        return "several source rows derive one target key"
    if not plan.invertible:
        return "the target key is not a plain copy of source columns"
    if plan.unit == "partition" and not set(plan.lookup) <= set(plan.key):
        return "the top-N partition columns are not part of the target key"
    if plan.unit == "day" and flow.aggregate is not None and plan.key[0] != flow.aggregate.time.target:
        return "the aggregate's day is not the leading target key column"
    return None


def _side_tables(flow: Flow) -> list[str]:
    if flow.cdc is None:
        return []
    tables = [(flow.cdc.route_changes, "change requests"), (flow.cdc.event_log, "event log")]
    return [f"{t.table} ({what}) is written by the flow but not compared" for t, what in tables if t is not None]
