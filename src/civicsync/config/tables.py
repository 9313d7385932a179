"""Which declared tables civicsync reads, and the columns of the ones it only writes.

A table that civicsync only writes (a flow's target, an event log, a change-request table) needs no
``columns`` list of its own: everything the engine writes there is named by the config already, so
:func:`fill_columns` derives the list (the key first, then each written column once, in the order
the config names them). A table something reads (a flow's source, a known-value lookup, an
aggregate's join, a validation reference, the HTTP API's tables) must list its columns: the engine
reads them from it, and nothing else in the config says what they are. A declared table nothing
uses may leave them out too (it keeps an empty list).
"""

from __future__ import annotations

from collections.abc import Iterator

from civicsync.config.masking import known_values_of
from civicsync.config.models import Config, Connection, Flow, SetValues, TableDecl

Problem = tuple[str, str]
TableRef = tuple[str, str]  # (connection, schema.table)


def read_tables(config: Config) -> dict[TableRef, str]:
    """Every table something reads → the first config path that reads it."""
    reads: dict[TableRef, str] = {}
    for name, flow in config.flows.items():
        for ref, path in _reads_of(f"flows.{name}", flow):
            reads.setdefault(ref, path)
    api = config.service.api
    if api.enabled:
        for what, table in (("forecasts", api.forecasts.table), ("alerts", api.alerts.table),
                            ("citizen", api.citizen.table), ("scheme", api.scheme.table)):
            reads.setdefault((api.connection, table), f"service.api.{what}")
    return reads


def _reads_of(where: str, flow: Flow) -> Iterator[tuple[TableRef, str]]:
    src, tgt = flow.source.connection, flow.target.connection
    yield (src, flow.source.table), f"{where}.source"
    for col, spec in flow.columns.items():
        known = known_values_of(spec.mask)
        if known is not None:
            yield (src, known.table), f"{where}.columns.{col}.mask"
    if flow.aggregate is not None and flow.aggregate.join is not None:
        yield (src, flow.aggregate.join.table), f"{where}.aggregate.join"
    for i, ref in enumerate(flow.validate_.references):
        yield (tgt, ref.table), f"{where}.validate.references.{i}"


def written_columns(config: Config) -> dict[TableRef, list[str]]:
    """Every table the flows write → the columns they write there, each once, in config order."""
    written: dict[TableRef, dict[str, None]] = {}

    def add(connection: str, table: str, columns: Iterator[str] | list[str]) -> None:
        written.setdefault((connection, table), {}).update(dict.fromkeys(columns))

    for flow in config.flows.values():
        conn = flow.target.connection
        if flow.aggregate is not None:
            agg = flow.aggregate
            add(conn, flow.target.table, [agg.time.target, *agg.dimensions, *agg.measures])
        add(conn, flow.target.table, list(flow.columns))
        if isinstance(flow.on_missing, SetValues):
            add(conn, flow.target.table, list(flow.on_missing.set))
        if flow.cdc is None:
            continue
        if flow.cdc.top_n is not None:
            add(conn, flow.target.table, [flow.cdc.top_n.rank_column])
        if flow.cdc.event_log is not None:
            add(conn, flow.cdc.event_log.table, list(flow.cdc.event_log.recorded))
        rc = flow.cdc.route_changes
        if rc is not None:
            target = config.connections[conn].tables.get(flow.target.table) if conn in config.connections else None
            key = rc.key_mapping(target.key) if target is not None else dict(rc.key or {})
            add(conn, rc.table, [*key, rc.field_column, rc.old_column, rc.new_column, rc.time_column,
                                 *([rc.status_column] if rc.status_column else [])])
    return {ref: list(cols) for ref, cols in written.items()}


def derivable_columns(config: Config) -> dict[TableRef, list[str]]:
    """The declared tables whose columns can be derived (written, never read) → key + written columns."""
    reads = read_tables(config)
    out: dict[TableRef, list[str]] = {}
    for ref, columns in written_columns(config).items():
        conn = config.connections.get(ref[0])
        decl = conn.tables.get(ref[1]) if conn is not None else None
        if decl is not None and ref not in reads:
            out[ref] = list(dict.fromkeys([*decl.key, *columns]))
    return out


def fill_columns(config: Config) -> tuple[Config, list[Problem]]:
    """``config`` with the columns of every write-only table that lists none derived; and a problem
    for each table that lists none although it is read. (A table nothing uses may list none.)"""
    derivable = derivable_columns(config)
    reads = read_tables(config)
    problems: list[Problem] = []
    connections: dict[str, Connection] = {}
    for cname, conn in config.connections.items():
        tables: dict[str, TableDecl] = {}
        for tname, decl in conn.tables.items():
            if not decl.columns and (cname, tname) in derivable:
                decl = decl.model_copy(update={"columns": derivable[(cname, tname)]})
            elif not decl.columns and (cname, tname) in reads:
                problems.append((f"connections.{cname}.tables.{tname}.columns",
                                 f"required: {reads[(cname, tname)]} reads this table, so its columns cannot be "
                                 "derived; list them"))
            tables[tname] = decl
        connections[cname] = conn.model_copy(update={"tables": tables})
    return config.model_copy(update={"connections": connections}), problems
