"""Older forms of the config file, translated at load time (each with a deprecation warning that
names the form to write instead), or refused when they are ambiguous or contradict themselves.

The forms, and what replaced them:

- ``mode: full|incremental`` on a flow: the flow's ``kind`` decides, and an ``incremental`` section
  makes a batch flow incremental (``Flow.mode`` remains, read-only, derived from it);
- an empty ``cdc: {}`` on a cdc or hybrid flow: the defaults apply without it;
- ``column: $lsn`` in ``cdc.event_log.columns``: ``cdc.event_log.position_column: column``;
- ``columns`` of a table civicsync only writes that repeat exactly what the config writes there:
  they are derived (:mod:`civicsync.config.tables`).

:func:`translate` works on the parsed YAML before the models see it; :func:`duplicated_columns`
needs the models (it compares with the derived columns). ``civicsync config migrate`` writes a
file in the new form with both (:mod:`civicsync.config.migrate`).
"""

from __future__ import annotations

import copy
from typing import Any

from civicsync.config.models import Config, Connection
from civicsync.config.tables import TableRef, derivable_columns

Problem = tuple[str, str]

MIGRATE_HINT = "`civicsync config migrate FILE` rewrites the file"
LSN = "$lsn"




def translate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Problem], list[Problem]]:
    """``(raw in the new form, deprecations, problems)``: every old form replaced by its new one; an
    ambiguous or contradictory old form is removed and reported as a problem saying what to write."""
    raw = copy.deepcopy(raw)
    deprecations: list[Problem] = []
    problems: list[Problem] = []
    flows = raw.get("flows")
    if isinstance(flows, dict):
        for name, flow in flows.items():
            if isinstance(flow, dict):
                where = f"flows.{name}"
                _mode(where, flow, deprecations, problems)
                _empty_cdc(where, flow, deprecations)
                _lsn(where, flow, deprecations, problems)
    return raw, deprecations, problems


def _mode(where: str, flow: dict[str, Any], deprecations: list[Problem], problems: list[Problem]) -> None:
    if "mode" not in flow:
        return
    mode, kind, has_incremental = flow.pop("mode"), flow.get("kind"), flow.get("incremental") is not None
    path = f"{where}.mode"
    if kind not in ("batch", "hybrid", "cdc", "aggregate"):
        return  # the model reports the kind; nothing sensible to say about the mode
    if mode not in ("full", "incremental"):
        problems.append((path, f"'mode' is no longer part of the config and {mode!r} was never a mode: remove it "
                               "(the flow's kind decides; an 'incremental' section makes a batch flow incremental)"))
    elif kind in ("cdc", "aggregate") and mode == "incremental":
        problems.append((path, f"'mode: incremental' contradicts kind {kind} (it has no incremental batch): remove "
                               "'mode', or make the flow kind hybrid with an 'incremental' section"))
    elif kind == "hybrid" and mode == "full":
        problems.append((path, "'mode: full' contradicts kind hybrid (its batch is incremental): remove 'mode' and "
                               "keep the 'incremental' section"))
    elif mode == "incremental" and not has_incremental:
        problems.append((path, "'mode: incremental' without an 'incremental' section: remove 'mode' and write "
                               "'incremental: {column: <source column>}' (or remove 'mode' for a full sync)"))
    elif mode == "full" and has_incremental:
        problems.append((path, "'mode: full' contradicts the 'incremental' section: remove 'mode' (the section "
                               "makes the flow incremental), or remove 'incremental' too for a full sync"))
    elif mode == "incremental":
        deprecations.append((path, f"'mode: incremental' is no longer written: the 'incremental' section says it; "
                                   f"remove 'mode' ({MIGRATE_HINT})"))
    else:
        deprecations.append((path, f"'mode: full' is no longer written: a {kind} flow without an 'incremental' "
                                   f"section {'is a full sync' if kind == 'batch' else 'has no mode'}; remove "
                                   f"'mode' ({MIGRATE_HINT})"))


def _empty_cdc(where: str, flow: dict[str, Any], deprecations: list[Problem]) -> None:
    if flow.get("kind") in ("cdc", "hybrid") and "cdc" in flow and flow["cdc"] in ({}, None):
        del flow["cdc"]
        deprecations.append((f"{where}.cdc", f"an empty 'cdc: {{}}' is no longer needed: a {flow['kind']} flow "
                                             f"applies the default cdc settings without it; remove it "
                                             f"({MIGRATE_HINT})"))


def _lsn(where: str, flow: dict[str, Any], deprecations: list[Problem], problems: list[Problem]) -> None:
    cdc = flow.get("cdc")
    log = cdc.get("event_log") if isinstance(cdc, dict) else None
    columns = log.get("columns") if isinstance(log, dict) else None
    if not isinstance(log, dict) or not isinstance(columns, dict):
        return
    marked = [col for col, src in columns.items() if src == LSN]
    if not marked:
        return
    path = f"{where}.cdc.event_log"
    for col in marked:
        del columns[col]
    given = log.get("position_column")
    if len(marked) > 1:
        problems.append((f"{path}.columns", f"{', '.join(marked)} all map to {LSN}: keep one, as "
                                            f"'position_column: {marked[0]}', and remove the {LSN} entries"))
    elif given is not None and given != marked[0]:
        problems.append((f"{path}.columns.{marked[0]}", f"{LSN} contradicts 'position_column: {given}': remove "
                                                        f"the '{marked[0]}: {LSN}' entry (position_column says "
                                                        "where the source position goes)"))
    else:
        log["position_column"] = marked[0]
        deprecations.append((f"{path}.columns.{marked[0]}", f"'{marked[0]}: {LSN}' is no longer written: use "
                                                            f"'position_column: {marked[0]}' in event_log and "
                                                            f"remove the entry ({MIGRATE_HINT})"))


def duplicated_columns(config: Config) -> list[TableRef]:
    """Write-only tables whose declared ``columns`` are exactly the ones the config writes there (the
    form that declared every column twice)."""
    out: list[TableRef] = []
    for ref, derived in derivable_columns(config).items():
        declared = config.connections[ref[0]].tables[ref[1]].columns
        if declared and sorted(declared) == sorted(derived):
            out.append(ref)
    return out


def drop_duplicated_columns(config: Config) -> tuple[Config, list[Problem]]:
    """``config`` with the duplicated column lists cleared (they are then derived), and a deprecation each."""
    dropped = duplicated_columns(config)
    if not dropped:
        return config, []
    connections: dict[str, Connection] = dict(config.connections)
    deprecations: list[Problem] = []
    for cname, tname in dropped:
        conn = connections[cname]
        decl = conn.tables[tname].model_copy(update={"columns": []})
        connections[cname] = conn.model_copy(update={"tables": {**conn.tables, tname: decl}})
        deprecations.append((f"connections.{cname}.tables.{tname}.columns",
                             "lists exactly the columns the config writes to this table (a table civicsync only "
                             f"writes): leave 'columns' out, they are derived ({MIGRATE_HINT})"))
    return config.model_copy(update={"connections": connections}), deprecations
