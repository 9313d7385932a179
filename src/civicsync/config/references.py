"""Cross-reference checks: every table, column and secret a flow names must be declared.

Runs after the models load; returns ``(path, message)`` pairs so the loader can report every
problem in one go.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

from civicsync.config.masking import HmacMask, JsonMask, MaskSpec, known_values_of
from civicsync.config.models import Aggregate, Config, Flow, RouteChanges, SetValues, TableDecl

Problem = tuple[str, str]


def template_fields(template: str) -> list[str]:
    """The placeholder names of a ``str.format`` template ('{a} and {b}' → ['a', 'b'])."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _secrets_used(mask: MaskSpec) -> Iterator[str]:
    if isinstance(mask, HmacMask):
        yield mask.secret
    elif isinstance(mask, JsonMask):
        for inner in mask.paths.values():
            if not isinstance(inner, str):
                yield from _secrets_used(inner)


def _cron_problem(expr: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        return f"not a valid cron expression ({exc})"
    return None


def check_references(config: Config) -> list[Problem]:
    """Every cross-reference problem in ``config``."""
    problems: list[Problem] = []
    if config.audit.pii.schedule is not None and (msg := _cron_problem(config.audit.pii.schedule)):
        problems.append(("audit.pii.schedule", msg))
    seen_ids: dict[str, str] = {}
    for name, flow in config.flows.items():
        where = f"flows.{name}"
        if flow.id in seen_ids:
            problems.append((f"{where}.id", f"id {flow.id} is already used by flow {seen_ids[flow.id]}"))
        seen_ids[flow.id] = name
        problems += _check_flow(config, where, flow)
    return problems


def _table(config: Config, where: str, connection: str, table: str) -> tuple[TableDecl | None, list[Problem]]:
    conn = config.connections.get(connection)
    if conn is None:
        return None, [(f"{where}.connection", f"connection {connection!r} is not declared")]
    decl = conn.tables.get(table)
    if decl is None:
        return None, [(f"{where}.table", f"table {table!r} is not declared under connections.{connection}.tables")]
    return decl, []


def _check_flow(config: Config, where: str, flow: Flow) -> list[Problem]:
    source, problems = _table(config, f"{where}.source", flow.source.connection, flow.source.table)
    target, more = _table(config, f"{where}.target", flow.target.connection, flow.target.table)
    problems += more
    if flow.schedule is not None and (msg := _cron_problem(flow.schedule)):
        problems.append((f"{where}.schedule", msg))
    if source is None or target is None:
        return problems

    def need_source(path: str, column: str) -> None:
        if column not in source.columns:
            problems.append((path, f"column {column!r} is not declared in source table {flow.source.table}"))

    def need_target(path: str, column: str) -> None:
        if column not in target.columns:
            problems.append((path, f"column {column!r} is not declared in target table {flow.target.table}"))

    for i, flt in enumerate(flow.filters):
        need_source(f"{where}.filters.{i}.column", flt.column)

    mapped = set(flow.columns)
    for col, spec in flow.columns.items():
        path = f"{where}.columns.{col}"
        need_target(path, col)
        if spec.from_ is not None:
            need_source(f"{path}.from", spec.from_)
        if spec.template is not None:
            for field in template_fields(spec.template):
                need_source(f"{path}.template", field)
        if spec.mask is not None:
            for secret in _secrets_used(spec.mask):
                if secret not in config.secrets:
                    problems.append((f"{path}.mask", f"secret {secret!r} is not declared under secrets"))
            problems += _check_known_values(config, f"{path}.mask", flow, source, spec.mask)

    if flow.kind in ("batch", "hybrid"):
        for key in target.key:
            if key not in mapped:
                problems.append((f"{where}.columns", f"target key column {key!r} is not mapped"))
    if flow.incremental is not None:
        need_source(f"{where}.incremental.column", flow.incremental.column)
    if flow.conflicts is not None:
        need_source(f"{where}.conflicts.version.source", flow.conflicts.version.source)
        version = flow.conflicts.version
        version_spec = flow.columns.get(version.target)
        if version_spec is None or version_spec.from_ != version.source:
            problems.append((f"{where}.conflicts.version.target",
                             f"column {version.target!r} must be mapped from {version.source!r} "
                             "(the staged row carries the source row's version there)"))
        for col in flow.conflicts.fields:
            if col not in mapped:
                problems.append((f"{where}.conflicts.fields.{col}", f"column {col!r} is not mapped by this flow"))
    if isinstance(flow.on_missing, SetValues):
        for col in flow.on_missing.set:
            need_target(f"{where}.on_missing.set.{col}", col)
    for col in flow.validate_.required:
        if col not in mapped:
            problems.append((f"{where}.validate.required", f"column {col!r} is not mapped by this flow"))
    for i, ref in enumerate(flow.validate_.references):
        path = f"{where}.validate.references.{i}"
        if ref.column not in mapped:
            problems.append((f"{path}.column", f"column {ref.column!r} is not mapped by this flow"))
        ref_table, more = _table(config, path, flow.target.connection, ref.table)
        problems += more
        if ref_table is not None and ref.ref_column not in ref_table.columns:
            problems.append((f"{path}.ref_column", f"column {ref.ref_column!r} is not declared in {ref.table}"))
    if flow.aggregate is not None:
        problems += _check_aggregate(config, f"{where}.aggregate", flow, flow.aggregate, source, target)
    if flow.cdc is not None:
        problems += _check_cdc(config, f"{where}.cdc", flow, source, target)
    return problems


def _check_known_values(config: Config, where: str, flow: Flow, source: TableDecl, mask: MaskSpec) -> list[Problem]:
    """A known-value lookup names a table of the flow's source connection, joined on declared columns."""
    known = known_values_of(mask)
    if known is None:
        return []
    where += ".redact.known_values" if isinstance(mask, JsonMask) else ".known_values"
    table, problems = _table(config, where, flow.source.connection, known.table)
    for src_col, col in known.match.items():
        if src_col not in source.columns:
            problems.append((f"{where}.match", f"column {src_col!r} is not declared in source table "
                                               f"{flow.source.table}"))
        if table is not None and col not in table.columns:
            problems.append((f"{where}.match", f"column {col!r} is not declared in {known.table}"))
    for col in known.columns:
        if table is not None and col not in table.columns:
            problems.append((f"{where}.columns", f"column {col!r} is not declared in {known.table}"))
    return problems


def _check_cdc(config: Config, where: str, flow: Flow, source: TableDecl, target: TableDecl) -> list[Problem]:
    problems: list[Problem] = []
    cdc = flow.cdc
    assert cdc is not None
    mapped = set(flow.columns)
    for col, spec in flow.columns.items():
        if spec.run_time:
            problems.append((f"{where.rsplit('.', 1)[0]}.columns.{col}", "run_time does not apply to cdc flows"))
    if cdc.deletes == "apply" and cdc.top_n is None:
        for key in target.key:
            key_spec = flow.columns.get(key)
            if key_spec is None or key_spec.from_ not in source.key:
                problems.append((f"{where}.deletes", f"deletes: apply needs target key column {key!r} mapped from a "
                                                     "source key column (a delete carries only the source key)"))
    if cdc.lifecycle is not None and cdc.lifecycle.column not in mapped:
        problems.append((f"{where}.lifecycle.column", f"column {cdc.lifecycle.column!r} is not mapped by this flow"))
    if cdc.top_n is not None:
        top = cdc.top_n
        for col, tcol in zip(top.partition_by, top.target_partition, strict=True):
            copied = flow.columns.get(tcol)
            if col not in source.columns or copied is None or copied.from_ != col or copied.map or copied.mask:
                problems.append((f"{where}.top_n.partition_by", f"column {col!r} must be a source column copied "
                                                                f"unchanged to target column {tcol!r}"))
        for i, order in enumerate(top.order_by):
            if order.column not in source.columns:
                problems.append((f"{where}.top_n.order_by.{i}.column", f"column {order.column!r} is not declared in "
                                                                        f"source table {flow.source.table}"))
        if top.rank_column not in target.columns:
            problems.append((f"{where}.top_n.rank_column", f"column {top.rank_column!r} is not declared in target "
                                                           f"table {flow.target.table}"))
        elif top.rank_column in mapped:
            problems.append((f"{where}.top_n.rank_column", f"column {top.rank_column!r} is filled by top_n; remove it "
                                                           "from columns"))
    if cdc.route_changes is not None:
        problems += _check_route_changes(config, f"{where}.route_changes", flow, cdc.route_changes, target)
    if cdc.event_log is not None:
        log = cdc.event_log
        table, more = _table(config, f"{where}.event_log", flow.target.connection, log.table)
        problems += more
        if log.on_change_of not in mapped:
            problems.append((f"{where}.event_log.on_change_of", f"column {log.on_change_of!r} is not mapped"))
        elif log.on_change_of not in log.columns.values():
            problems.append((f"{where}.event_log.columns", f"must record the watched column {log.on_change_of!r}"))
        for col, src in log.columns.items():
            if table is not None and col not in table.columns:
                problems.append((f"{where}.event_log.columns.{col}", f"column {col!r} is not declared in {log.table}"))
            if src not in mapped:
                problems.append((f"{where}.event_log.columns.{col}", f"{src!r} is not a column mapped by this flow "
                                                                     "(the source position goes in position_column)"))
        if log.position_column is not None and table is not None and log.position_column not in table.columns:
            problems.append((f"{where}.event_log.position_column",
                             f"column {log.position_column!r} is not declared in {log.table}"))
    return problems


def _check_route_changes(config: Config, where: str, flow: Flow, rc: RouteChanges, target: TableDecl
                         ) -> list[Problem]:
    problems: list[Problem] = []
    for col in rc.fields:
        if col not in flow.columns:
            problems.append((f"{where}.fields", f"column {col!r} is not mapped by this flow"))
        elif col in target.key:
            problems.append((f"{where}.fields", f"column {col!r} is part of the target's key; a key cannot be "
                                                "routed to a change request"))
    if rc.key_column is not None and len(target.key) > 1:
        problems.append((f"{where}.key_column", f"{flow.target.table} has a composite key ({', '.join(target.key)}): "
                                                "map every key column with key: {request column: key column}"))
    if rc.key is not None and sorted(rc.key.values()) != sorted(target.key):
        problems.append((f"{where}.key", f"must map each key column of {flow.target.table} "
                                         f"({', '.join(target.key)}) exactly once"))
    if rc.status_column is None and rc.pending_value != "PENDING":
        problems.append((f"{where}.pending_value", "needs status_column (the column that holds it)"))
    table, more = _table(config, where, flow.target.connection, rc.table)
    problems += more
    if table is None:
        return problems
    named = {"field_column": rc.field_column, "old_column": rc.old_column, "new_column": rc.new_column,
             "time_column": rc.time_column, **({"key_column": rc.key_column} if rc.key_column else {}),
             **({"status_column": rc.status_column} if rc.status_column else {}),
             **{f"key.{c}": c for c in rc.key or {}}}
    for attr, col in named.items():
        if col not in table.columns:
            problems.append((f"{where}.{attr}", f"column {col!r} is not declared in {rc.table}"))
    return problems


def _check_aggregate(
    config: Config, where: str, flow: Flow, agg: Aggregate, source: TableDecl, target: TableDecl
) -> list[Problem]:
    problems: list[Problem] = []
    joined: TableDecl | None = None
    if agg.join is not None:
        joined, problems = _table(config, f"{where}.join", flow.source.connection, agg.join.table)
        for src_col, join_col in agg.join.match.items():
            if src_col not in source.columns:
                problems.append((f"{where}.join.match", f"column {src_col!r} is not declared in {flow.source.table}"))
            if joined is not None and join_col not in joined.columns:
                problems.append((f"{where}.join.match", f"column {join_col!r} is not declared in {agg.join.table}"))

    def need_column(path: str, ref: str) -> None:
        if "." in ref:
            alias, col = ref.split(".", 1)
            if agg.join is None or alias != agg.join.alias:
                problems.append((path, f"{alias!r} is not the alias of this aggregate's join"))
            elif joined is not None and col not in joined.columns:
                problems.append((path, f"column {col!r} is not declared in {agg.join.table}"))
        elif ref not in source.columns:
            problems.append((path, f"column {ref!r} is not declared in source table {flow.source.table}"))

    need_column(f"{where}.time.column", agg.time.column)
    produced = {agg.time.target, *agg.dimensions, *agg.measures}
    for col in produced:
        if col not in target.columns:
            problems.append((f"{where}", f"column {col!r} is not declared in target table {flow.target.table}"))
    for name, dim in agg.dimensions.items():
        need_column(f"{where}.dimensions.{name}.column", dim.column)
    for name, measure in agg.measures.items():
        for column in measure.columns:
            need_column(f"{where}.measures.{name}.column", column)
    for key in target.key:
        if key not in {agg.time.target, *agg.dimensions}:
            problems.append((f"{where}", f"target key column {key!r} is neither the time bucket nor a dimension"))
    return problems
