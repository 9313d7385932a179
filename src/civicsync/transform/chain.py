"""The transform chain of a flow: filters, then column mappings (with masking), then row rules.

Every path that writes a flow's target (batch, CDC, reconciliation repair) goes through the
:class:`RowTransform` built here, so a masking or mapping rule is written once and holds everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from civicsync.config.masking import known_values_of
from civicsync.config.models import Flow, TableDecl
from civicsync.errors import RowRejectedError
from civicsync.transform.columns import compile_column
from civicsync.transform.filters import Predicate, compile_filter
from civicsync.transform.redact.known import Connect

Row = Sequence[str | None]
OutRow = tuple[str | None, ...]


def source_columns_of(flow: Flow, source: TableDecl) -> tuple[str, ...]:
    """The source columns a flow reads: its key, and everything its rules mention, in table order."""
    from civicsync.config.references import template_fields

    wanted = set(source.key)
    wanted.update(f.column for f in flow.filters)
    for spec in flow.columns.values():
        if (known := known_values_of(spec.mask)) is not None:
            wanted.update(known.match)  # whose text it is: the key of the known-value lookup
        if spec.from_ is not None:
            wanted.add(spec.from_)
        if spec.template is not None:
            wanted.update(template_fields(spec.template))
    if flow.incremental is not None:
        wanted.add(flow.incremental.column)
    return tuple(c for c in source.columns if c in wanted)


@dataclass(frozen=True)
class RowTransform:
    """Source row (text values in ``source_columns`` order) → target row, None, or rejection."""

    source_columns: tuple[str, ...]
    target_columns: tuple[str, ...]
    source_key: tuple[str, ...]
    _filters: tuple[Predicate, ...]
    _row: Callable[[Row], OutRow]
    _required: tuple[tuple[int, str], ...]

    def __call__(self, row: Row) -> OutRow | None:
        """The target row, or None if a filter drops the row. Raises RowRejectedError."""
        for keep in self._filters:
            if not keep(row):
                return None
        out = self._row(row)
        for i, name in self._required:
            if out[i] is None:
                raise RowRejectedError("required", f"column {name} is required but would be NULL")
        return out

    def key_of(self, row: Row) -> dict[str, str | None]:
        """The source key of a source row (for dead letters: the key, never the row)."""
        return {col: row[self.source_columns.index(col)] for col in self.source_key}


def build_transform(
    flow: Flow, source: TableDecl, secrets: Mapping[str, bytes], run_time: str,
    dsn: Callable[[str], str] | None = None,
) -> RowTransform:
    """Compile a flow's rules into a RowTransform. ``run_time`` fills run_time columns; ``dsn``
    (connection name → DSN, e.g. ``LoadedConfig.dsn``) lets known-value redaction read the source."""
    source_columns = source_columns_of(flow, source)
    index = {name: i for i, name in enumerate(source_columns)}
    target_columns = tuple(flow.columns)
    required = tuple((target_columns.index(c), c) for c in flow.validate_.required)
    return RowTransform(
        source_columns=source_columns,
        target_columns=target_columns,
        source_key=tuple(source.key),
        _filters=tuple(compile_filter(f, index[f.column]) for f in flow.filters),
        _row=_row_function(flow, index, secrets, run_time, _source_connector(flow, dsn)),
        _required=required,
    )


def _source_connector(flow: Flow, dsn: Callable[[str], str] | None) -> Connect | None:
    if dsn is None:
        return None
    from civicsync.db.connect import connect

    def open_source() -> psycopg.Connection[tuple[object, ...]]:
        return connect(dsn(flow.source.connection), purpose="known-values", autocommit=True,
                       label=flow.source.connection)

    return open_source


def _row_function(flow: Flow, index: Mapping[str, int], secrets: Mapping[str, bytes],
                  run_time: str, connect_source: Connect | None = None) -> Callable[[Row], OutRow]:
    """One function building the whole target row: plain copies become ``row[i]``, everything else
    calls its compiled column function. Runs once per source row, so it is generated as a single
    expression (about 2.5x faster than looping over per-column callables on a million rows). The
    generated text holds only integers and generated names, never config strings."""
    namespace: dict[str, Any] = {}
    parts = []
    for j, (name, spec) in enumerate(flow.columns.items()):
        if spec.from_ is not None and spec.map is None and spec.mask is None:
            parts.append(f"row[{index[spec.from_]}]")
        else:
            namespace[f"c{j}"] = compile_column(name, spec, index, secrets, run_time, connect_source)
            parts.append(f"c{j}(row)")
    exec(f"def build(row):\n    return ({', '.join(parts)},)\n", namespace)
    build: Callable[[Row], OutRow] = namespace["build"]
    return build
