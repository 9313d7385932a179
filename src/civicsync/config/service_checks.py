"""Cross-checks of the ``service`` section against the rest of the config (run by the loader).

The API writes F9/F10 callbacks and keeps its keys in ``service.api.connection``: that connection
must be declared, or ``apikey create`` and every authenticated call would fail only at run time.
Its callback targets are declared like any flow's: each table under that connection's ``tables``,
each mapped column among the table's columns, the forecast table keyed by the forecast's identity
and the alert table by its generated id.
"""

from __future__ import annotations

from collections.abc import Mapping

from civicsync.config.models import Config, TableDecl

Problem = tuple[str, str]


def check_service(config: Config) -> list[Problem]:
    """Every problem of ``config.service`` that needs the rest of the config to see."""
    api = config.service.api
    where = "service.api"
    if not api.enabled:
        return []
    connection = config.connections.get(api.connection)
    if connection is None:
        return [(f"{where}.connection", f"connection {api.connection!r} is not declared "
                                        f"(declared: {', '.join(config.connections)})")]
    tables = connection.tables
    forecast_columns = api.forecasts.columns.model_dump()
    alert_columns = api.alerts.columns.model_dump()
    problems = _target(tables, f"{where}.forecasts", api.connection, api.forecasts.table, forecast_columns,
                       list(api.forecasts.key()), "(scheme_id, district, horizon_date)")
    problems += _target(tables, f"{where}.alerts", api.connection, api.alerts.table, alert_columns,
                        [api.alerts.columns.portal_id], "portal_id")
    for name, ref in (("citizen", api.citizen), ("scheme", api.scheme)):
        problems += _target(tables, f"{where}.{name}", api.connection, ref.table, {"column": ref.column})
    return problems


def _target(tables: Mapping[str, TableDecl], where: str, connection: str, table: str, columns: dict[str, str],
            key: list[str] | None = None, key_means: str = "") -> list[Problem]:
    decl = tables.get(table)
    if decl is None:
        return [(f"{where}.table", f"table {table!r} is not declared under connections.{connection}.tables")]
    problems: list[Problem] = []
    prefix = f"{where}.columns" if key is not None else where
    seen: dict[str, str] = {}
    for field, column in columns.items():
        if column not in decl.columns:
            problems.append((f"{prefix}.{field}", f"column {column!r} is not declared for table {table}"))
        elif column in seen:
            problems.append((f"{prefix}.{field}", f"column {column!r} is already mapped from {seen[column]}"))
        seen.setdefault(column, field)
    if key is not None and not problems and sorted(decl.key) != sorted(key):
        problems.append((f"{where}.table", f"the key of {table} is {decl.key}; it must be the columns of "
                                           f"{key_means}: {key}"))
    return problems
